"""Keypair, user and project resource policies and resource presets: the superadmin's writes
(one transaction each: checked first, then written, or nothing is) and the scoped reads of the
user and project policies. Keypair-policy and preset reads are in gql_queries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from bai.manager.store import agents as agent_store
from bai.manager.store import groups as group_store
from bai.manager.store import policies as store
from bai.manager.store import presets as preset_store
from bai.manager.store.keypairs import Requester

from . import admin_inputs as check
from .admin_inputs import SUCCESS
from .context import ManagerContext
from .gql_queries import reads_all
from .outcome import Outcome
from .privileges import require_superadmin_write

DEFAULT_FOR_UNSPECIFIED = ("LIMITED", "UNLIMITED")
_WHAT = {"keypair": "keypair resource policy", "user": "user resource policy", "project": "project resource policy"}
_USED_BY = {"keypair": "keypair(s)", "user": "user(s)", "project": "project(s)"}


# ------------------------------------------------------------------ field checks

def _vfolder_hosts(value: Any) -> dict[str, list[str]]:
    hosts = check.json_object(value, "allowed_vfolder_hosts")
    for host, perms in hosts.items():
        if not isinstance(perms, list) or not all(isinstance(p, str) for p in perms):
            raise check.bad(f"allowed_vfolder_hosts.{host}", "must be a list of permission names")
    return hosts


async def _keypair_policy_values(ctx: ManagerContext, props: Mapping[str, Any]) -> dict[str, Any]:
    """The columns ``props`` sets, checked; keys absent from ``props`` stay unset."""
    check.not_null(props, ("default_for_unspecified", "total_resource_slots", "max_session_lifetime",
                           "max_concurrent_sessions", "max_concurrent_sftp_sessions",
                           "max_containers_per_session", "idle_timeout", "allowed_vfolder_hosts"))
    values: dict[str, Any] = {}
    if "default_for_unspecified" in props:
        values["default_for_unspecified"] = check.one_of(
            props["default_for_unspecified"], "default_for_unspecified", DEFAULT_FOR_UNSPECIFIED)
    for field, minimum in (("max_session_lifetime", 0), ("max_concurrent_sessions", 0),
                           ("max_concurrent_sftp_sessions", 0), ("max_containers_per_session", 1),
                           ("idle_timeout", None)):
        if field in props:
            values[field] = check.integer(props[field], field, minimum=minimum)
    if props.get("max_pending_session_count") is not None:
        values["max_pending_session_count"] = check.integer(
            props["max_pending_session_count"], "max_pending_session_count", minimum=0)
    elif "max_pending_session_count" in props:
        values["max_pending_session_count"] = None
    if "allowed_vfolder_hosts" in props:
        values["allowed_vfolder_hosts"] = _vfolder_hosts(props["allowed_vfolder_hosts"])
    slot_fields = [f for f in ("total_resource_slots", "max_pending_session_resource_slots")
                   if props.get(f) is not None]
    if slot_fields:
        known = await known_slots(ctx)
        for field in slot_fields:
            values[field] = check.slots(props[field], known, field)
    if "max_pending_session_resource_slots" in props and props["max_pending_session_resource_slots"] is None:
        values["max_pending_session_resource_slots"] = None
    return values


def _count_values(props: Mapping[str, Any], fields: Mapping[str, int]) -> dict[str, Any]:
    """User / project policy limits: integers with a lower bound each; null means the default."""
    values: dict[str, Any] = {}
    for field, minimum in fields.items():
        if props.get(field) is not None:
            values[field] = check.integer(props[field], field, minimum=minimum)
    return values


_USER_FIELDS = {"max_vfolder_count": 0, "max_quota_scope_size": -1, "max_session_count_per_model_session": 0,
                "max_customized_image_count": 0}
_PROJECT_FIELDS = {"max_vfolder_count": 0, "max_quota_scope_size": -1}


async def known_slots(ctx: ManagerContext) -> set[str]:
    """Slot names the manager knows: the intrinsic ``cpu`` and ``mem`` and those its agents report."""
    async with ctx.db.connect() as conn:
        return await agent_store.known_slot_types(conn)


# ------------------------------------------------------------------ policy writes

async def create_policy(ctx: ManagerContext, req: Requester, kind: str, name: str,
                        props: Mapping[str, Any]) -> Outcome:
    require_superadmin_write(req)
    check.name(name)
    if kind == "keypair":
        for field in ("default_for_unspecified", "max_concurrent_sessions", "max_containers_per_session",
                      "idle_timeout"):
            if props.get(field) is None:
                raise check.bad(field, "is required")
        values = await _keypair_policy_values(ctx, props)
    else:
        values = _count_values(props, _USER_FIELDS if kind == "user" else _PROJECT_FIELDS)
    async with ctx.db.begin() as conn:
        row = await store.create_policy(conn, kind, name, values)
    if row is None:
        return Outcome(False, f"A {_WHAT[kind]} named {name!r} already exists.")
    return Outcome(True, SUCCESS, row)


async def modify_policy(ctx: ManagerContext, req: Requester, kind: str, name: str,
                        props: Mapping[str, Any]) -> Outcome:
    require_superadmin_write(req)
    if kind == "keypair":
        values = await _keypair_policy_values(ctx, props)
    else:
        check.not_null(props, _USER_FIELDS if kind == "user" else _PROJECT_FIELDS)
        values = _count_values(props, _USER_FIELDS if kind == "user" else _PROJECT_FIELDS)
    async with ctx.db.begin() as conn:
        found = await store.modify_policy(conn, kind, name, values)
    if not found:
        return Outcome(False, f"No such {_WHAT[kind]}: {name!r}.")
    if kind == "keypair":
        ctx.requesters.invalidate()  # cached keypairs carry their policy's limits
    return Outcome(True, SUCCESS)


async def delete_policy(ctx: ManagerContext, req: Requester, kind: str, name: str) -> Outcome:
    require_superadmin_write(req)
    async with ctx.db.begin() as conn:
        users = await store.policy_users(conn, kind, name)
        if users:
            return Outcome(False, f"The {_WHAT[kind]} {name!r} is used by {users} {_USED_BY[kind]}; "
                                  "assign them another policy first.")
        if not await store.delete_policy(conn, kind, name):
            return Outcome(False, f"No such {_WHAT[kind]}: {name!r}.")
    return Outcome(True, SUCCESS)


# ------------------------------------------------------------------ user / project policy reads

async def user_policies(db: AsyncEngine, req: Requester, name: str | None, *, listing: bool) -> list[Any]:
    """Superadmins, monitors and admins read every user resource policy; a user only their own
    (``name`` omitted in the single read: the caller's own)."""
    own = None if reads_all(req) or req.role == "admin" else req.user_uuid
    if not listing and name is None:
        own = req.user_uuid
    async with db.connect() as conn:
        return await store.user_policies(conn, name=name, user_uuid=own)


async def project_policies(db: AsyncEngine, req: Requester, name: str | None) -> list[Any]:
    """Superadmins, monitors and admins read every project resource policy; a user those of the
    projects they belong to."""
    async with db.connect() as conn:
        rows = await store.project_policies(conn, name=name)
        if reads_all(req) or req.role == "admin":
            return rows
        mine = {g.resource_policy for g in await group_store.groups(conn, member=req.user_uuid)}
    return [r for r in rows if r.name in mine]


# ------------------------------------------------------------------ resource presets

async def _preset_values(ctx: ManagerContext, props: Mapping[str, Any]) -> dict[str, Any]:
    check.not_null(props, ("resource_slots",))
    values: dict[str, Any] = {}
    if "resource_slots" in props:
        values["resource_slots"] = check.slots(props["resource_slots"], await known_slots(ctx), "resource_slots")
        if not values["resource_slots"]:
            raise check.bad("resource_slots", "must name at least one slot")
    if props.get("shared_memory") is not None:
        values["shared_memory"] = check.binary_size(props["shared_memory"], "shared_memory")
    elif "shared_memory" in props:
        values["shared_memory"] = None
    return values


def _check_shmem(slots: Mapping[str, str], shared_memory: int | None) -> None:
    if shared_memory is not None and "mem" in slots and shared_memory >= int(slots["mem"]):
        raise check.bad("shared_memory", "must be less than the preset's memory (mem)")


async def create_preset(ctx: ManagerContext, req: Requester, name: str, props: Mapping[str, Any]) -> Outcome:
    require_superadmin_write(req)
    check.name(name)
    if props.get("resource_slots") is None:
        raise check.bad("resource_slots", "is required")
    values = await _preset_values(ctx, props)
    _check_shmem(values["resource_slots"], values.get("shared_memory"))
    async with ctx.db.begin() as conn:
        row = await preset_store.create_preset(conn, name, values)
    if row is None:
        return Outcome(False, f"A resource preset named {name!r} already exists.")
    return Outcome(True, SUCCESS, row)


async def modify_preset(ctx: ManagerContext, req: Requester, name: str, props: Mapping[str, Any]) -> Outcome:
    require_superadmin_write(req)
    values = await _preset_values(ctx, props)
    async with ctx.db.begin() as conn:
        current = await preset_store.resource_presets(conn, name=name)
        if not current:
            return Outcome(False, f"No such resource preset: {name!r}.")
        _check_shmem(values.get("resource_slots", current[0].resource_slots),
                     values.get("shared_memory", current[0].shared_memory))
        await preset_store.modify_preset(conn, name, values)
    return Outcome(True, SUCCESS)


async def delete_preset(ctx: ManagerContext, req: Requester, name: str) -> Outcome:
    require_superadmin_write(req)
    async with ctx.db.begin() as conn:
        if not await preset_store.delete_preset(conn, name):
            return Outcome(False, f"No such resource preset: {name!r}.")
    return Outcome(True, SUCCESS)

