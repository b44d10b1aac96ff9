"""create_domain, modify_domain (a new name included), delete_domain (soft: inactive) and
purge_domain (refused while users, projects or sessions belong to it). Superadmins only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from bai.manager import errors
from bai.manager.services import privileges
from bai.manager.services.context import ManagerContext
from bai.manager.store import domains as store
from bai.manager.store.keypairs import Requester

from . import inputs
from .outcome import Outcome, Refused, write


def _columns(props: Mapping[str, Any]) -> dict[str, Any]:
    values = inputs.given(props, "description", "is_active", "total_resource_slots", "allowed_vfolder_hosts",
                          "allowed_docker_registries", "integration_id")
    if "description" in values:
        values["description"] = inputs.text(values["description"], "description", 512)
    if "is_active" in values and not isinstance(values["is_active"], bool):
        raise errors.InvalidAPIParameters("is_active must be a boolean")
    if "total_resource_slots" in values:
        values["total_resource_slots"] = inputs.resource_slots(values["total_resource_slots"])
    if "allowed_vfolder_hosts" in values:
        values["allowed_vfolder_hosts"] = inputs.json_object(values["allowed_vfolder_hosts"], "allowed_vfolder_hosts")
    if "allowed_docker_registries" in values:
        values["allowed_docker_registries"] = inputs.string_list(
            values["allowed_docker_registries"], "allowed_docker_registries", 256)
    if "integration_id" in values:
        values["integration_id"] = inputs.text(values["integration_id"], "integration_id", 512)
    return values


async def create_domain(ctx: ManagerContext, req: Requester, name: str, props: Mapping[str, Any]) -> Outcome:
    privileges.require_superadmin_write(req)
    name = inputs.domain_name(name)
    values = _columns(props)

    async def body(conn: AsyncConnection) -> Any:
        if await store.domain(conn, name) is not None:
            raise Refused(f"domain already exists: {name}")
        await store.insert_domain(conn, name, values)
        return await store.domain(conn, name)

    return await write(ctx, body)


async def modify_domain(ctx: ManagerContext, req: Requester, name: str, props: Mapping[str, Any]) -> Outcome:
    privileges.require_superadmin_write(req)
    name = inputs.text(name, "name", 64, allow_empty=False)
    values = _columns(props)
    new_name = inputs.domain_name(props["name"]) if props.get("name") is not None else name
    if not values and new_name == name:
        return Outcome(False, "nothing to update")

    async def body(conn: AsyncConnection) -> Any:
        if await store.domain(conn, name) is None:
            raise Refused(f"no such domain: {name}")
        if new_name != name:
            if await store.domain(conn, new_name) is not None:
                raise Refused(f"domain already exists: {new_name}")
            await store.rename_domain(conn, name, new_name)
        await store.update_domain(conn, new_name, values)
        return await store.domain(conn, new_name)

    return await write(ctx, body, invalidates_auth=True)


async def delete_domain(ctx: ManagerContext, req: Requester, name: str) -> Outcome:
    privileges.require_superadmin_write(req)
    name = inputs.text(name, "name", 64, allow_empty=False)

    async def body(conn: AsyncConnection) -> None:
        if not await store.update_domain(conn, name, {"is_active": False}):
            raise Refused(f"no such domain: {name}")

    return await write(ctx, body)


async def purge_domain(ctx: ManagerContext, req: Requester, name: str) -> Outcome:
    privileges.require_superadmin_write(req)
    name = inputs.text(name, "name", 64, allow_empty=False)

    async def body(conn: AsyncConnection) -> None:
        if await store.domain(conn, name) is None:
            raise Refused(f"no such domain: {name}")
        left = {what: n for what, n in (await store.dependants(conn, name)).items() if n}
        if left:
            raise Refused(f"the domain still has {', '.join(f'{n} {what}' for what, n in left.items())}; "
                          "purge them first")
        await store.delete_domain(conn, name)

    return await write(ctx, body)
