"""ContainerRegistry: the original's (24.03) etcd-backed registry settings as GraphQL
(``container_registry``, ``container_registries``; ``create/modify/delete_container_registry``).
Reads are for superadmins (and monitors), writes for superadmins; a password is never returned,
only ``*****`` when one is set."""

from __future__ import annotations

from typing import Any

from ariadne import MutationType, QueryType

from bai.manager.services import images as svc

from .context import context_of

QUERIES = '''
  "A configured container registry by hostname (superadmin)."
  container_registry(hostname: String!): ContainerRegistry

  "Every configured container registry (superadmin)."
  container_registries: [ContainerRegistry]
'''

MUTATIONS = '''
  "Configure a new registry in etcd (superadmin); ok=false when the hostname has one."
  create_container_registry(hostname: String!, props: CreateContainerRegistryInput!): CreateContainerRegistry

  "Change a registry's settings (superadmin); a null field is removed, an absent one kept."
  modify_container_registry(hostname: String!, props: ModifyContainerRegistryInput!): ModifyContainerRegistry

  "Remove a registry's settings (superadmin); its images stay until a rescan or forget."
  delete_container_registry(hostname: String!): DeleteContainerRegistry
'''

SDL = '''
type ContainerRegistryConfig {
  url: String!
  "docker, harbor or harbor2"
  type: String!
  project: [String]
  username: String
  "`*****` when a password is set; the password itself is never returned."
  password: String
  ssl_verify: Boolean
}

type ContainerRegistry {
  id: ID
  hostname: String
  config: ContainerRegistryConfig
}

input CreateContainerRegistryInput {
  url: String!
  type: String!
  project: [String]
  username: String
  password: String
  ssl_verify: Boolean
}

input ModifyContainerRegistryInput {
  url: String
  type: String
  project: [String]
  username: String
  password: String
  ssl_verify: Boolean
}

type CreateContainerRegistry {
  ok: Boolean
  msg: String
  container_registry: ContainerRegistry
}

type ModifyContainerRegistry {
  ok: Boolean
  msg: String
  container_registry: ContainerRegistry
}

type DeleteContainerRegistry {
  ok: Boolean
  msg: String
  container_registry: ContainerRegistry
}
'''

query = QueryType()
mutation = MutationType()
BINDABLES = (query, mutation)


def registry_obj(r: svc.RegistryView | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {"id": r.hostname, "hostname": r.hostname, "config": {
        "url": r.url, "type": r.type, "project": r.project, "username": r.username, "password": r.password,
        "ssl_verify": r.ssl_verify}}


@query.field("container_registry")
async def resolve_container_registry(_: Any, info: Any, hostname: str) -> dict[str, Any] | None:
    ctx = context_of(info)
    return registry_obj(await svc.container_registry(ctx.manager, ctx.requester, hostname))


@query.field("container_registries")
async def resolve_container_registries(_: Any, info: Any) -> list[dict[str, Any] | None]:
    ctx = context_of(info)
    return [registry_obj(r) for r in await svc.container_registries(ctx.manager, ctx.requester)]


def _answer(out: svc.Outcome) -> dict[str, Any]:
    return {"ok": out.ok, "msg": out.msg, "container_registry": registry_obj(out.row)}


@mutation.field("create_container_registry")
async def resolve_create(_: Any, info: Any, hostname: str, props: dict[str, Any]) -> dict[str, Any]:
    ctx = context_of(info)
    return _answer(await svc.create_container_registry(ctx.manager, ctx.requester, hostname, props))


@mutation.field("modify_container_registry")
async def resolve_modify(_: Any, info: Any, hostname: str, props: dict[str, Any]) -> dict[str, Any]:
    ctx = context_of(info)
    return _answer(await svc.modify_container_registry(ctx.manager, ctx.requester, hostname, props))


@mutation.field("delete_container_registry")
async def resolve_delete(_: Any, info: Any, hostname: str) -> dict[str, Any]:
    ctx = context_of(info)
    return _answer(await svc.delete_container_registry(ctx.manager, ctx.requester, hostname))
