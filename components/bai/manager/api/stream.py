"""/stream/session/{ref}/execute: query-mode execution over a websocket.

The handler is bounded on every side: incoming frames are capped at ``max-wsmsg-size`` (a bigger
one closes the socket with 1009), at most ``INBOX_SIZE`` unread input lines are kept, outgoing
frames are written one at a time through aiohttp's flow-controlled writer (``writer_limit``) and a
client that does not take one within ``stream-send-timeout`` is dropped, and a ping every
``ws-heartbeat`` seconds drops a client that stops answering. A reader task watches the socket
the whole time, so the agent is no longer polled once the client has gone, even mid-call."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, Literal, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import BaseModel, ConfigDict, ValidationError

from bai.manager import errors

from . import routing
from .keys import CTX, SESSIONS, requester
from .middlewares import auth_required
from .routing import Answer

log = logging.getLogger(__name__)
T = TypeVar("T")

STREAM_FLUSH_TIMEOUT = 0.2
#: How long the first frame (the request) may take to arrive.
FIRST_FRAME_TIMEOUT = 300.0
#: Input lines a client may send ahead of the kernel asking for them.
INBOX_SIZE = 16
#: Bytes aiohttp buffers for a slow reader before a send waits for it to drain.
WRITER_LIMIT = 64 * 1024


class StreamRequest(BaseModel):
    """The first frame: what to run (query mode, or batch mode with clean/build/exec options)."""

    model_config = ConfigDict(extra="ignore")
    code: str = ""
    mode: Literal["query", "batch"] = "query"
    options: dict[str, Any] | None = None


class ClientGone(Exception):
    """The websocket client went away (closed, vanished, or stopped answering pings)."""


class ExecuteStreams:
    """Open execute streams of this manager (for shutdown and for observing them)."""

    def __init__(self) -> None:
        self.open = 0
        self.agent_calls = 0


EXECUTE_STREAMS = web.AppKey("execute_streams", ExecuteStreams)


class _Client:
    """One websocket client: frames it sent, and whether it is still there."""

    def __init__(self, ws: web.WebSocketResponse, send_timeout: float) -> None:
        self.ws = ws
        self.send_timeout = send_timeout
        self.inbox: asyncio.Queue[str] = asyncio.Queue(INBOX_SIZE)
        self.gone = asyncio.Event()

    async def read(self) -> None:
        """Runs for the life of the stream; sets ``gone`` when the client closes or breaks."""
        try:
            async for msg in self.ws:  # ends on CLOSE/CLOSING/CLOSED; pongs are handled inside
                if msg.type == WSMsgType.ERROR:  # e.g. a frame over max_msg_size: aiohttp closed with 1009
                    break
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    self.inbox.put_nowait(msg.data)
                except asyncio.QueueFull:
                    await self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"too many unread frames")
                    break
        finally:
            self.gone.set()

    async def until_gone(self, work: Awaitable[T]) -> T:
        """``work``'s result, or ClientGone as soon as the client leaves (``work`` is cancelled)."""
        task = asyncio.ensure_future(work)
        waiter = asyncio.create_task(self.gone.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise ClientGone()
        return task.result()

    async def next_text(self, within: float | None = None) -> str:
        try:
            async with asyncio.timeout(within):
                return await self.until_gone(self.inbox.get())
        except TimeoutError:
            raise ClientGone() from None  # silent for too long: treated as gone

    async def send(self, frame: dict[str, Any]) -> None:
        if self.gone.is_set() or self.ws.closed:
            raise ClientGone()
        try:
            async with asyncio.timeout(self.send_timeout):
                await self.ws.send_json(frame)
        except TimeoutError:
            log.info("dropping an execute stream whose client stopped reading")
            raise ClientGone() from None
        except ConnectionError:
            raise ClientGone() from None


@auth_required()
async def stream_execute(request: web.Request) -> web.StreamResponse:
    svc = request.app[SESSIONS]
    route = await svc.route(requester(request), request.match_info["ref"])  # 404 before upgrading
    cfg = request.app[CTX].config.manager
    ws = web.WebSocketResponse(max_msg_size=cfg.max_wsmsg_size, heartbeat=cfg.ws_heartbeat,
                               writer_limit=WRITER_LIMIT)
    if not ws.can_prepare(request).ok:
        raise errors.GenericBadRequest("This endpoint needs a websocket upgrade (Connection: Upgrade, "
                                       "Upgrade: websocket).")
    streams = request.app[EXECUTE_STREAMS]
    await ws.prepare(request)
    client = _Client(ws, cfg.stream_send_timeout)
    reader = asyncio.create_task(client.read(), name="ws-execute-reader")
    streams.open += 1

    async def call(mode: str, run_id: str | None, code: str, opts: Any) -> dict[str, Any]:
        streams.agent_calls += 1
        return await client.until_gone(svc.execute(route, mode=mode, run_id=run_id, code=code, opts=opts,
                                                   flush_timeout=STREAM_FLUSH_TIMEOUT))

    try:
        try:
            req = StreamRequest.model_validate_json(await client.next_text(FIRST_FRAME_TIMEOUT))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'frame'}: {e['msg']}" for e in exc.errors())
            await client.send({"status": "error", "msg": f"invalid request: {problems}"})
            return ws
        await svc.count_query(route.session_id)
        result = await call(req.mode, None, req.code, req.options)
        run_id: str | None = None
        while True:
            run_id = result.get("runId") or run_id
            status = result.get("status")
            if result.get("console") or status != "continued":
                await client.send({k: result.get(k) for k in ("status", "console", "exitCode", "options", "files")})
            if status in ("finished", "exec-timeout"):
                break
            if status == "waiting-input":
                result = await call("input", run_id, await client.next_text(), {})
            else:
                result = await call("continue", run_id, "", {})
    except ClientGone:
        pass
    except errors.ApiError as exc:
        await _send_error(client, exc.msg or exc.title)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("stream execute failed")
        await _send_error(client, repr(exc))
    finally:
        streams.open -= 1
        if not ws.closed:
            await ws.close()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    return ws


async def _send_error(client: _Client, msg: str) -> None:
    try:
        await client.send({"status": "error", "msg": msg})
    except ClientGone:
        pass


def routes(app: web.Application) -> None:
    app[EXECUTE_STREAMS] = ExecuteStreams()
    routing.add(
        app, "GET", "/stream/session/{ref}/execute", stream_execute, operation_id="stream_execute", tag="stream",
        summary="Run code in the session over a websocket (upgrade).", websocket=True,
        description=(
            "A websocket upgrade. The client sends one JSON text frame `{\"code\", \"mode\": \"query\"|\"batch\", "
            "\"options\"}`; the server sends `{\"status\", \"console\", \"exitCode\", \"options\", \"files\"}` "
            "frames until `finished` or `exec-timeout`, reading a text frame whenever the kernel waits for "
            "input, then closes. Frames over max-wsmsg-size close the socket with 1009."),
        answers=(Answer(101, "Switching to the websocket protocol.", media_type=""),),
        problems=(errors.SessionNotFound, errors.TooManySessionsMatched),
    )
