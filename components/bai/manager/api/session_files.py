"""/session/{ref}/interrupt, /complete, /upload, /download, /download_single, /files.

Wire shapes are the original's (see the official client's ``ComputeSession``): an upload is
``multipart/form-data`` with one part per file (field ``src``, the part's filename being the path
under ``/home/work``); a download answers ``multipart/mixed`` whose parts are each a tar archive
of one path (a file, or a directory with everything below it, symlinks as link entries);
``/files`` answers ``{"files": "<JSON text>", "errors", "abspath"}``. Paths outside
``/home/work`` are refused with 400 before any byte moves; an upload is bounded by
``[manager] max-request-size`` in all and ``max-upload-file-size`` per file (413), at most 20
files; each file lands whole or not at all.
"""

from __future__ import annotations

import json
import secrets
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

from aiohttp import BodyPartReader, web
from pydantic import BaseModel, ConfigDict, Field

from bai.manager import errors
from bai.manager.services import schemas
from bai.manager.services.sessions.files import (
    MAX_DOWNLOAD_FILES,
    MAX_UPLOAD_FILES,
    SessionFiles,
    TransferFailed,
    check_path,
)

from . import routing
from .keys import CTX, requester
from .middlewares import auth_required
from .replies import CompletionResult, _Reply
from .routing import Answer

#: Bytes read from a client's upload at a time.
_CHUNK = 2**20


class CompleteRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    code: str = Field("", max_length=2**20)
    options: dict[str, Any] = Field(default_factory=dict, description="{row, col, line, post}")


class DownloadRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    files: list[str] = Field(min_length=1, max_length=MAX_DOWNLOAD_FILES,
                             description="Paths under /home/work (relative ones are taken from there).")


class DownloadSingleRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    file: str = Field(min_length=1, max_length=4096)


class FilesQuery(schemas.SessionQuery):
    path: str = Field(".", max_length=4096, description="A directory under /home/work (also read from a JSON "
                                                        "body, as the official client sends it on this GET).")


class Completed(_Reply):
    result: CompletionResult


class FileList(_Reply):
    files: str = Field(description="A JSON text: [{filename, mode, size, ctime, mtime, atime}].")
    errors: str
    abspath: str


def _files(request: web.Request) -> SessionFiles:
    return SessionFiles(request.app[CTX])


async def _route(request: web.Request, q: schemas.SessionQuery | None = None) -> Any:
    """The session's main kernel; ``owner_access_key`` from the validated query string."""
    q = q if q is not None else routing.query(request, schemas.SessionQuery)
    return await _files(request).route(requester(request), request.match_info["ref"], q.owner_access_key)


@auth_required()
async def interrupt(request: web.Request) -> web.Response:
    await _files(request).interrupt(await _route(request))
    return web.Response(status=204)


@auth_required()
async def complete(request: web.Request) -> web.Response:
    req = await routing.params(request, CompleteRequest)
    result = await _files(request).complete(await _route(request), req.code, req.options)
    return web.json_response({"result": result})


@auth_required()
async def list_files(request: web.Request) -> web.Response:
    q = routing.query(request, FilesQuery)
    path = q.path
    if request.can_read_body:  # the official client sends {"path"} as a JSON body on this GET
        try:
            body = json.loads(await request.read() or b"{}")
        except (ValueError, RecursionError):
            raise errors.InvalidAPIParameters("Malformed body") from None
        if not isinstance(body, dict) or not isinstance(body.get("path", path), str):
            raise errors.InvalidAPIParameters("path must be a string")
        path = body.get("path", path)
    result = await _files(request).list(await _route(request, q), path or ".")
    return web.json_response(result)


async def _part_chunks(part: BodyPartReader, file_limit: int, budget: list[int]) -> AsyncIterator[bytes]:
    """The part's bytes; RequestTooLarge past the per-file limit or the request's budget."""
    size = 0
    while chunk := await part.read_chunk(_CHUNK):
        size += len(chunk)
        budget[0] -= len(chunk)
        if size > file_limit:
            raise errors.RequestTooLarge(f"{part.filename}: a file may have at most {file_limit} bytes")
        if budget[0] < 0:
            raise errors.RequestTooLarge("the upload is larger than the request size limit")
        yield chunk


@auth_required()
async def upload(request: web.Request) -> web.Response:
    cfg = request.app[CTX].config.manager
    if request.content_length is not None and request.content_length > cfg.max_request_size:
        raise errors.RequestTooLarge(f"the request may have at most {cfg.max_request_size} bytes")
    if not request.content_type.startswith("multipart/"):
        raise errors.InvalidAPIParameters("Upload files as multipart/form-data (one part per file).")
    svc = _files(request)
    route = await _route(request)
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError) as exc:
        raise errors.InvalidAPIParameters(f"Malformed multipart body: {exc}") from None
    budget, count = [cfg.max_request_size], 0
    while True:
        try:
            part = await reader.next()
        except ValueError as exc:
            raise errors.InvalidAPIParameters(f"Malformed multipart body: {exc}") from None
        if part is None:
            break
        if not isinstance(part, BodyPartReader) or not part.filename:
            raise errors.InvalidAPIParameters("Each part must be a file with a filename (its path).")
        count += 1
        if count > MAX_UPLOAD_FILES:
            raise errors.InvalidAPIParameters(f"Too many files (at most {MAX_UPLOAD_FILES}).")
        chunks = _part_chunks(part, cfg.max_upload_file_size, budget)
        errors_seen: list[errors.ApiError] = []

        async def watched(chunks: AsyncIterator[bytes] = chunks, seen: list[errors.ApiError] = errors_seen
                          ) -> AsyncIterator[bytes]:
            try:
                async for chunk in chunks:
                    yield chunk
            except errors.ApiError as exc:
                seen.append(exc)  # the agent client only sees a body that broke off
                raise

        try:
            # aiohttp's FormData (the official client's) percent-encodes the filename: "a%2Fb.txt".
            await svc.upload(route, check_path(urllib.parse.unquote(part.filename)), watched())
        except Exception:
            if errors_seen:  # what broke the body off, rather than how the agent saw it
                raise errors_seen[0] from None
            raise
        if errors_seen:
            raise errors_seen[0]
    if count == 0:
        raise errors.InvalidAPIParameters("No file to upload.")
    return web.Response(status=204)


async def _download_paths(request: web.Request, paths: list[str]) -> web.StreamResponse:
    svc = _files(request)
    route = await _route(request)
    for path in paths:
        check_path(path)
    boundary = secrets.token_hex(16)
    async with AsyncExitStack() as stack:
        # Every file is opened first: a refused or missing one is a 4xx before any byte goes out.
        opened = [await stack.enter_async_context(svc.download(route, path, archive=True)) for path in paths]
        resp = web.StreamResponse(headers={"Content-Type": f"multipart/mixed; boundary={boundary}"})
        await resp.prepare(request)
        try:
            for _size, chunks in opened:
                await resp.write(f"--{boundary}\r\nContent-Type: application/x-tar\r\nContent-Encoding: identity\r\n"
                                 f"Content-Transfer-Encoding: binary\r\n\r\n".encode())
                async for chunk in chunks:  # a whole tar archive, as the agent sends it
                    await resp.write(chunk)
                await resp.write(b"\r\n")
            await resp.write(f"--{boundary}--\r\n".encode())
        except TransferFailed:
            if request.transport is not None:
                request.transport.abort()  # a short archive must never look complete
            return resp
        await resp.write_eof()
        return resp


@auth_required()
async def download(request: web.Request) -> web.StreamResponse:
    if request.method == "GET":
        req = DownloadRequest.model_validate({"files": request.query.getall("files", [])}) \
            if request.query.getall("files", []) else None
        if req is None:
            raise errors.InvalidAPIParameters("files: give at least one path")
    else:
        req = await routing.params(request, DownloadRequest)
    return await _download_paths(request, req.files)


@auth_required()
async def download_single(request: web.Request) -> web.StreamResponse:
    req = await routing.params(request, DownloadSingleRequest)
    svc = _files(request)
    route = await _route(request)
    async with svc.download(route, check_path(req.file)) as (size, chunks):
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = size
        await resp.prepare(request)
        try:
            async for chunk in chunks:
                await resp.write(chunk)
        except TransferFailed:
            if request.transport is not None:
                request.transport.abort()
            return resp
        await resp.write_eof()
        return resp


_REF = (errors.SessionNotFound, errors.TooManySessionsMatched, errors.InsufficientPrivilege,
        errors.InvalidAPIParameters)
_FILE = (*_REF, errors.ObjectNotFound, errors.RequestTooLarge, errors.RateLimitExceeded)


def routes(app: web.Application) -> None:
    q = schemas.SessionQuery
    routing.add(app, "POST", "/session/{ref}/interrupt", interrupt, operation_id="interrupt_session", tag="session",
                summary="Interrupt the code running in the session (SIGINT; the run ends with KeyboardInterrupt).",
                query=q, answers=(Answer(204, "Interrupted (or nothing was running).", media_type=""),),
                problems=_REF)
    routing.add(app, "POST", "/session/{ref}/complete", complete, operation_id="complete_code", tag="session",
                summary="Auto-completion candidates for the word before the cursor, from the session's namespace.",
                query=q, body=CompleteRequest, answers=(Answer(200, "The candidates.", Completed),), problems=_REF)
    routing.add(app, "POST", "/session/{ref}/upload", upload, operation_id="upload_files", tag="session",
                summary="Upload files into /home/work (multipart/form-data, one part per file, its filename the "
                        "path; at most 20 files).", query=q,
                answers=(Answer(204, "Uploaded.", media_type=""),), problems=_FILE)
    for method in ("POST", "GET"):
        routing.add(app, method, "/session/{ref}/download", download, operation_id=f"download_files_{method.lower()}",
                    tag="session", summary="Download files or directories from /home/work: multipart/mixed, one tar "
                                           "archive per path (at most 5).", query=q, body=DownloadRequest if method == "POST" else None,
                    answers=(Answer(200, "The files.", media_type="multipart/mixed"),), problems=_FILE)
    routing.add(app, "POST", "/session/{ref}/download_single", download_single, operation_id="download_single_file",
                tag="session", summary="Download one file from /home/work, as raw bytes.", query=q,
                body=DownloadSingleRequest,
                answers=(Answer(200, "The file.", media_type="application/octet-stream"),), problems=_FILE)
    routing.add(app, "GET", "/session/{ref}/files", list_files, operation_id="list_session_files", tag="session",
                summary="List a directory under /home/work.", query=FilesQuery,
                answers=(Answer(200, "The directory's entries.", FileList),), problems=_FILE)
