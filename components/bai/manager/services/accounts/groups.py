"""create_group, modify_group (with membership: ``user_update_mode`` ``add``/``remove`` and
``user_uuids``, as the original), delete_group (soft: inactive) and purge_group (refused while a
session of the project is not over). A superadmin anywhere, a domain admin in their own domain;
members must be users of the project's domain."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from bai.manager import errors
from bai.manager.services import privileges
from bai.manager.services.context import ManagerContext
from bai.manager.store import domains as domain_store
from bai.manager.store import groups as store
from bai.manager.store import users as user_store
from bai.manager.store.keypairs import Requester

from . import inputs
from .outcome import Outcome, Refused, write

#: Every project is a general one (no model stores here).
PROJECT_TYPES = frozenset({"GENERAL"})
USER_UPDATE_MODES = frozenset({"add", "remove"})


def _name(value: Any) -> str:
    return inputs.text(value, "project name", 64, allow_empty=False)


def _columns(props: Mapping[str, Any]) -> dict[str, Any]:
    values = inputs.given(props, "description", "is_active", "total_resource_slots", "allowed_vfolder_hosts",
                          "integration_id", "resource_policy", "container_registry")
    if "container_registry" in values:
        values["container_registry"] = _container_registry(values["container_registry"])
    if "description" in values:
        values["description"] = inputs.text(values["description"], "description", 512)
    if "is_active" in values and not isinstance(values["is_active"], bool):
        raise errors.InvalidAPIParameters("is_active must be a boolean")
    if "total_resource_slots" in values:
        values["total_resource_slots"] = inputs.resource_slots(values["total_resource_slots"])
    if "allowed_vfolder_hosts" in values:
        values["allowed_vfolder_hosts"] = inputs.json_object(values["allowed_vfolder_hosts"], "allowed_vfolder_hosts")
    if "integration_id" in values:
        values["integration_id"] = inputs.text(values["integration_id"], "integration_id", 512)
    if "resource_policy" in values:
        values["resource_policy"] = inputs.text(values["resource_policy"], "resource_policy", 256, allow_empty=False)
    return values


def _container_registry(value: Any) -> dict[str, str] | None:
    """``{"registry": host, "project": name}`` (the original's shape), or empty to unset."""
    found = inputs.json_object(value, "container_registry")
    if not found:
        return None
    if set(found) - {"registry", "project"} or not isinstance(found.get("registry"), str) \
            or not isinstance(found.get("project", ""), str):
        raise errors.InvalidAPIParameters('container_registry must be {"registry": HOST, "project": NAME}')
    return {"registry": inputs.text(found["registry"], "container_registry.registry", 256, allow_empty=False),
            "project": inputs.text(found.get("project", ""), "container_registry.project", 256)}


async def _row(conn: AsyncConnection, group_id: uuid.UUID) -> Any:
    return (await store.groups(conn, group_id=group_id))[0]


async def _name_free(conn: AsyncConnection, name: str, domain: str) -> None:
    if await store.groups(conn, name=name, domain_name=domain):
        raise Refused(f"a project named {name!r} already exists in domain {domain!r}")


async def create_group(ctx: ManagerContext, req: Requester, name: str, props: Mapping[str, Any]) -> Outcome:
    privileges.require_admin_write(req)
    domain = privileges.writable_domain(req, inputs.domain_name(props.get("domain_name")))
    name = _name(name)
    type_ = str(props.get("type") or "GENERAL").upper()
    if type_ not in PROJECT_TYPES:
        raise errors.InvalidAPIParameters(f"unsupported project type {props.get('type')!r} (only GENERAL)")
    values = _columns(props)

    async def body(conn: AsyncConnection) -> Any:
        if await domain_store.domain(conn, domain) is None:
            raise Refused(f"no such domain: {domain}")
        await _name_free(conn, name, domain)
        group_id = await store.insert_group(conn, {**values, "name": name, "domain_name": domain})
        return await _row(conn, group_id)

    return await write(ctx, body)


async def _target(conn: AsyncConnection, req: Requester, group_id: uuid.UUID) -> Any:
    row = await store.group_for_write(conn, group_id)
    if row is None:
        raise Refused(f"no such project: {group_id}")
    privileges.writable_domain(req, row.domain_name)
    return row


async def _change_members(conn: AsyncConnection, group: Any, mode: str, user_ids: list[uuid.UUID]) -> None:
    if mode == "remove":
        await store.remove_members(conn, group.id, user_ids)
        return
    found = await user_store.accounts_by_uuid(conn, user_ids)
    missing = [str(u) for u in user_ids if u not in found]
    if missing:
        raise Refused(f"no such user: {', '.join(missing)}")
    strangers = [a.email for a in found.values() if a.domain_name != group.domain_name]
    if strangers:
        raise Refused(f"users of another domain cannot join a project of {group.domain_name!r}: "
                      f"{', '.join(sorted(strangers))}")
    await store.add_members(conn, group.id, user_ids)


async def modify_group(ctx: ManagerContext, req: Requester, group_id: uuid.UUID, props: Mapping[str, Any]) -> Outcome:
    privileges.require_admin_write(req)
    values = _columns(props)
    if props.get("name") is not None:
        values["name"] = _name(props["name"])
    if props.get("domain_name") is not None:
        values["domain_name"] = privileges.writable_domain(req, inputs.domain_name(props["domain_name"]))
    mode = props.get("user_update_mode")
    if mode is not None and mode not in USER_UPDATE_MODES:
        raise errors.InvalidAPIParameters(f"invalid user_update_mode {mode!r} (add or remove)")
    user_ids = inputs.uuids(props.get("user_uuids"), "user_uuids")
    if not user_ids:
        mode = None  # the original's rule: no users, no membership change
    if not values and mode is None:
        return Outcome(False, "nothing to update")

    async def body(conn: AsyncConnection) -> Any:
        group = await _target(conn, req, group_id)
        domain = values.get("domain_name", group.domain_name)
        if domain != group.domain_name:
            if await domain_store.domain(conn, domain) is None:
                raise Refused(f"no such domain: {domain}")
            if await store.member_count(conn, group_id) or await store.session_count(conn, group_id):
                raise Refused("a project with members or sessions cannot move to another domain")
        if values.get("name", group.name) != group.name or domain != group.domain_name:
            await _name_free(conn, values.get("name", group.name), domain)
        if mode is not None:
            await _change_members(conn, group, mode, user_ids)
        if values:
            await store.update_group(conn, group_id, values)
        return await _row(conn, group_id)

    return await write(ctx, body)


async def delete_group(ctx: ManagerContext, req: Requester, group_id: uuid.UUID) -> Outcome:
    """Soft delete: inactive, and no longer linked to an external system (the original's)."""
    privileges.require_admin_write(req)

    async def body(conn: AsyncConnection) -> None:
        await _target(conn, req, group_id)
        await store.update_group(conn, group_id, {"is_active": False, "integration_id": None})

    return await write(ctx, body)


async def purge_group(ctx: ManagerContext, req: Requester, group_id: uuid.UUID) -> Outcome:
    """Hard delete of the project, its memberships and its finished sessions."""
    privileges.require_admin_write(req)

    async def body(conn: AsyncConnection) -> None:
        await _target(conn, req, group_id)
        live = await user_store.live_session_count(conn, group_id=group_id)
        if live:
            raise Refused(f"the project has {live} session(s) that are not terminated; terminate them first")
        await user_store.delete_dead_sessions(conn, group_id=group_id)
        await store.delete_group(conn, group_id)

    return await write(ctx, body)
