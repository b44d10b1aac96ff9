"""The client-facing API: tus 1.0.0 uploads and downloads, authorised by the JWTs the
manager-facing API mints; CORS wide open as the original (the token is the authorisation)."""

from __future__ import annotations

import os
import stat
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from .. import __version__, tokens
from ..archive import stream_directory
from ..errors import FileNotFound, InvalidParams, NoSuchUploadSession, VFolderNotFound
from ..paths import confined, open_dir, parse_relpath
from ..uploads import UploadTarget
from ..vfid import VFolderID
from .common import CORS, CORS_ENABLED, CTX, TUS_HEADERS, ProxyContext, client_went_away, problem_middleware

TUS_VERSION = "1.0.0"
READ_CHUNK = 256 * 1024
UPLOAD_READ_CHUNK = 256 * 1024


def _ctx(request: web.Request) -> ProxyContext:
    return request.app[CTX]


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "false").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise InvalidParams(f"{name} must be a boolean")


def _attachment(name: str) -> str:
    ascii_name = name.encode("ascii", errors="ignore").decode("ascii").replace('"', r"\"")
    encoded = urllib.parse.quote(name, encoding="utf-8")
    return f"attachment;filename=\"{ascii_name}\"; filename*=UTF-8''{encoded}"


def _dst_dir(request: web.Request) -> PurePosixPath:
    return parse_relpath(request.query.get("dst_dir"), "dst_dir")


async def status(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "type": "client-facing", "storage-proxy": __version__})


class _FdFileResponse(web.FileResponse):
    """Serves a file opened through ``/proc/self/fd``: the very file that was vetted, even if a
    symlink is swapped into its path afterwards; the descriptor is closed once served."""

    def __init__(self, fd: int, **kwargs: Any) -> None:
        super().__init__(Path(f"/proc/self/fd/{fd}"), **kwargs)
        self._fd = fd

    async def prepare(self, request: web.BaseRequest) -> Any:
        try:
            return await super().prepare(request)
        finally:
            os.close(self._fd)


def _open_vetted(root: Path, rel: PurePosixPath) -> int:
    """A descriptor of regular file ``root/rel``, reached without following any symlink."""
    with open_dir(root, rel.parent, create=False) as dir_fd:
        return os.open(rel.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


@dataclass(frozen=True)
class _Vetted:
    """What a download token leads to: a directory, or a regular file already opened."""

    path: Path
    fd: int | None  # None for a directory
    st: os.stat_result | None


def _vet_download(ctx: ProxyContext, claims: tokens.DownloadClaims, dst_dir: PurePosixPath) -> _Vetted:
    """Resolve, confine and open what the token names."""
    volume = ctx.volumes.get(claims.volume)
    if claims.unmanaged_path is not None:
        root = Path(os.path.realpath(claims.unmanaged_path))
    else:
        try:
            root = Path(os.path.realpath(volume.existing_folder(VFolderID.parse(claims.vfid))))
        except VFolderNotFound:
            raise FileNotFound() from None
    target = confined(root, dst_dir / parse_relpath(claims.relpath, "relpath"))
    if not os.path.lexists(target):
        raise FileNotFound()
    if target.is_dir():
        return _Vetted(target, None, None)
    try:
        fd = _open_vetted(root, PurePosixPath(target.relative_to(root).as_posix()))
    except FileNotFoundError:
        raise FileNotFound() from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise InvalidParams("The file is not a regular file.")
    return _Vetted(target, fd, st)


async def download(request: web.Request) -> web.StreamResponse:
    ctx = _ctx(request)
    claims = tokens.verify(request.query.get("token"), ctx.config.storage_proxy.secret, tokens.DownloadClaims)
    archive = _flag(request, "archive") or claims.archive
    no_cache = _flag(request, "no_cache")
    # A few metadata calls: inline costs less than a thread hop; the bytes go by sendfile.
    vetted = _vet_download(ctx, claims, _dst_dir(request))
    if vetted.fd is None or vetted.st is None:
        if not archive:
            raise InvalidParams("The file is not a regular file.")
        return await _download_archive(request, vetted.path, (vetted.path.name or "archive") + ".zip")
    if request.method == "HEAD":
        os.close(vetted.fd)
        return _head_download(request, vetted.st)
    headers = {hdrs.CONTENT_TYPE: "application/octet-stream", hdrs.CONTENT_DISPOSITION: _attachment(vetted.path.name)}
    if no_cache:
        headers[hdrs.CACHE_CONTROL] = "no-store"
    return _FdFileResponse(vetted.fd, headers=headers, chunk_size=READ_CHUNK)


def _head_download(request: web.Request, st: os.stat_result) -> web.Response:
    mtime = datetime.fromtimestamp(st.st_mtime, UTC)
    if_range = request.if_range
    # The original's quirk, kept: 206 when the file has not changed since If-Range.
    status = 206 if if_range is not None and st.st_mtime <= if_range.timestamp() else 200
    return web.Response(status=status, headers={
        hdrs.ACCEPT_RANGES: "bytes",
        hdrs.CONTENT_LENGTH: str(st.st_size),
        hdrs.LAST_MODIFIED: mtime.strftime("%a, %d %b %Y %H:%M:%S GMT"),
    })


async def _download_archive(request: web.Request, directory: Path, filename: str) -> web.StreamResponse:
    resp = web.StreamResponse(headers={hdrs.CONTENT_TYPE: "application/zip",
                                       hdrs.CONTENT_DISPOSITION: _attachment(filename)})
    if request.method == "HEAD":
        return resp
    await resp.prepare(request)
    async for chunk in stream_directory(directory):
        await resp.write(chunk)
    await resp.write_eof()
    return resp


def _tus_headers(ctx: ProxyContext) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, "Tus-Version": TUS_VERSION,
            "Tus-Max-Size": str(ctx.config.storage_proxy.max_upload_size)}


async def tus_options(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={**_tus_headers(_ctx(request)), **CORS,
                                             "Access-Control-Allow-Headers": TUS_HEADERS,
                                             "Access-Control-Expose-Headers": TUS_HEADERS})


def _upload_target(request: web.Request) -> UploadTarget:
    ctx = _ctx(request)
    claims = tokens.verify(request.query.get("token"), ctx.config.storage_proxy.secret, tokens.UploadClaims)
    volume = ctx.volumes.get(claims.volume)
    vfid = VFolderID.parse(claims.vfid)
    try:
        root = Path(os.path.realpath(volume.existing_folder(vfid)))
    except VFolderNotFound:
        raise NoSuchUploadSession("the folder of this upload is gone") from None
    relpath = _dst_dir(request) / parse_relpath(claims.relpath, "relpath", allow_root=False)
    confined(root, relpath.parent)  # refuse early; placing it walks without following links
    return UploadTarget(volume, vfid, root, relpath, claims.session, claims.size)


async def tus_check_session(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    target = _upload_target(request)
    offset = ctx.uploads.offset(target)
    return web.Response(headers={**_tus_headers(ctx), "Upload-Offset": str(offset),
                                 "Upload-Length": str(target.size), "Cache-Control": "no-store"})


def _int_header(request: web.Request, name: str) -> int | None:
    raw = request.headers.get(name)
    if raw is None:
        return None
    if not raw.strip().isdigit():
        raise InvalidParams(f"{name} must be a non-negative integer")
    return int(raw)


async def tus_upload_part(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    target = _upload_target(request)
    client_offset = _int_header(request, "Upload-Offset")
    length = request.content_length

    async def body() -> AsyncIterator[bytes]:
        async for piece in request.content.iter_chunked(UPLOAD_READ_CHUNK):
            yield piece

    try:
        offset = await ctx.uploads.append(target, client_offset, length, body())
    except (ConnectionResetError, HttpProcessingError):
        # What arrived is kept; nobody may be listening, but say so clearly if someone is.
        client_went_away(request)
        raise InvalidParams("the request body ended early; HEAD the upload for the offset to resume from") from None
    return web.Response(status=204, headers={**_tus_headers(ctx), "Upload-Offset": str(offset)})


@web.middleware
async def cors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    resp: web.StreamResponse = await handler(request)
    if not resp.prepared:
        for key, value in CORS.items():
            resp.headers.setdefault(key, value)
    return resp


def create_app(ctx: ProxyContext) -> web.Application:
    app = web.Application(middlewares=[cors_middleware, problem_middleware])
    app[CTX] = ctx
    app[CORS_ENABLED] = True
    app.router.add_route("GET", "/", status)
    app.router.add_get("/download", download)  # and HEAD
    app.router.add_route("OPTIONS", "/upload", tus_options)
    app.router.add_route("HEAD", "/upload", tus_check_session)
    app.router.add_route("PATCH", "/upload", tus_upload_part)
    return app
