"""The agent's host-mount RPC methods (``host_mounts``, ``mount_host``, ``umount_host``,
``read_fstab``): the node's ``[host-mounts]`` section decides what is allowed, the work is
:mod:`bai.common.host_mounts` (the manager does its own node with the same code).

A request this node's configuration refuses (a filesystem type it does not allow, another fstab
path) is ``agent-invalid-input`` (400); a missing fstab is 404; a mount that fails is a normal
answer with ``success: false`` and the command's message, as the original's watcher answered."""

from __future__ import annotations

from typing import Any

from bai.common.agent_rpc import (
    InvalidInput,
    ListHostMountsRequest,
    MountHostRequest,
    ReadFstabRequest,
    UmountHostRequest,
)
from bai.common.host_mounts import HostMountFailure, HostMountInputError, HostMounts, MountSpec

from .agent import AgentBackend


def _node(agent: AgentBackend) -> HostMounts:
    return HostMounts(agent.config.host_mounts)


async def list_host_mounts(agent: AgentBackend, req: ListHostMountsRequest) -> dict[str, Any]:
    return await _node(agent).list()


async def mount_host(agent: AgentBackend, req: MountHostRequest) -> dict[str, Any]:
    spec = MountSpec(req.name, req.fs_location, req.fs_type, req.options)
    try:
        return await _node(agent).mount(spec, fstab_path=req.fstab_path, edit_fstab=req.edit_fstab)
    except HostMountInputError as exc:
        raise InvalidInput(str(exc)) from exc


async def umount_host(agent: AgentBackend, req: UmountHostRequest) -> dict[str, Any]:
    try:
        return await _node(agent).umount(req.name, fstab_path=req.fstab_path, edit_fstab=req.edit_fstab)
    except HostMountInputError as exc:
        raise InvalidInput(str(exc)) from exc


async def read_fstab(agent: AgentBackend, req: ReadFstabRequest) -> dict[str, Any]:
    try:
        return {"content": await _node(agent).read_fstab(req.fstab_path)}
    except HostMountInputError as exc:
        raise InvalidInput(str(exc)) from exc
    except HostMountFailure as exc:
        raise InvalidInput(str(exc), title="No fstab" if exc.missing else "Cannot read the fstab",
                           status=404 if exc.missing else 409) from exc
