"""/folders/_/fstab and /folders/_/mounts: filesystems mounted on the cluster's nodes
(superadmins; the official client's ``admin vfolder get-fstab-contents|list-mounts|mount-host|
umount-host``). Inputs are checked here against the same rules the agents apply
(:mod:`bai.common.host_mounts`); the work is in services/vfolders/host_mounts.py."""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from bai.common import host_mounts as hm
from bai.manager import errors
from bai.manager.services.vfolders import host_mounts as svc

from . import routing
from .keys import CTX, requester
from .middlewares import auth_required
from .routing import Answer

FstabPath = Annotated[str, Field(min_length=1, max_length=4096,
                                 description="Must be the node's configured `[host-mounts] fstab-path` (default).")]
MountName = Annotated[str, Field(pattern=hm.NAME_PATTERN, description="The mount point's name under the node's "
                                 "`[host-mounts] mount-base`: one path segment.")]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class FstabQuery(_Params):
    fstab_path: FstabPath | None = None
    agent_id: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        None, description="An ALIVE agent; absent: the manager's node.")

    @field_validator("fstab_path")
    @classmethod
    def _fstab_path(cls, value: str | None) -> str | None:
        return None if value is None else hm.check_fstab_path(value)


class UmountParams(_Params):
    name: MountName
    scaling_group: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        None, description="Only the agents of this resource group (default: every ALIVE agent).")
    fstab_path: FstabPath | None = None
    edit_fstab: StrictBool = Field(False, description="Also add (mount) or remove (umount) the fstab line.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return hm.check_name(value)

    @field_validator("fstab_path")
    @classmethod
    def _fstab_path(cls, value: str | None) -> str | None:
        return None if value is None else hm.check_fstab_path(value)


class MountParams(UmountParams):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"name": "scratch", "fs_location": "tmpfs", "fs_type": "tmpfs", "options": "size=64m"}]})
    fs_location: Annotated[str, Field(pattern=hm.FS_LOCATION_PATTERN, description=(
        "What to mount (`server:/export`, `//server/share`, a tmpfs label): no whitespace or commas."))]
    fs_type: Annotated[str, Field(pattern=hm.FS_TYPE_PATTERN, description=(
        "One of the node's `[host-mounts] fs-types`."))] = "nfs"
    options: Annotated[str, Field(max_length=hm.OPTIONS_MAX_LENGTH, pattern=hm.OPTIONS_PATTERN, description=(
        "Comma-separated `key[=value]` mount options (not bind, remount, suid, dev, loop, user...); "
        "`nosuid,nodev` are always added."))] | None = None

    @field_validator("options")
    @classmethod
    def _options(cls, value: str | None) -> str | None:
        return None if value is None else hm.check_options(value)


class _Reply(BaseModel):
    model_config = ConfigDict(extra="allow")


class NodeResult(_Reply):
    success: bool
    message: str


class NodeMounts(NodeResult):
    mounts: list[str] = Field(description="Mount points under the node's mount base.")
    entries: list[dict[str, Any]] = Field(description="Each one's name, path, fs_type, source and options.")


class MountsReply(_Reply):
    manager: NodeMounts
    agents: dict[str, NodeMounts]


class MountResults(_Reply):
    manager: NodeResult
    agents: dict[str, NodeResult]


class FstabReply(_Reply):
    content: str
    node: str = Field(description="`manager` or `agent`.")
    node_id: str


@auth_required("superadmin")
async def get_fstab(request: web.Request) -> web.Response:
    p = await routing.params(request, FstabQuery)
    return web.json_response(await svc.fstab_contents(request.app[CTX], requester(request), agent_id=p.agent_id,
                                                      fstab_path=p.fstab_path))


@auth_required("superadmin")
async def list_mounts(request: web.Request) -> web.Response:
    return web.json_response(await svc.list_mounts(request.app[CTX], requester(request)))


@auth_required("superadmin")
async def mount_host(request: web.Request) -> web.Response:
    p = await routing.params(request, MountParams)
    spec = hm.MountSpec(p.name, p.fs_location, p.fs_type, p.options)
    return web.json_response(await svc.mount(request.app[CTX], requester(request), spec,
                                             scaling_group=p.scaling_group, fstab_path=p.fstab_path,
                                             edit_fstab=p.edit_fstab))


@auth_required("superadmin")
async def umount_host(request: web.Request) -> web.Response:
    p = await routing.params(request, UmountParams)
    return web.json_response(await svc.umount(request.app[CTX], requester(request), p.name,
                                              scaling_group=p.scaling_group, fstab_path=p.fstab_path,
                                              edit_fstab=p.edit_fstab))


_PROBLEMS: tuple[type[errors.ApiError], ...] = (errors.AuthorizationFailed, errors.InvalidAPIParameters)


def routes(app: web.Application) -> None:
    add, tag = routing.add, "vfolders"
    add(app, "GET", "/folders/_/fstab", get_fstab, operation_id="vfolder_get_fstab", tag=tag, query=FstabQuery,
        summary="The configured fstab of the manager's node or of an agent's (superadmin).",
        answers=(Answer(200, "The file's text and the node it is from.", FstabReply),),
        problems=(*_PROBLEMS, errors.ObjectNotFound, errors.InstanceNotAvailable, errors.VFolderOperationFailed))
    add(app, "GET", "/folders/_/mounts", list_mounts, operation_id="vfolder_list_mounts", tag=tag,
        summary="What is mounted under each node's mount base: the manager's and every ALIVE agent's (superadmin).",
        answers=(Answer(200, "Per node.", MountsReply),), problems=(errors.AuthorizationFailed,))
    add(app, "POST", "/folders/_/mounts", mount_host, operation_id="vfolder_mount_host", tag=tag, body=MountParams,
        summary="Mount a filesystem at `<mount-base>/<name>` on the manager's node and the agents (superadmin).",
        answers=(Answer(200, "What each node did (`success`, `message`).", MountResults),), problems=_PROBLEMS)
    for method, path, op in (("POST", "/folders/_/umounts", "vfolder_umount_host"),
                             ("DELETE", "/folders/_/mounts", "vfolder_umount_host_")):
        add(app, method, path, umount_host, operation_id=op, tag=tag, body=UmountParams,
            summary="Unmount `<mount-base>/<name>` on the manager's node and the agents (superadmin).",
            answers=(Answer(200, "What each node did (`success`, `message`).", MountResults),), problems=_PROBLEMS)
