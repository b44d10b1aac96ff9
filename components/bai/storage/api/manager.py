"""The manager-facing API (the original's paths and replies), authenticated with the shared
secret in ``X-BackendAI-Storage-Auth-Token``."""

from __future__ import annotations

import asyncio
import hmac
import os
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from .. import __version__, tokens
from ..errors import FileNotFound, InvalidParams, StorageError, Unauthorized
from ..paths import parse_relpath
from ..vfid import QuotaScopeID, VFolderID
from ..volume import Volume
from .common import CTX, Handler, ProxyContext, params, problem_middleware

AUTH_HEADER = "X-BackendAI-Storage-Auth-Token"
OPEN_PATHS = frozenset({"/", "/status"})
MAX_JSON_BODY = 1024 * 1024
FETCH_CHUNK = 256 * 1024


class _Params(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class VolumeParams(_Params):
    volume: str = Field(max_length=255)


class QuotaScopeParams(VolumeParams):
    qsid: str = Field(max_length=128)
    options: dict[str, Any] | None = None
    extra_args: dict[str, Any] | None = None


class FolderParams(VolumeParams):
    vfid: str = Field(max_length=128)


class CreateFolderParams(FolderParams):
    options: dict[str, Any] | None = None


class CloneParams(_Params):
    src_volume: str
    src_vfid: str
    dst_volume: str
    dst_vfid: str
    options: dict[str, Any] | None = None


class MountParams(FolderParams):
    subpath: str = "."


class MetadataParams(FolderParams):
    payload: Any = None


class LegacyQuotaParams(FolderParams):
    size_bytes: int | None = None


class MkdirParams(FolderParams):
    relpath: str | list[str] = Field(max_length=50)
    parents: bool = True
    exist_ok: bool = False


class ListParams(FolderParams):
    relpath: str = "."


class RenameParams(FolderParams):
    relpath: str
    new_name: str
    is_dir: bool = False  # ignored, as the original since 22.03


class MoveParams(FolderParams):
    src_relpath: str
    dst_relpath: str


class FetchParams(FolderParams):
    relpath: str


class DeleteParams(FolderParams):
    relpaths: list[str] = Field(max_length=1000)
    recursive: bool = False


class DownloadParams(FolderParams):
    relpath: str = "."
    archive: bool = False
    unmanaged_path: str | None = None


class UploadParams(FolderParams):
    relpath: str
    size: int = Field(ge=0)


def _ctx(request: web.Request) -> ProxyContext:
    return request.app[CTX]


def _limit_of(options: dict[str, Any] | None, *keys: str) -> int | None:
    for key in keys:
        value = (options or {}).get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidParams(f"options.{key} must be a non-negative integer of bytes")
            return value or None
    return None


def _folder(request: web.Request, p: FolderParams) -> tuple[Volume, VFolderID]:
    return _ctx(request).volumes.get(p.volume), VFolderID.parse(p.vfid)


def _no_content() -> web.Response:
    return web.Response(status=204)


async def status(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "type": "manager-facing", "storage-proxy": __version__})


async def volumes(request: web.Request) -> web.Response:
    return web.json_response({"volumes": [v.info() for v in _ctx(request).volumes.volumes.values()]})


async def hwinfo(request: web.Request) -> web.Response:
    p = await params(request, VolumeParams)
    volume = _ctx(request).volumes.get(p.volume)
    healthy = await asyncio.to_thread(os.access, volume.root, os.W_OK | os.X_OK)
    return web.json_response({"status": "healthy" if healthy else "unavailable",
                              "status_info": None if healthy else "the volume path is not writable",
                              "metadata": {}})


async def performance_metric(request: web.Request) -> web.Response:
    p = await params(request, VolumeParams)
    _ctx(request).volumes.get(p.volume)
    # A plain filesystem has no metric source; -1 is the original's "unknown".
    unknown = {k: -1 for k in ("iops_read", "iops_write", "io_bytes_read", "io_bytes_write",
                                "io_usec_read", "io_usec_write")}
    return web.json_response({"metric": unknown})


async def create_quota_scope(request: web.Request) -> web.Response:
    p = await params(request, QuotaScopeParams)
    volume = _ctx(request).volumes.get(p.volume)
    await volume.create_quota_scope(QuotaScopeID.parse(p.qsid), _limit_of(p.options, "limit_bytes"))
    return _no_content()


async def get_quota_scope(request: web.Request) -> web.Response:
    p = await params(request, QuotaScopeParams)
    volume = _ctx(request).volumes.get(p.volume)
    return web.json_response(await volume.describe_quota_scope(QuotaScopeID.parse(p.qsid)))


async def update_quota_scope(request: web.Request) -> web.Response:
    p = await params(request, QuotaScopeParams)
    volume = _ctx(request).volumes.get(p.volume)
    await volume.update_quota_scope(QuotaScopeID.parse(p.qsid), _limit_of(p.options, "limit_bytes"))
    return _no_content()


async def unset_quota(request: web.Request) -> web.Response:
    p = await params(request, QuotaScopeParams)
    volume = _ctx(request).volumes.get(p.volume)
    await volume.unset_quota(QuotaScopeID.parse(p.qsid))
    return _no_content()


async def create_folder(request: web.Request) -> web.Response:
    p = await params(request, CreateFolderParams)
    volume, vfid = _folder(request, p)
    limit = _limit_of(p.options, "initial_max_size_for_quota_scope", "initial_max_size")
    await volume.create_folder(vfid, limit)
    return _no_content()


async def delete_folder(request: web.Request) -> web.Response:
    p = await params(request, FolderParams)
    volume, vfid = _folder(request, p)
    await volume.delete_folder(vfid)
    return _no_content()


async def clone_folder(request: web.Request) -> web.Response:
    p = await params(request, CloneParams)
    pool = _ctx(request).volumes
    src_volume, dst_volume = pool.get(p.src_volume), pool.get(p.dst_volume)
    await src_volume.clone_folder(VFolderID.parse(p.src_vfid), dst_volume, VFolderID.parse(p.dst_vfid))
    return _no_content()


async def mount(request: web.Request) -> web.Response:
    p = await params(request, MountParams)
    volume, vfid = _folder(request, p)
    try:
        subpath = parse_relpath(p.subpath, "subpath", allow_upload_dir=False)
    except InvalidParams:
        raise InvalidParams("Invalid vfolder subpath") from None
    return web.json_response({"path": str(volume.mount_path(vfid, subpath))})


async def get_metadata(request: web.Request) -> web.Response:
    p = await params(request, FolderParams)
    volume, vfid = _folder(request, p)
    return web.json_response(volume.get_metadata(vfid))


async def set_metadata(request: web.Request) -> web.Response:
    p = await params(request, MetadataParams)
    volume, vfid = _folder(request, p)
    volume.set_metadata(vfid, p.payload)
    return _no_content()


async def folder_usage(request: web.Request) -> web.Response:
    p = await params(request, FolderParams)
    volume, vfid = _folder(request, p)
    usage = await volume.folder_usage(vfid)
    return web.json_response({"file_count": usage.file_count, "used_bytes": usage.used_bytes})


async def folder_used_bytes(request: web.Request) -> web.Response:
    p = await params(request, FolderParams)
    volume, vfid = _folder(request, p)
    usage = await volume.folder_usage(vfid)
    return web.json_response({"used_bytes": usage.used_bytes})


async def fs_usage(request: web.Request) -> web.Response:
    p = await params(request, VolumeParams)
    return web.json_response(_ctx(request).volumes.get(p.volume).fs_usage())


async def get_legacy_quota(request: web.Request) -> web.Response:
    """Per-folder quota is obsolete since v7: the folder's quota scope answers."""
    p = await params(request, LegacyQuotaParams)
    volume, vfid = _folder(request, p)
    volume.existing_folder(vfid)
    if vfid.quota_scope is None:
        return web.json_response({"used_bytes": None, "limit_bytes": None})
    return web.json_response(await volume.describe_quota_scope(vfid.quota_scope))


async def set_legacy_quota(request: web.Request) -> web.Response:
    await params(request, LegacyQuotaParams)
    raise InvalidParams("per-folder quota is obsolete; set the limit of the folder's quota scope")


async def mkdir(request: web.Request) -> web.Response:
    p = await params(request, MkdirParams)
    volume, vfid = _folder(request, p)
    raw = [p.relpath] if isinstance(p.relpath, str) else p.relpath
    relpaths = [parse_relpath(r, "relpath", allow_root=False) for r in raw]
    results: list[dict[str, Any]] = []
    first_error: Exception | None = None
    for rel, text in zip(relpaths, raw, strict=True):
        try:
            await volume.mkdir(vfid, rel, p.parents, p.exist_ok)
            results.append({"relpath": text, "status": "success", "msg": None})
        except (StorageError, OSError) as exc:  # reported per path; a single path answers its own error
            first_error = first_error or exc
            results.append({"relpath": text, "status": "failed", "msg": str(exc)})
    failed = sum(r["status"] == "failed" for r in results)
    if failed and len(results) == 1 and first_error is not None:
        raise first_error
    return web.json_response({"results": results}, status=207 if failed else 201)


async def list_files(request: web.Request) -> web.Response:
    p = await params(request, ListParams)
    volume, vfid = _folder(request, p)
    rel = parse_relpath(p.relpath, "relpath")
    items = await volume.list_files(vfid, rel, _ctx(request).config.storage_proxy.scandir_limit)
    return web.json_response({"items": [i.to_json() for i in items]})


async def rename_file(request: web.Request) -> web.Response:
    p = await params(request, RenameParams)
    volume, vfid = _folder(request, p)
    await volume.rename(vfid, parse_relpath(p.relpath, "relpath", allow_root=False), p.new_name)
    return _no_content()


async def move_file(request: web.Request) -> web.Response:
    p = await params(request, MoveParams)
    volume, vfid = _folder(request, p)
    await volume.move(vfid, parse_relpath(p.src_relpath, "src_relpath", allow_root=False),
                      parse_relpath(p.dst_relpath, "dst_relpath", allow_root=False))
    return _no_content()


async def fetch_file(request: web.Request) -> web.StreamResponse:
    p = await params(request, FetchParams)
    volume, vfid = _folder(request, p)
    root = volume.existing_folder(vfid)
    target = volume.readable_file(root, parse_relpath(p.relpath, "relpath", allow_root=False))
    if not target.is_file():
        raise FileNotFound("not a regular file")
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as src:
        resp.content_length = os.fstat(src.fileno()).st_size
        await resp.prepare(request)
        while chunk := src.read(FETCH_CHUNK):
            await resp.write(chunk)
    await resp.write_eof()
    return resp


async def delete_files(request: web.Request) -> web.Response:
    p = await params(request, DeleteParams)
    volume, vfid = _folder(request, p)
    rels = [parse_relpath(r, "relpaths", allow_root=False, allow_upload_dir=True) for r in p.relpaths]
    await volume.delete_files(vfid, rels, p.recursive)
    return web.json_response({"status": "ok"})


async def create_download_session(request: web.Request) -> web.Response:
    p = await params(request, DownloadParams)
    ctx = _ctx(request)
    volume, vfid = _folder(request, p)
    rel = parse_relpath(p.relpath, "relpath")
    if p.unmanaged_path is None:
        volume.existing_folder(vfid)
    elif not os.path.isabs(p.unmanaged_path):
        raise InvalidParams("unmanaged_path must be absolute")
    claims = tokens.DownloadClaims(volume=p.volume, vfid=str(vfid), relpath=str(rel), archive=p.archive,
                                   unmanaged_path=p.unmanaged_path)
    cfg = ctx.config.storage_proxy
    return web.json_response({"token": tokens.mint(claims, cfg.secret, cfg.session_expire)})


async def create_upload_session(request: web.Request) -> web.Response:
    p = await params(request, UploadParams)
    ctx = _ctx(request)
    volume, vfid = _folder(request, p)
    rel = parse_relpath(p.relpath, "relpath", allow_root=False)
    session = await ctx.uploads.create(volume, vfid, rel, p.size)
    claims = tokens.UploadClaims(volume=p.volume, vfid=str(vfid), relpath=str(rel), session=session, size=p.size)
    cfg = ctx.config.storage_proxy
    return web.json_response({"token": tokens.mint(claims, cfg.secret, cfg.session_expire)})


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not (request.method == "GET" and request.path in OPEN_PATHS):
        expected = _ctx(request).config.api.manager.secret.encode()
        given = request.headers.get(AUTH_HEADER, "").encode()
        if not hmac.compare_digest(given, expected):
            raise Unauthorized(f"a valid {AUTH_HEADER} header is required")
    return await handler(request)


def create_app(ctx: ProxyContext) -> web.Application:
    app = web.Application(middlewares=[problem_middleware, auth_middleware], client_max_size=MAX_JSON_BODY)
    app[CTX] = ctx
    routes: list[tuple[str, str, Handler]] = [
        ("GET", "/", status),
        ("GET", "/status", status),
        ("GET", "/volumes", volumes),
        ("GET", "/volume/hwinfo", hwinfo),
        ("GET", "/volume/performance-metric", performance_metric),
        ("POST", "/quota-scope", create_quota_scope),
        ("GET", "/quota-scope", get_quota_scope),
        ("PATCH", "/quota-scope", update_quota_scope),
        ("DELETE", "/quota-scope/quota", unset_quota),
        ("POST", "/folder/create", create_folder),
        ("POST", "/folder/delete", delete_folder),
        ("POST", "/folder/clone", clone_folder),
        ("GET", "/folder/mount", mount),
        ("GET", "/folder/metadata", get_metadata),
        ("POST", "/folder/metadata", set_metadata),
        ("GET", "/volume/quota", get_legacy_quota),
        ("PATCH", "/volume/quota", set_legacy_quota),
        ("GET", "/folder/usage", folder_usage),
        ("GET", "/folder/used-bytes", folder_used_bytes),
        ("GET", "/folder/fs-usage", fs_usage),
        ("POST", "/folder/file/mkdir", mkdir),
        ("POST", "/folder/file/list", list_files),
        ("POST", "/folder/file/rename", rename_file),
        ("POST", "/folder/file/move", move_file),
        ("POST", "/folder/file/fetch", fetch_file),
        ("POST", "/folder/file/delete", delete_files),
        ("POST", "/folder/file/download", create_download_session),
        ("POST", "/folder/file/upload", create_upload_session),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    return app

