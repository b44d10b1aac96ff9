"""Files in and out of a kernel, through its runner (the agent's side of :mod:`bai.kernel.files`).

The agent never touches the container's files itself: the runner does the I/O inside the
container, as the kernel's user, confined to ``/home/work`` and following no symlink. Here we
only move bytes between the manager and the runner connection, bounded on both sides: uploads
are sent as the manager's body arrives (the connection's drain is the back-pressure), downloads
arrive into a small queue that the read loop waits on, so a slow manager slows the runner down
rather than filling the agent's memory.

HTTP (same bearer secret as the RPC, see :func:`add_routes`):

* ``POST /files/upload?kernel_id=&path=`` with the file's bytes as the body (chunked is fine)
  -> ``{"size"}`` once the file is in place; a body that breaks off leaves nothing.
* ``POST /files/download`` ``{"kernel_id", "path", "max_size", "archive"}`` -> ``200`` with the
  bytes and ``X-Bai-File-Size``; a failure after the first byte aborts the connection. With
  ``archive: true`` the answer is always a tar: of the directory (built by the runner) or of the
  one file (its header added here).
* RPC ``list_files`` ``{"kernel_id", "path"}`` -> ``{"files": [...], "abspath"}``.

Refusals map to agent errors: ``refused`` 400, ``not-found`` 404, ``too-large`` 413, ``busy`` 429.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import secrets
import tarfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from bai.common.agent_rpc import (
    AgentError,
    AgentFailure,
    AgentTimeout,
    DownloadFileRequest,
    GetCompletionsRequest,
    InvalidInput,
    ListFilesRequest,
    UploadFileQuery,
)
from bai.kernel.files import UPLOAD_CHUNK
from bai.kernel.protocol import encode_binary_frame, encode_frame

#: How long the runner may take to answer a file request.
REPLY_TIMEOUT = 30.0
#: Download chunks queued between the runner connection and the HTTP response.
QUEUE_CHUNKS = 8
#: How long a download waits for its next chunk (the runner stopped sending).
CHUNK_TIMEOUT = 60.0

_STATUS = {"refused": 400, "not-found": 404, "too-large": 413, "busy": 429}
_TITLES = {"refused": "Path refused", "not-found": "No such file", "too-large": "File too large",
           "busy": "Too many transfers"}


def _error(reply: dict[str, Any]) -> AgentError:
    kind, msg = str(reply.get("error") or "io"), str(reply.get("msg") or "file operation failed")[:500]
    if kind in _STATUS:
        return InvalidInput(msg, title=_TITLES[kind], status=_STATUS[kind])
    return AgentFailure(msg, title="File operation failed")


class TransferBroken(Exception):
    pass


class RunnerFiles:
    """File requests over one kernel's runner connection. ``send`` writes one record (or a
    ready-made frame) to it."""

    def __init__(self, send: Callable[[dict[str, Any] | bytes], Awaitable[None]]) -> None:
        self._send = send
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._streams: dict[str, asyncio.Queue[bytes | None | Exception]] = {}

    async def on_record(self, record: dict[str, Any]) -> None:
        """A ``file-*`` record from the runner (called by the connection's read loop, which waits
        while a download's queue is full)."""
        kind, tid = record.get("type"), str(record.get("id"))
        if kind == "file-result":
            reply = self._replies.get(tid)
            if reply is not None and not reply.done():
                reply.set_result(record)
            return
        queue = self._streams.get(tid)
        if queue is None:
            return  # a cancelled download's tail, or nothing we asked for
        item: bytes | None | Exception
        if kind == "file-data":
            try:
                item = base64.b64decode(str(record.get("data", "")), validate=True)
            except (binascii.Error, ValueError):
                item = TransferBroken("corrupt data from the runner")
        elif kind == "file-end":
            item = None
        else:
            item = TransferBroken(str(record.get("msg") or "the runner failed to send the file")[:500])
        await queue.put(item)

    def fail_all(self) -> None:
        """The runner connection is gone: every request and transfer in progress fails."""
        for reply in self._replies.values():
            if not reply.done():
                reply.set_exception(AgentFailure("the runner connection was lost", title="Kernel runner unreachable"))
        for queue in self._streams.values():
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(TransferBroken("the runner connection was lost"))

    async def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        tid = str(message["id"])
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[tid] = reply
        try:
            await self._send(message)
            async with asyncio.timeout(REPLY_TIMEOUT):
                answer = await reply
        except TimeoutError:
            raise AgentTimeout("the kernel runner did not answer the file request in time") from None
        finally:
            self._replies.pop(tid, None)
        if not answer.get("ok"):
            raise _error(answer)
        data = answer.get("data")
        return data if isinstance(data, dict) else {}

    async def list(self, path: str) -> dict[str, Any]:
        data = await self._request({"op": "file-list", "id": secrets.token_hex(8), "path": path})
        files = data.get("files")
        return {"files": files if isinstance(files, list) else [], "abspath": str(data.get("abspath", path))}

    async def upload(self, path: str, body: AsyncIterator[bytes], mode: int | None = None,
                     dir_mode: int | None = None) -> int:
        """Write ``body`` to ``path`` (relative to /home/work); all or nothing. ``mode``: the
        file's permission bits (default 0644 less the umask); ``dir_mode``: its directory's
        (not the home's; e.g. 0700 for ``.ssh``)."""
        tid = secrets.token_hex(8)
        begin: dict[str, Any] = {"op": "file-put-begin", "id": tid, "path": path}
        if mode is not None:
            begin["mode"] = mode
        if dir_mode is not None:
            begin["dir_mode"] = dir_mode
        await self._request(begin)
        try:
            header = encode_frame({"op": "file-put-data", "id": tid, "binary": True})
            pending = b""
            async for chunk in body:
                pending += chunk
                while len(pending) >= UPLOAD_CHUNK:
                    piece, pending = pending[:UPLOAD_CHUNK], pending[UPLOAD_CHUNK:]
                    await self._send(header + encode_binary_frame(piece))
            if pending:
                await self._send(header + encode_binary_frame(pending))
        except BaseException:
            with contextlib.suppress(Exception):
                await self._send({"op": "file-put-abort", "id": tid})
            raise
        data = await self._request({"op": "file-put-end", "id": tid})
        size = data.get("size")
        return size if isinstance(size, int) else 0

    @contextlib.asynccontextmanager
    async def download(self, path: str, max_size: int, archive: bool = False
                       ) -> AsyncIterator[tuple[int, AsyncIterator[bytes]]]:
        """``(size, chunks)`` of the file at ``path``; exactly ``size`` bytes, or TransferBroken.
        ``archive``: a tar of the file or directory instead (see :func:`_tar_of_file`)."""
        tid = secrets.token_hex(8)
        queue: asyncio.Queue[bytes | None | Exception] = asyncio.Queue(QUEUE_CHUNKS)
        self._streams[tid] = queue
        try:
            data = await self._request({"op": "file-get", "id": tid, "path": path, "max_size": max_size,
                                        "archive": archive})
            size = data.get("size")
            if not isinstance(size, int) or size < 0 or size > max_size:
                raise AgentFailure("the runner announced an impossible size")

            async def chunks() -> AsyncIterator[bytes]:
                received = 0
                while True:
                    try:
                        async with asyncio.timeout(CHUNK_TIMEOUT):
                            item = await queue.get()
                    except TimeoutError:
                        raise TransferBroken("the runner stopped sending the file") from None
                    if isinstance(item, Exception):
                        raise item
                    if item is None:
                        if received != size:
                            raise TransferBroken("the file's size changed while it was sent")
                        return
                    received += len(item)
                    if received > size:
                        raise TransferBroken("the runner sent more than the file's size")
                    yield item

            if archive and data.get("archive") is not True:
                # A regular file (or a runner that predates directory archives): wrapped here.
                mode = data.get("mode")
                yield _tar_of_file(path, size, chunks(),
                                   mode if type(mode) is int and 0 <= mode <= 0o777 else 0o644)
            else:
                yield size, chunks()
        finally:
            self._streams.pop(tid, None)
            while not queue.empty():  # frees a read loop waiting to queue one more chunk
                queue.get_nowait()
            with contextlib.suppress(Exception):
                await self._send({"op": "file-get-cancel", "id": tid})


def _tar_of_file(path: str, size: int, chunks: AsyncIterator[bytes],
                 mode: int = 0o644) -> tuple[int, AsyncIterator[bytes]]:
    """A one-file tar around a file's bytes (with the file's ``mode``, as the runner reported it):
    ``(the tar's size, its chunks)``."""
    info = tarfile.TarInfo(path.rstrip("/").rsplit("/", 1)[-1] or "file")
    info.size, info.mode, info.mtime = size, mode, int(time.time())
    header = info.tobuf(format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape")
    tail = b"\0" * (-size % tarfile.BLOCKSIZE + 2 * tarfile.BLOCKSIZE)

    async def wrapped() -> AsyncIterator[bytes]:
        yield header
        async for chunk in chunks:
            yield chunk
        yield tail

    return len(header) + size + len(tail), wrapped()


# --- the agent's HTTP side ------------------------------------------------------------------------

AgentGetter = Callable[[web.Request], Any]


def _validate(model: Any, raw: dict[str, Any]) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise InvalidInput("; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                                     for e in exc.errors())) from exc


def add_routes(app: web.Application, get_agent: AgentGetter) -> None:
    """``/files/upload`` and ``/files/download`` on the agent's RPC app (its auth and error
    middlewares apply)."""

    async def upload(request: web.Request) -> web.Response:
        q = _validate(UploadFileQuery, dict(request.query))
        files = get_agent(request).runner(q.kernel_id).files
        size = await files.upload(q.path, request.content.iter_chunked(UPLOAD_CHUNK))
        return web.json_response({"size": size})

    async def download(request: web.Request) -> web.StreamResponse:
        try:
            raw = await request.json()
        except ValueError as exc:
            raise InvalidInput("the body is not JSON") from exc
        req = _validate(DownloadFileRequest, raw if isinstance(raw, dict) else {})
        files = get_agent(request).runner(req.kernel_id).files
        async with files.download(req.path, req.max_size, req.archive) as (size, chunks):
            resp = web.StreamResponse(headers={"X-Bai-File-Size": str(size),
                                               "Content-Type": "application/octet-stream"})
            resp.content_length = size
            await resp.prepare(request)
            try:
                async for chunk in chunks:
                    await resp.write(chunk)
            except TransferBroken:
                # Headers are gone: only breaking the connection tells the manager.
                if request.transport is not None:
                    request.transport.abort()
                return resp
            await resp.write_eof()
            return resp

    app.router.add_post("/files/upload", upload)
    app.router.add_post("/files/download", download)


async def rpc_list_files(agent: Any, req: ListFilesRequest) -> dict[str, Any]:
    result: dict[str, Any] = await agent.runner(req.kernel_id).files.list(req.path)
    return result


async def rpc_get_completions(agent: Any, req: GetCompletionsRequest) -> dict[str, Any]:
    # Not a file operation, but the same shape of RPC: served by the agent's runner connection.
    result: dict[str, Any] = await agent.get_completions(req)
    return result
