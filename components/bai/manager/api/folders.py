"""/folders: virtual folders (the original's name-based API of 24.03, as the official client
24.3.11 calls it; wire/10-13 and 35): folder CRUD, trash, hosts and types, files, upload and
download tokens, usage. Thin handlers: the rules live in services/vfolders/.

Literal ``/folders/_/...`` routes are registered before the ``/folders/{name}/...`` ones so a
name never shadows them. The official client sends some GET parameters as a JSON body (``GET
/folders {"all": false}``, ``GET /folders/_/id {"name": ...}``), which the original reads; so do
we, falling back to the query string."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, RootModel, StrictBool, StrictInt

from bai.manager import errors
from bai.manager.services.schemas import parse
from bai.manager.services.vfolders import access
from bai.manager.services.vfolders import files as file_svc
from bai.manager.services.vfolders import folders as svc

from . import routing
from .keys import CTX, requester
from .middlewares import auth_required
from .routing import Answer

M = TypeVar("M", bound=BaseModel)
Name = Annotated[str, Field(min_length=1, max_length=128)]
Path_ = Annotated[str, Field(max_length=file_svc.MAX_PATH_LENGTH)]
Permission = Annotated[str, Field(json_schema_extra={"enum": ["ro", "rw", "wd"]})]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CreateParams(_Params):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra={"examples": [
        {"name": "mydata", "host": "local:volume1", "usage_mode": "general", "permission": "rw", "cloneable": False}]})
    name: Name = Field(description="1-64 characters; no control characters, slashes or reserved names.")
    host: Annotated[str, Field(max_length=128)] | None = Field(
        None, validation_alias=AliasChoices("host", "folder_host"),
        description="`<proxy>:<volume>`; default: etcd `volumes/default_host`.")
    usage_mode: Annotated[str, Field(json_schema_extra={"enum": list(svc.USAGE_MODES)})] = "general"
    permission: Permission = "rw"
    group: Annotated[str, Field(max_length=64)] | None = Field(
        None, validation_alias=AliasChoices("group", "groupId", "group_id"),
        description="A project (name or UUID): the folder becomes a project folder (admins).")
    unmanaged_path: Annotated[str, Field(max_length=512)] | None = Field(
        None, validation_alias=AliasChoices("unmanaged_path", "unmanagedPath"))
    cloneable: StrictBool = False


class ListQuery(_Params):
    group_id: uuid.UUID | None = Field(None, validation_alias=AliasChoices("group_id", "groupId"),
                                       description="Also list this project's folders only (with the user's own).")
    owner_user_email: Annotated[str, Field(max_length=64)] | None = Field(
        None, description="Admins: list this user's folders.")
    all: bool = Field(False, description="Deprecated: true is refused.")


class IdQuery(_Params):
    name: Name = Field(validation_alias=AliasChoices("name", "vfolder_name", "vfolderName"))


class HostsQuery(_Params):
    group_id: uuid.UUID | None = Field(None, validation_alias=AliasChoices("group_id", "groupId"))


class UsageQuery(_Params):
    folder_host: Annotated[str, Field(max_length=128)]
    id: uuid.UUID


class QuotaSize(_Params):
    size_bytes: StrictInt = Field(ge=0)


class QuotaParams(UsageQuery):
    input: QuotaSize


class PerfMetricQuery(_Params):
    folder_host: Annotated[str, Field(max_length=128)]


class ChangeOwnershipParams(_Params):
    vfolder: uuid.UUID
    user_email: Annotated[str, Field(min_length=1, max_length=64)]


class FolderIdParams(_Params):
    vfolder_id: uuid.UUID = Field(validation_alias=AliasChoices("vfolder_id", "vfolderId", "id"),
                                  description="The folder's ID (hex, with or without hyphens).")


class RenameParams(_Params):
    new_name: Name


class UpdateOptionsParams(_Params):
    permission: Permission | None = None
    cloneable: StrictBool | None = None


class FilesQuery(_Params):
    path: Path_ = "."


class MkdirParams(_Params):
    path: Path_ | Annotated[list[Path_], Field(min_length=1, max_length=file_svc.MAX_PATHS)]
    parents: StrictBool = True
    exist_ok: StrictBool = False


class UploadParams(_Params):
    path: Path_
    size: StrictInt = Field(ge=0, description="The file's size in bytes: the upload ends when this many arrived.")


class DownloadParams(_Params):
    path: Path_ = Field(".", validation_alias=AliasChoices("path", "file"))
    archive: StrictBool = Field(False, description="A directory as a zip archive.")


class RenameFileParams(_Params):
    target_path: Path_
    new_name: Annotated[str, Field(min_length=1, max_length=255)]
    is_dir: StrictBool = Field(False, description="Ignored (as the original).")


class MoveFileParams(_Params):
    src: Path_
    dst: Path_


class DeleteFilesParams(_Params):
    files: Annotated[list[Path_], Field(min_length=1, max_length=file_svc.MAX_DELETE_PATHS)]
    recursive: StrictBool = False


class _Reply(BaseModel):
    model_config = ConfigDict(extra="allow")


class FolderCreated(_Reply):
    id: str = Field(description="32 hex digits.")
    name: str
    quota_scope_id: str
    host: str
    usage_mode: str
    permission: str
    max_size: int
    creator: str
    ownership_type: str
    user: str | None
    group: str | None
    cloneable: bool
    status: str


class FolderEntry(_Reply):
    name: str
    id: str
    quota_scope_id: str
    host: str
    status: str
    is_owner: bool
    permission: str
    ownership_type: str


class FolderList(RootModel[list[FolderEntry]]):
    pass


class FolderInfo(_Reply):
    name: str
    id: str
    host: str
    status: str
    num_files: int
    used_bytes: int
    is_owner: bool
    permission: str


class FolderId(_Reply):
    id: str
    name: str


class Hosts(_Reply):
    default: str | None
    allowed: list[str]
    volume_info: dict[str, Any] | None = None


class FileList(_Reply):
    items: list[dict[str, Any]]
    files: str = Field(description="The legacy listing, as JSON text.")


class Token(_Reply):
    token: str = Field(description="A JWT for the storage proxy's client-facing API.")
    url: str = Field(description="`<client_api>/upload` or `<client_api>/download`.")


async def _input(request: web.Request, model: type[M]) -> M:
    """The route's declared model, read from a GET's JSON body when it has one (the official
    client sends some that way), else as routing.params reads it."""
    if request.method == "GET" and request.can_read_body:
        raw = await request.read()
        if raw.strip():
            try:
                data = json.loads(raw)
            except (ValueError, RecursionError):
                raise errors.InvalidAPIParameters("Malformed body") from None
            if not isinstance(data, dict):
                raise errors.InvalidAPIParameters("Malformed body")
            endpoint = request.app[routing.REGISTRY].of(request)
            if endpoint is None or model not in (endpoint.body, endpoint.query):
                raise RuntimeError(f"{request.path}: {model.__name__} is not the route's model")
            result: M = parse(model, {**dict(request.query), **data})
            return result
    return await routing.params(request, model)


def _name(request: web.Request) -> str:
    return request.match_info["name"]


# ------------------------------------------------------------------ folders


@auth_required()
async def create(request: web.Request) -> web.Response:
    p = await _input(request, CreateParams)
    reply = await svc.create(request.app[CTX], requester(request), svc.CreateRequest(
        name=p.name, host=p.host, usage_mode=p.usage_mode, permission=p.permission, group=p.group,
        unmanaged_path=p.unmanaged_path, cloneable=p.cloneable))
    return web.json_response(reply, status=201)


@auth_required()
async def list_folders(request: web.Request) -> web.Response:
    p = await _input(request, ListQuery)
    if p.all:
        raise errors.InvalidAPIParameters("Deprecated use of 'all' option")
    return web.json_response(await svc.list_folders(request.app[CTX], requester(request), group_id=p.group_id,
                                                    owner_user_email=p.owner_user_email))


@auth_required()
async def info(request: web.Request) -> web.Response:
    return web.json_response(await svc.info(request.app[CTX], requester(request), _name(request)))


@auth_required()
async def get_id(request: web.Request) -> web.Response:
    p = await _input(request, IdQuery)
    return web.json_response(await svc.id_by_name(request.app[CTX], requester(request), p.name))


@auth_required()
async def rename(request: web.Request) -> web.Response:
    p = await _input(request, RenameParams)
    await svc.rename(request.app[CTX], requester(request), _name(request), p.new_name)
    return web.Response(status=201)


@auth_required()
async def update_options(request: web.Request) -> web.Response:
    p = await _input(request, UpdateOptionsParams)
    await svc.update_options(request.app[CTX], requester(request), _name(request), permission=p.permission,
                             cloneable=p.cloneable)
    return web.Response(status=201)


@auth_required()
async def delete_by_name(request: web.Request) -> web.Response:
    await svc.move_to_trash(request.app[CTX], requester(request), name=_name(request))
    return web.Response(status=204)


@auth_required()
async def delete_by_id(request: web.Request) -> web.Response:
    p = await _input(request, FolderIdParams)
    await svc.move_to_trash(request.app[CTX], requester(request), folder_id=p.vfolder_id)
    return web.Response(status=204)


@auth_required()
async def restore(request: web.Request) -> web.Response:
    p = await _input(request, FolderIdParams)
    await svc.restore(request.app[CTX], requester(request), p.vfolder_id)
    return web.Response(status=204)


@auth_required()
async def delete_from_trash(request: web.Request) -> web.Response:
    p = await _input(request, FolderIdParams)
    await svc.delete_forever(request.app[CTX], requester(request), p.vfolder_id)
    return web.Response(status=204)


@auth_required()
async def purge(request: web.Request) -> web.Response:
    p = await _input(request, FolderIdParams)
    await svc.purge(request.app[CTX], requester(request), p.vfolder_id)
    return web.Response(status=204)


@auth_required()
async def hosts(request: web.Request) -> web.Response:
    p = await _input(request, HostsQuery)
    return web.json_response(await svc.hosts(request.app[CTX], requester(request), p.group_id))


@auth_required()
async def all_hosts(request: web.Request) -> web.Response:
    return web.json_response(await svc.all_hosts(request.app[CTX], requester(request)))


@auth_required()
async def allowed_types(request: web.Request) -> web.Response:
    return web.json_response(list(await access.allowed_types(request.app[CTX])))


@auth_required()
async def usage(request: web.Request) -> web.Response:
    p = await _input(request, UsageQuery)
    return web.json_response(await svc.usage(request.app[CTX], requester(request), p.folder_host, p.id,
                                             bytes_only=False))


@auth_required()
async def used_bytes(request: web.Request) -> web.Response:
    p = await _input(request, UsageQuery)
    return web.json_response(await svc.usage(request.app[CTX], requester(request), p.folder_host, p.id,
                                             bytes_only=True))


@auth_required()
async def perf_metric(request: web.Request) -> web.Response:
    p = await _input(request, PerfMetricQuery)
    return web.json_response(await svc.performance_metric(request.app[CTX], requester(request), p.folder_host))


@auth_required()
async def change_ownership(request: web.Request) -> web.Response:
    p = await _input(request, ChangeOwnershipParams)
    await svc.change_ownership(request.app[CTX], requester(request), p.vfolder, p.user_email)
    return web.json_response({})


@auth_required()
async def get_quota(request: web.Request) -> web.Response:
    p = await _input(request, UsageQuery)
    return web.json_response(await svc.folder_quota(request.app[CTX], requester(request), p.folder_host, p.id))


@auth_required()
async def set_quota(request: web.Request) -> web.Response:
    p = await _input(request, QuotaParams)
    return web.json_response(await svc.folder_quota(request.app[CTX], requester(request), p.folder_host, p.id,
                                                    p.input.size_bytes))


# ------------------------------------------------------------------ files


@auth_required()
async def list_files(request: web.Request) -> web.Response:
    p = await _input(request, FilesQuery)
    return web.json_response(await file_svc.list_files(request.app[CTX], requester(request), _name(request), p.path))


@auth_required()
async def mkdir(request: web.Request) -> web.Response:
    p = await _input(request, MkdirParams)
    status, reply = await file_svc.mkdir(request.app[CTX], requester(request), _name(request), p.path,
                                         parents=p.parents, exist_ok=p.exist_ok)
    return web.json_response(reply if reply is not None else {}, status=status if status in (200, 201, 207) else 201)


@auth_required()
async def request_upload(request: web.Request) -> web.Response:
    p = await _input(request, UploadParams)
    return web.json_response(await file_svc.request_upload(request.app[CTX], requester(request), _name(request),
                                                           p.path, p.size))


@auth_required()
async def request_download(request: web.Request) -> web.Response:
    p = await _input(request, DownloadParams)
    return web.json_response(await file_svc.request_download(request.app[CTX], requester(request), _name(request),
                                                             p.path, p.archive))


@auth_required()
async def rename_file(request: web.Request) -> web.Response:
    p = await _input(request, RenameFileParams)
    await file_svc.rename_file(request.app[CTX], requester(request), _name(request), p.target_path, p.new_name)
    return web.json_response({})


@auth_required()
async def move_file(request: web.Request) -> web.Response:
    p = await _input(request, MoveFileParams)
    await file_svc.move_file(request.app[CTX], requester(request), _name(request), p.src, p.dst)
    return web.json_response({})


@auth_required()
async def delete_files(request: web.Request) -> web.Response:
    p = await _input(request, DeleteFilesParams)
    await file_svc.delete_files(request.app[CTX], requester(request), _name(request), p.files, p.recursive)
    return web.json_response({})


_FOLDER_PROBLEMS: tuple[type[errors.ApiError], ...] = (
    errors.InvalidAPIParameters, errors.VFolderNotFound, errors.TooManyVFoldersFound, errors.VFolderPermissionError,
    errors.StorageProxyUnavailable, errors.StorageProxyFailed, errors.VFolderOperationFailed)
_WRITE_PROBLEMS = (*_FOLDER_PROBLEMS, errors.VFolderHostNotAllowed)
_NO_CONTENT = (Answer(204, "Done.", media_type=""),)
_CREATED_EMPTY = (Answer(201, "Done (empty body).", media_type=""),)


def routes(app: web.Application) -> None:
    add = routing.add
    tag = "vfolders"
    # literal paths first: /folders/{name}/... must not shadow them
    add(app, "POST", "/folders", create, operation_id="create_vfolder", tag=tag, body=CreateParams,
        summary="Create a virtual folder (a user folder, or a project folder with `group`).",
        answers=(Answer(201, "The new folder.", FolderCreated),),
        problems=(*_WRITE_PROBLEMS, errors.VFolderAlreadyExists, errors.GroupNotFound))
    add(app, "GET", "/folders", list_folders, operation_id="list_vfolders", tag=tag, query=ListQuery,
        summary="The folders the caller reaches: owned, project and shared ones (trash included).",
        answers=(Answer(200, "The folders.", FolderList),),
        problems=(errors.InvalidAPIParameters, errors.GenericForbidden, errors.ObjectNotFound))
    add(app, "DELETE", "/folders", delete_by_id, operation_id="delete_vfolder_by_id", tag=tag, body=FolderIdParams,
        summary="Move a folder (by ID) to the trash.", answers=_NO_CONTENT, problems=_WRITE_PROBLEMS)
    add(app, "POST", "/folders/purge", purge, operation_id="purge_vfolder", tag=tag, body=FolderIdParams,
        summary="Remove a deleted folder's record (admins).", answers=_NO_CONTENT,
        problems=(*_WRITE_PROBLEMS, errors.GenericForbidden))
    add(app, "POST", "/folders/restore-from-trash-bin", restore, operation_id="restore_vfolder", tag=tag,
        body=FolderIdParams, summary="Bring a folder back from the trash.", answers=_NO_CONTENT,
        problems=(*_WRITE_PROBLEMS, errors.VFolderAlreadyExists))
    add(app, "POST", "/folders/delete-from-trash-bin", delete_from_trash, operation_id="delete_vfolder_forever",
        tag=tag, body=FolderIdParams, summary="Delete a trashed folder's data for good.", answers=_NO_CONTENT,
        problems=_WRITE_PROBLEMS)
    add(app, "GET", "/folders/_/id", get_id, operation_id="vfolder_id_by_name", tag=tag, query=IdQuery,
        summary="A reachable folder's ID by name.", answers=(Answer(200, "Its ID.", FolderId),),
        problems=(errors.InvalidAPIParameters, errors.TooManyVFoldersFound))
    add(app, "GET", "/folders/_/hosts", hosts, operation_id="vfolder_hosts", tag=tag, query=HostsQuery,
        summary="Storage hosts the caller may use, the default one and their volumes' info.",
        answers=(Answer(200, "The hosts.", Hosts),), problems=(errors.InvalidAPIParameters,))
    for path, op in (("/folders/_/all-hosts", "vfolder_all_hosts"), ("/folders/_/all_hosts", "vfolder_all_hosts_")):
        add(app, "GET", path, all_hosts, operation_id=op, tag=tag, summary="Every storage host (superadmins).",
            answers=(Answer(200, "The hosts.", Hosts),), problems=(errors.GenericForbidden,))
    for path, op in (("/folders/_/allowed-types", "vfolder_allowed_types"),
                     ("/folders/_/allowed_types", "vfolder_allowed_types_")):
        add(app, "GET", path, allowed_types, operation_id=op, tag=tag,
            summary="The enabled folder ownership types (user, group).",
            answers=(Answer(200, "The types, e.g. [\"user\", \"group\"]."),))
    add(app, "GET", "/folders/_/usage", usage, operation_id="vfolder_usage", tag=tag, query=UsageQuery,
        summary="A folder's file count and bytes (superadmins).", answers=(Answer(200, "The usage."),),
        problems=(*_FOLDER_PROBLEMS, errors.GenericForbidden))
    add(app, "GET", "/folders/_/used-bytes", used_bytes, operation_id="vfolder_used_bytes", tag=tag,
        query=UsageQuery, summary="A folder's bytes (superadmins).", answers=(Answer(200, "The bytes."),),
        problems=(*_FOLDER_PROBLEMS, errors.GenericForbidden))
    add(app, "GET", "/folders/_/perf-metric", perf_metric, operation_id="vfolder_perf_metric", tag=tag,
        query=PerfMetricQuery, summary="A volume's performance metric (superadmins).",
        answers=(Answer(200, "{metric: {...}}."),),
        problems=(errors.GenericForbidden, errors.VFolderNotFound, errors.VFolderOperationFailed,
                  errors.StorageProxyUnavailable, errors.StorageProxyFailed))
    add(app, "POST", "/folders/_/change-ownership", change_ownership, operation_id="change_vfolder_ownership",
        tag=tag, body=ChangeOwnershipParams, summary="Give a user folder to another user (superadmins).",
        answers=(Answer(200, "Done: {}."),),
        problems=(*_WRITE_PROBLEMS, errors.GenericForbidden, errors.ObjectNotFound, errors.VFolderAlreadyExists))
    add(app, "GET", "/folders/_/quota", get_quota, operation_id="vfolder_get_quota", tag=tag, query=UsageQuery,
        summary="A folder's quota (its quota scope's usage and limit; owners and admins).",
        answers=(Answer(200, "used_bytes and limit_bytes."),), problems=_FOLDER_PROBLEMS)
    add(app, "POST", "/folders/_/quota", set_quota, operation_id="vfolder_set_quota", tag=tag, body=QuotaParams,
        summary="Per-folder quota: obsolete since v7 (the proxy refuses it; set the quota scope's limit).",
        answers=(Answer(200, "{size_bytes}."),), problems=_WRITE_PROBLEMS)
    # per folder
    add(app, "GET", "/folders/{name}", info, operation_id="vfolder_info", tag=tag,
        summary="A folder's details and usage.", answers=(Answer(200, "The folder.", FolderInfo),),
        problems=_FOLDER_PROBLEMS)
    add(app, "DELETE", "/folders/{name}", delete_by_name, operation_id="delete_vfolder", tag=tag,
        summary="Move a folder to the trash (owners).", answers=_NO_CONTENT, problems=_WRITE_PROBLEMS)
    add(app, "POST", "/folders/{name}/rename", rename, operation_id="rename_vfolder", tag=tag, body=RenameParams,
        summary="Rename a folder (owners).", answers=_CREATED_EMPTY,
        problems=(*_WRITE_PROBLEMS, errors.VFolderAlreadyExists))
    add(app, "POST", "/folders/{name}/update-options", update_options, operation_id="update_vfolder_options",
        tag=tag, body=UpdateOptionsParams, summary="Change a folder's permission or cloneable flag (owners).",
        answers=_CREATED_EMPTY, problems=_WRITE_PROBLEMS)
    add(app, "GET", "/folders/{name}/files", list_files, operation_id="list_vfolder_files", tag=tag,
        query=FilesQuery, summary="Entries of a directory in the folder.",
        answers=(Answer(200, "The entries.", FileList),), problems=(*_FOLDER_PROBLEMS, errors.VFolderFileNotFound))
    add(app, "POST", "/folders/{name}/mkdir", mkdir, operation_id="vfolder_mkdir", tag=tag, body=MkdirParams,
        summary="Create directories (needs rw).",
        answers=(Answer(201, "Created; `results` per path."), Answer(207, "Some paths failed; see `results`.")),
        problems=(*_WRITE_PROBLEMS, errors.VFolderFileConflict))
    add(app, "POST", "/folders/{name}/request-upload", request_upload, operation_id="vfolder_request_upload",
        tag=tag, body=UploadParams, summary="A tus upload token for a file of the folder (needs rw, upload-file).",
        answers=(Answer(200, "The token and the proxy's upload URL.", Token),),
        problems=(*_WRITE_PROBLEMS, errors.QuotaExceeded))
    add(app, "POST", "/folders/{name}/request-download", request_download, operation_id="vfolder_request_download",
        tag=tag, body=DownloadParams, summary="A download token for a file or directory (needs download-file).",
        answers=(Answer(200, "The token and the proxy's download URL.", Token),),
        problems=(*_WRITE_PROBLEMS, errors.VFolderFileNotFound))
    for path, op in (("/folders/{name}/rename-file", "vfolder_rename_file"),
                     ("/folders/{name}/rename_file", "vfolder_rename_file_")):
        add(app, "POST", path, rename_file, operation_id=op, tag=tag, body=RenameFileParams,
            summary="Rename a file or directory (needs rw).", answers=(Answer(200, "Done: {}."),),
            problems=(*_WRITE_PROBLEMS, errors.VFolderFileNotFound, errors.VFolderFileConflict))
    add(app, "POST", "/folders/{name}/move-file", move_file, operation_id="vfolder_move_file", tag=tag,
        body=MoveFileParams, summary="Move a file or directory inside the folder (needs rw).",
        answers=(Answer(200, "Done: {}."),),
        problems=(*_WRITE_PROBLEMS, errors.VFolderFileNotFound, errors.VFolderFileConflict))
    for method, path, op in (("POST", "/folders/{name}/delete-files", "vfolder_delete_files"),
                             ("DELETE", "/folders/{name}/delete-files", "vfolder_delete_files_"),
                             ("DELETE", "/folders/{name}/delete_files", "vfolder_delete_files__")):
        add(app, method, path, delete_files, operation_id=op, tag=tag, body=DeleteFilesParams,
            summary="Delete files or directories (needs rw; `recursive` for non-empty directories).",
            answers=(Answer(200, "Done: {}."),), problems=(*_WRITE_PROBLEMS, errors.VFolderFileNotFound))
