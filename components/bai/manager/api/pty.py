"""``GET /stream/session/{ref}/pty``: a terminal in the session's main kernel, over a websocket,
with the original's JSON text frames.

Client -> server: ``{"type": "stdin", "chars": <base64 bytes>}``, ``{"type": "resize", "rows",
"cols"}``, ``{"type": "ping"}`` (answered ``{"type": "pong"}``; keeps the session from idling),
``{"type": "restart"}`` (the kernel restarts, as a session restart, and the terminal gets a new
shell). Server -> client: ``{"type": "out", "data": <base64 bytes>}``; ``{"type": "error",
"data": <message>}`` for a frame it cannot take (the connection and the session go on) or a
terminal that cannot be opened (then it closes). The socket closes (1000) when the shell exits.

The shell is a login shell on a pty, as the kernel's user, in /home/work (bai.kernel.terminal),
relayed by the agent (bai.agent.terminal). Bounded on every side: client frames by
``max-wsmsg-size``; output is flow-controlled back to the shell (a client that takes no frame
for ``stream-send-timeout`` is dropped); a vanished client (closed, or silent to the
``ws-heartbeat`` pings) closes the terminal, which kills the shell and what it started; a
kernel has at most 4 terminals.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web

from bai.manager import errors
from bai.manager.services.schemas import SessionQuery
from bai.manager.services.sessions import terminal

from . import routing
from .keys import CTX, requester
from .middlewares import auth_required
from .routing import Answer

log = logging.getLogger(__name__)

WRITER_LIMIT = 64 * 1024
#: How long restarting the kernel may take before the client is told it failed.
RESTART_TIMEOUT = 40.0


class _Gone(Exception):
    pass


class _Client:
    def __init__(self, ws: web.WebSocketResponse, send_timeout: float) -> None:
        self.ws = ws
        self.send_timeout = send_timeout
        self.lock = asyncio.Lock()  # output and answers are sent by two tasks

    async def send(self, frame: dict[str, Any]) -> None:
        if self.ws.closed:
            raise _Gone()
        try:
            async with self.lock, asyncio.timeout(self.send_timeout):
                await self.ws.send_str(json.dumps(frame))
        except TimeoutError:
            log.info("dropping a terminal whose client stopped reading")
            raise _Gone() from None
        except ConnectionError:
            raise _Gone() from None

    async def error(self, msg: str) -> None:
        await self.send({"type": "error", "data": msg})


def _dimension(frame: dict[str, Any], key: str) -> int:
    value = frame.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 1000:
        raise ValueError(f"{key} must be an integer from 1 to 1000")
    return value


@auth_required()
async def stream_pty(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    query = await routing.params(request, SessionQuery)
    found = await terminal.route(ctx, requester(request), request.match_info["ref"],
                                 query.owner_access_key)  # 404/400 before upgrading
    cfg = ctx.config.manager
    ws = web.WebSocketResponse(max_msg_size=cfg.max_wsmsg_size, heartbeat=cfg.ws_heartbeat,
                               writer_limit=WRITER_LIMIT)
    if not ws.can_prepare(request).ok:
        raise errors.GenericBadRequest("This endpoint needs a websocket upgrade (Connection: Upgrade, "
                                       "Upgrade: websocket).")
    await ws.prepare(request)
    client = _Client(ws, cfg.stream_send_timeout)
    try:
        term = await terminal.open_terminal(ctx, found, 24, 80)
    except terminal.TerminalError as exc:
        try:
            await client.error(f"cannot open a terminal: {exc.msg}")
        except _Gone:
            pass
        await ws.close()
        return ws
    output = asyncio.create_task(_relay_output(ctx, found, term, client), name="pty-output")
    try:
        await _relay_input(ctx, found, term, client, output)
    except _Gone:
        pass
    finally:
        output.cancel()
        await asyncio.gather(output, return_exceptions=True)
        await term.close()
        if not ws.closed:
            await ws.close()
    return ws


async def _relay_output(ctx: Any, found: Any, term: Any, client: _Client) -> None:
    """The shell's output to the client until it exits (then the socket closes)."""
    try:
        while True:
            kind, value = await term.receive()
            if kind == "out":
                terminal.note_activity(ctx, found.session_id)
                await client.send({"type": "out", "data": base64.b64encode(value).decode("ascii")})
                continue
            if kind == "error":
                await client.error(str(value))
            await client.ws.close(message=f"the shell exited (status {value})".encode() if kind == "exit"
                                  else b"the terminal ended")
            return
    except _Gone:
        await client.ws.close()


async def _relay_input(ctx: Any, found: Any, term: Any, client: _Client, output: asyncio.Task[None]) -> None:
    ws = client.ws
    while not output.done():
        receive = asyncio.ensure_future(ws.receive())
        try:
            done, _ = await asyncio.wait({receive, output}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not receive.done():
                receive.cancel()
                await asyncio.gather(receive, return_exceptions=True)
        if receive not in done:
            return
        msg = receive.result()
        if msg.type == WSMsgType.BINARY:
            await client.error("binary frames are not understood: send JSON text frames")
            continue
        if msg.type != WSMsgType.TEXT:
            return  # closed, closing, or an error such as an oversized frame (closed with 1009)
        try:
            frame = json.loads(msg.data)
            if not isinstance(frame, dict):
                raise ValueError("a frame is a JSON object")
            await _handle(ctx, found, term, client, frame)
        except ValueError as exc:
            await client.error(f"invalid frame: {exc}")


async def _handle(ctx: Any, found: Any, term: Any, client: _Client, frame: dict[str, Any]) -> None:
    kind = frame.get("type")
    terminal.note_activity(ctx, found.session_id)
    if kind == "stdin":
        chars = frame.get("chars")
        if not isinstance(chars, str):
            raise ValueError("stdin needs 'chars', a base64 string")
        try:
            data = base64.b64decode(chars, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("'chars' is not base64") from None
        await term.send_input(data)
    elif kind == "resize":
        await term.resize(_dimension(frame, "rows"), _dimension(frame, "cols"))
    elif kind == "ping":
        await term.keepalive()
        await client.send({"type": "pong"})
    elif kind == "restart":
        try:
            async with asyncio.timeout(RESTART_TIMEOUT):
                await terminal.restart_kernel(ctx, found)
        except (errors.ApiError, TimeoutError) as exc:
            await client.error(f"restart failed: {getattr(exc, 'msg', None) or exc!r}")
            return
        await term.restart()
    else:
        raise ValueError(f"unknown type {kind!r} (stdin, resize, ping, restart)")


def routes(app: web.Application) -> None:
    routing.add(
        app, "GET", "/stream/session/{ref}/pty", stream_pty, operation_id="stream_pty", tag="stream",
        summary="A terminal in the session (websocket upgrade).", websocket=True, query=SessionQuery,
        description=(
            "A websocket upgrade to a login shell in the session's main kernel. Client frames (JSON text): "
            "`{\"type\": \"stdin\", \"chars\": base64}`, `{\"type\": \"resize\", \"rows\", \"cols\"}`, "
            "`{\"type\": \"ping\"}`, `{\"type\": \"restart\"}`. Server frames: `{\"type\": \"out\", \"data\": "
            "base64}`, `{\"type\": \"pong\"}`, `{\"type\": \"error\", \"data\": message}`. Takes `owner_access_key` "
            "(admins)."),
        answers=(Answer(101, "Switching to the websocket protocol.", media_type=""),),
        problems=(errors.SessionNotFound, errors.TooManySessionsMatched, errors.InvalidAPIParameters),
    )
