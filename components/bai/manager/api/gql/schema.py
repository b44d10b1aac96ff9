"""The executable schema, assembled from the object-type modules.

Names follow the original's (Backend.AI 24.03): snake_case fields, ``*_list(limit, offset,
filter, order, ...)`` -> ``{items, total_count}``; mutations ``verb_object(key, props: XxxInput!)``
-> ``{ok, msg, <object>}``. To add an object type: a module with ``QUERIES`` (its fields of
``Query``), optionally ``MUTATIONS`` (its fields of ``Mutation``), ``SDL`` (its types and inputs)
and ``BINDABLES`` (its ariadne resolvers, e.g. a ``MutationType()``), listed in TYPE_MODULES."""

from __future__ import annotations

from ariadne import make_executable_schema

from . import (
    agent,
    audit_log,
    compute_session,
    container_registry,
    domain,
    group,
    image,
    keypair,
    keypair_resource_policy,
    resource_preset,
    scalars,
    scaling_group,
    storage_volume,
    user,
    user_project_policy,
    vfolder,
)

TYPE_MODULES = (compute_session, keypair, agent, domain, group, user, keypair_resource_policy, scaling_group,
                resource_preset, audit_log, user_project_policy, image, container_registry, vfolder,
                storage_volume)

_MUTATIONS = "".join(getattr(m, "MUTATIONS", "") for m in TYPE_MODULES)

SDL = "\n".join([
    scalars.SDL,
    "type Query {" + "".join(m.QUERIES for m in TYPE_MODULES) + "}",
    "type Mutation {" + _MUTATIONS + "}" if _MUTATIONS.strip() else "",
    *(m.SDL for m in TYPE_MODULES),
])

SCHEMA = make_executable_schema(
    SDL, *scalars.BINDABLES, *(b for m in TYPE_MODULES for b in m.BINDABLES),
)
