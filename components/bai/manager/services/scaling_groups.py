"""Resource groups (scaling groups) and agents: the superadmin's writes, one transaction each,
checked before anything is written. Reads of resource groups are in gql_queries."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from bai.common.agent_rpc import AgentError
from bai.common.types import SessionTypes
from bai.manager.store import agents as agent_store
from bai.manager.store import scaling_groups as store
from bai.manager.store.keypairs import Requester

from . import admin_inputs as check
from .admin_inputs import SUCCESS
from .context import ManagerContext
from .outcome import Outcome
from .privileges import require_superadmin_write
from .scheduling.queues import SCHEDULERS as SESSION_ORDERS
from .scheduling.selectors import STRATEGIES as AGENT_STRATEGIES

#: What this manager implements (the original also names other provisioning drivers; accepting
#: them would promise a behaviour that does not exist here). Schedulers and agent-selection
#: strategies: services/scheduling/{queues,selectors}.py.
DRIVERS = ("static",)
SCHEDULERS = SESSION_ORDERS
SELECTION_STRATEGIES = AGENT_STRATEGIES
_SESSION_TYPES = frozenset(t.value for t in SessionTypes) - {"system"}

#: Association kind -> (its word in messages, the other side's word).
_KINDS = {"domain": "domain", "group": "project (user group)", "keypair": "keypair"}


def _scheduler_opts(value: Any) -> dict[str, Any]:
    """The original's ScalingGroupOpts keys are checked; others are kept for hook plugins."""
    opts = check.json_object(value, "scheduler_opts")
    if "allowed_session_types" in opts:
        types = opts["allowed_session_types"]
        if not isinstance(types, list) or not types or not set(types) <= _SESSION_TYPES:
            raise check.bad("scheduler_opts.allowed_session_types",
                            f"must be a non-empty list of {', '.join(sorted(_SESSION_TYPES))}")
    if "pending_timeout" in opts:
        timeout = opts["pending_timeout"]
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise check.bad("scheduler_opts.pending_timeout", "must be a non-negative number of seconds")
    if "agent_selection_strategy" in opts:
        check.one_of(opts["agent_selection_strategy"], "scheduler_opts.agent_selection_strategy",
                     SELECTION_STRATEGIES)
    if "roundrobin" in opts and not isinstance(opts["roundrobin"], bool):
        raise check.bad("scheduler_opts.roundrobin", "must be a boolean")
    if "config" in opts:
        config = check.json_object(opts["config"], "scheduler_opts.config")
        retries = config.get("num_retries_to_skip", 0)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise check.bad("scheduler_opts.config.num_retries_to_skip", "must be a non-negative integer")
    return opts


def _values(props: Mapping[str, Any]) -> dict[str, Any]:
    check.not_null(props, ("is_active", "is_public", "driver", "driver_opts", "scheduler", "scheduler_opts",
                           "use_host_network"))
    values: dict[str, Any] = {}
    if "description" in props:
        values["description"] = check.text(props["description"], "description", 512)
    for flag in ("is_active", "is_public", "use_host_network"):
        if flag in props:
            if not isinstance(props[flag], bool):
                raise check.bad(flag, "must be a boolean")
            values[flag] = props[flag]
    if "wsproxy_addr" in props:
        values["wsproxy_addr"] = check.text(props["wsproxy_addr"], "wsproxy_addr", 1024)
    if "wsproxy_api_token" in props:
        values["wsproxy_api_token"] = check.text(props["wsproxy_api_token"], "wsproxy_api_token", 128)
    if "driver" in props:
        values["driver"] = check.one_of(props["driver"], "driver", DRIVERS)
    if "driver_opts" in props:
        values["driver_opts"] = check.json_object(props["driver_opts"], "driver_opts")
    if "scheduler" in props:
        values["scheduler"] = check.one_of(props["scheduler"], "scheduler", SCHEDULERS)
    if "scheduler_opts" in props:
        values["scheduler_opts"] = _scheduler_opts(props["scheduler_opts"])
    return values


async def create(ctx: ManagerContext, req: Requester, name: str, props: Mapping[str, Any]) -> Outcome:
    require_superadmin_write(req)
    check.name(name, max_length=64)
    for field in ("driver", "scheduler"):
        if props.get(field) is None:
            raise check.bad(field, "is required")
    values = _values(props)
    async with ctx.db.begin() as conn:
        row = await store.create_scaling_group(conn, name, values)
    if row is None:
        return Outcome(False, f"A scaling group named {name!r} already exists.")
    return Outcome(True, SUCCESS, row)


async def modify(ctx: ManagerContext, req: Requester, name: str, props: Mapping[str, Any]) -> Outcome:
    require_superadmin_write(req)
    values = _values(props)
    async with ctx.db.begin() as conn:
        found = await store.modify_scaling_group(conn, name, values)
    if not found:
        return Outcome(False, f"No such scaling group: {name!r}.")
    if values.get("is_active") or "scheduler" in values or "scheduler_opts" in values:
        ctx.request_schedule()  # sessions waiting for this group may fit now (or go in a new order)
    return Outcome(True, SUCCESS)


async def delete(ctx: ManagerContext, req: Requester, name: str) -> Outcome:
    require_superadmin_write(req)
    async with ctx.db.begin() as conn:
        if not await store.exists(conn, name):
            return Outcome(False, f"No such scaling group: {name!r}.")
        agents, sessions = await store.users_of(conn, name)
        if agents or sessions:
            return Outcome(False, f"The scaling group {name!r} is used by {agents} agent(s) and {sessions} "
                                  "session(s) (finished ones included); it cannot be deleted.")
        await store.delete_scaling_group(conn, name)
    return Outcome(True, SUCCESS)


async def associate(ctx: ManagerContext, req: Requester, kind: str, scaling_group: str, key: Any) -> Outcome:
    """Lets the domain / project / keypair ``key`` use the resource group."""
    require_superadmin_write(req)
    async with ctx.db.begin() as conn:
        missing = await _missing(conn, kind, scaling_group, key)
        if missing:
            return Outcome(False, missing)
        if not await store.associate(conn, kind, scaling_group, key):
            return Outcome(False, f"The scaling group {scaling_group!r} is already associated with the "
                                  f"{_KINDS[kind]} {str(key)!r}.")
    return Outcome(True, SUCCESS)


async def disassociate(ctx: ManagerContext, req: Requester, kind: str, scaling_group: str, key: Any) -> Outcome:
    require_superadmin_write(req)
    async with ctx.db.begin() as conn:
        if not await store.disassociate(conn, kind, scaling_group, key):
            return Outcome(False, f"The scaling group {scaling_group!r} is not associated with the "
                                  f"{_KINDS[kind]} {str(key)!r}.")
    return Outcome(True, SUCCESS)


async def associate_many(ctx: ManagerContext, req: Requester, kind: str, scaling_groups: list[str],
                         key: Any) -> Outcome:
    """The plural form (the original's 24.03.9 ``associate_scaling_groups_with_*``): all of them
    or, when one is unknown or associated already, none."""
    require_superadmin_write(req)
    names = sorted(set(scaling_groups))
    async with ctx.db.begin() as conn:
        unknown = set(names) - await store.existing(conn, names)
        if unknown:
            return Outcome(False, f"No such scaling group(s): {', '.join(sorted(unknown))}.")
        if not await store.other_side_exists(conn, kind, key):
            return Outcome(False, f"No such {_KINDS[kind]}: {str(key)!r}.")
        already = await store.associated(conn, kind, names, key)
        if already:
            return Outcome(False, f"Already associated with the {_KINDS[kind]} {str(key)!r}: "
                                  f"{', '.join(sorted(already))}; nothing was changed.")
        for name in names:
            await store.associate(conn, kind, name, key)
    return Outcome(True, SUCCESS)


async def disassociate_many(ctx: ManagerContext, req: Requester, kind: str, scaling_groups: list[str],
                            key: Any) -> Outcome:
    """All of them or, when one is not associated, none."""
    require_superadmin_write(req)
    names = sorted(set(scaling_groups))
    async with ctx.db.begin() as conn:
        missing = set(names) - await store.associated(conn, kind, names, key)
        if missing:
            return Outcome(False, f"Not associated with the {_KINDS[kind]} {str(key)!r}: "
                                  f"{', '.join(sorted(missing))}; nothing was changed.")
        for name in names:
            await store.disassociate(conn, kind, name, key)
    return Outcome(True, SUCCESS)


async def disassociate_all(ctx: ManagerContext, req: Requester, kind: str, key: Any) -> Outcome:
    """Every resource group of the domain / project (none may be associated: still a success)."""
    require_superadmin_write(req)
    async with ctx.db.begin() as conn:
        if not await store.other_side_exists(conn, kind, key):
            return Outcome(False, f"No such {_KINDS[kind]}: {str(key)!r}.")
        await store.disassociate_all(conn, kind, key)
    return Outcome(True, SUCCESS)


async def _missing(conn: Any, kind: str, scaling_group: str, key: Any) -> str | None:
    if not await store.exists(conn, scaling_group):
        return f"No such scaling group: {scaling_group!r}."
    if not await store.other_side_exists(conn, kind, key):
        return f"No such {_KINDS[kind]}: {str(key)!r}."
    return None


def group_id(value: str) -> uuid.UUID | None:
    """``scaling_groups_for_user_group(user_group: String!)`` takes the project's UUID as text."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


# ------------------------------------------------------------------ agents

async def modify_agent(ctx: ManagerContext, req: Requester, agent_id: str, props: Mapping[str, Any]) -> Outcome:
    """``schedulable`` (false: the scheduler places no new session there) and ``scaling_group``.
    The agent re-declares its group with every heartbeat (``[agent] scaling-group``), so, as with
    the original, a move is the agent's first (:func:`_move_agent`); the row follows it."""
    require_superadmin_write(req)
    check.not_null(props, ("schedulable", "scaling_group"))
    values: dict[str, Any] = {}
    if "schedulable" in props:
        if not isinstance(props["schedulable"], bool):
            raise check.bad("schedulable", "must be a boolean")
        values["schedulable"] = props["schedulable"]
    if "scaling_group" in props:
        refusal = await _move_agent(ctx, agent_id, props["scaling_group"])
        if refusal is not None:
            return Outcome(False, refusal)
        values["scaling_group"] = props["scaling_group"]
    async with ctx.db.begin() as conn:
        if not await agent_store.modify_agent(conn, agent_id, values):
            return Outcome(False, f"No such agent: {agent_id!r}.")
    if values.get("schedulable") or "scaling_group" in values:
        ctx.request_schedule()  # pending sessions may fit there now
    return Outcome(True, SUCCESS)


async def _move_agent(ctx: ManagerContext, agent_id: str, group: Any) -> str | None:
    """Tells the agent to join ``group`` for good (update_scaling_group: it switches at once and
    keeps the group in its agent.toml, so its heartbeats and restarts keep it); why not, or None.
    Nothing is written here: the caller updates the row only after the agent has switched."""
    async with ctx.db.connect() as conn:
        if not isinstance(group, str) or not await store.exists(conn, group):
            return f"No such scaling group: {group!r}."
        agent = await agent_store.placement(conn, agent_id)
    if agent is None:
        return f"No such agent: {agent_id!r}."
    if agent.scaling_group == group:
        return None  # already there (its heartbeats say so): nothing to ask of it
    if agent.status != "ALIVE":
        return (f"The agent {agent_id!r} is {agent.status}: only a live agent can be moved to another "
                "scaling group (it would go back to the group of its agent.toml when it returns).")
    try:
        await ctx.agents.get(agent.addr).update_scaling_group(group)
    except AgentError as exc:
        return f"The agent {agent_id!r} did not move to {group!r}: {exc.msg or exc.title}"
    return None
