"""Host mounts across the cluster (superadmins): the manager's own node with
:mod:`bai.common.host_mounts`, then every ALIVE agent (of one resource group, if named) through
the agent RPC, at most ``_CONCURRENT_AGENTS`` at a time. As in the original, the answer reports
each node: ``{"manager": {...}, "agents": {agent_id: {...}}}`` with ``success`` and ``message``
per node, so one unreachable agent does not hide what the others did.

A request the manager's own configuration refuses (a filesystem type it does not allow, another
fstab path) is refused whole with 400 before any node is touched."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from bai.common.agent_rpc import AgentClient, AgentError
from bai.common.host_mounts import HostMountFailure, HostMountInputError, HostMounts, MountSpec
from bai.manager import errors
from bai.manager.services.context import ManagerContext
from bai.manager.store import agents as agent_store
from bai.manager.store.keypairs import Requester

_CONCURRENT_AGENTS = 16
#: Agents asked at most (one page of the agent table).
_MAX_AGENTS = 1000


def _require_superadmin(req: Requester) -> None:
    if req.role != "superadmin":
        raise errors.GenericForbidden("superadmin privilege required")


def _own_node(ctx: ManagerContext) -> HostMounts:
    return HostMounts(ctx.config.host_mounts)


async def _alive_agents(ctx: ManagerContext, scaling_group: str | None) -> list[tuple[str, str]]:
    async with ctx.db.connect() as conn:
        rows, _ = await agent_store.agent_page(conn, limit=_MAX_AGENTS, offset=0, scaling_group=scaling_group,
                                               statuses=["ALIVE"])
    return [(row.id, row.addr) for row in rows]


async def _on_agents(ctx: ManagerContext, scaling_group: str | None,
                     call: Callable[[AgentClient], Awaitable[dict[str, Any]]],
                     failed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``call`` on every ALIVE agent; an agent that refuses or cannot be reached gets ``failed``
    with its error as the message."""
    sema = asyncio.Semaphore(_CONCURRENT_AGENTS)

    async def one(agent_id: str, addr: str) -> tuple[str, dict[str, Any]]:
        async with sema:
            try:
                return agent_id, await call(ctx.agents.get(addr))
            except AgentError as exc:
                return agent_id, {**failed, "success": False, "message": exc.msg or exc.title}

    agents = await _alive_agents(ctx, scaling_group)
    return dict(await asyncio.gather(*(one(agent_id, addr) for agent_id, addr in agents)))


async def list_mounts(ctx: ManagerContext, req: Requester) -> dict[str, Any]:
    _require_superadmin(req)
    manager = await _own_node(ctx).list()
    agents = await _on_agents(ctx, None, lambda agent: agent.host_mounts(), {"mounts": [], "entries": []})
    return {"manager": manager, "agents": agents}


async def mount(ctx: ManagerContext, req: Requester, spec: MountSpec, *, scaling_group: str | None,
                fstab_path: str | None, edit_fstab: bool) -> dict[str, Any]:
    _require_superadmin(req)
    node = _own_node(ctx)
    try:
        node.check_mount(spec, fstab_path)
        manager = await node.mount(spec, fstab_path=fstab_path, edit_fstab=edit_fstab)
    except HostMountInputError as exc:
        raise errors.InvalidAPIParameters(str(exc)) from exc
    agents = await _on_agents(ctx, scaling_group, lambda agent: agent.mount_host(
        spec.name, spec.fs_location, spec.fs_type, spec.options, fstab_path=fstab_path, edit_fstab=edit_fstab),
        {"path": ""})
    return {"manager": manager, "agents": agents}


async def umount(ctx: ManagerContext, req: Requester, name: str, *, scaling_group: str | None,
                 fstab_path: str | None, edit_fstab: bool) -> dict[str, Any]:
    _require_superadmin(req)
    try:
        manager = await _own_node(ctx).umount(name, fstab_path=fstab_path, edit_fstab=edit_fstab)
    except HostMountInputError as exc:
        raise errors.InvalidAPIParameters(str(exc)) from exc
    agents = await _on_agents(ctx, scaling_group, lambda agent: agent.umount_host(
        name, fstab_path=fstab_path, edit_fstab=edit_fstab), {"path": ""})
    return {"manager": manager, "agents": agents}


async def fstab_contents(ctx: ManagerContext, req: Requester, *, agent_id: str | None,
                         fstab_path: str | None) -> dict[str, Any]:
    """The manager's configured fstab, or one agent's (``agent_id``)."""
    _require_superadmin(req)
    if agent_id is None:
        try:
            content = await _own_node(ctx).read_fstab(fstab_path)
        except HostMountInputError as exc:
            raise errors.InvalidAPIParameters(str(exc)) from exc
        except HostMountFailure as exc:
            raise (errors.ObjectNotFound(str(exc)) if exc.missing else errors.VFolderOperationFailed(str(exc))) from exc
        return {"content": content, "node": "manager", "node_id": ctx.manager_id}
    async with ctx.db.connect() as conn:
        row = await agent_store.agent_row(conn, agent_id)
    if row is None:
        raise errors.ObjectNotFound(f"no agent {agent_id!r}")
    if row.status != "ALIVE":
        raise errors.InstanceNotAvailable(f"the agent {agent_id!r} is {row.status}")
    try:
        content = await ctx.agents.get(row.addr).read_fstab(fstab_path)
    except AgentError as exc:
        if exc.type == "agent-invalid-input" and exc.status == 404:
            raise errors.ObjectNotFound(exc.msg) from exc
        if exc.type == "agent-invalid-input" and exc.status == 400:
            raise errors.InvalidAPIParameters(exc.msg) from exc
        if exc.type == "agent-invalid-input":
            raise errors.VFolderOperationFailed(exc.msg) from exc
        raise errors.InstanceNotAvailable(f"the agent {agent_id!r} did not answer: {exc.msg or exc.title}") from exc
    return {"content": content, "node": "agent", "node_id": agent_id}
