"""Terminals through the agent: a websocket per terminal between the manager and the agent,
relayed to a login shell the kernel runner keeps on a pty (:mod:`bai.kernel.terminal`).

``GET /pty/{kernel_id}?rows=R&cols=C`` (websocket; ``Authorization: Bearer <rpc-secret>`` as every
RPC). Manager -> agent: BINARY frames are keystrokes; TEXT frames are JSON controls
``{"op": "resize", "rows", "cols"}`` and ``{"op": "restart"}`` (a new shell on this terminal).
Agent -> manager: BINARY frames are the terminal's output; TEXT ``{"type": "opened"}`` once the
shell runs, ``{"type": "exit", "exitCode"}`` when it ended by itself, ``{"type": "error", "msg"}``;
the socket closes after the last two. Closing the socket (or the manager going away, or
:data:`IDLE_TIMEOUT` seconds without a frame from the manager) kills the shell and every process
it started. Output is acknowledged to the runner only once written to the manager, so a slow
reader holds the shell back (the runner reads at most its window ahead) instead of growing
buffers here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from bai.common.agent_rpc import InvalidInput, KernelNotFound

if TYPE_CHECKING:
    from .kernel import KernelRunner

__all__ = ["IDLE_TIMEOUT", "MAX_INPUT_FRAME", "TerminalHub", "serve", "serve_terminal"]

log = logging.getLogger(__name__)

#: Seconds a terminal may go without a frame from the manager (which pings every ws-heartbeat).
IDLE_TIMEOUT = 1800.0
#: Keystrokes per frame, at most (a bigger frame closes the socket with 1009).
MAX_INPUT_FRAME = 64 * 1024
#: How long the runner may take to start a shell.
OPEN_TIMEOUT = 10.0
#: Records one terminal may have waiting for the manager (the runner's window bounds the bytes;
#: this bounds a misbehaving runner's many tiny ones).
MAX_QUEUED = 1024
SEND_TIMEOUT = 30.0
HEARTBEAT = 20.0


@dataclass
class Channel:
    """One terminal's records from the runner, waiting to be relayed."""

    tid: str
    opened: asyncio.Future[str | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    records: asyncio.Queue[tuple[str, Any]] = field(default_factory=lambda: asyncio.Queue(MAX_QUEUED))

    def put(self, kind: str, value: Any) -> None:
        try:
            self.records.put_nowait((kind, value))
        except asyncio.QueueFull:
            # a runner that ignores its window: this terminal is dropped, nothing grows
            with contextlib.suppress(asyncio.QueueEmpty):
                while True:
                    self.records.get_nowait()
            self.records.put_nowait(("error", "the terminal produced output faster than it could be relayed"))


class TerminalHub:
    """The terminals of one kernel runner connection."""

    def __init__(self, runner: KernelRunner) -> None:
        self.runner = runner
        self.channels: dict[str, Channel] = {}

    def on_record(self, record: dict[str, Any]) -> None:
        channel = self.channels.get(str(record.get("tid")))
        if channel is None:
            return
        kind = record.get("type")
        if kind == "pty-opened":
            if not channel.opened.done():
                channel.opened.set_result(None)
        elif kind == "pty-out":
            try:
                data = base64.b64decode(str(record.get("data", "")), validate=True)
            except (binascii.Error, ValueError):
                return
            channel.put("out", data)
        elif kind == "pty-exit":
            code = record.get("exitCode")
            channel.put("exit", code if isinstance(code, int) and not isinstance(code, bool) else -1)
        elif kind == "pty-error":
            msg = str(record.get("msg", "terminal error"))[:500]
            if not channel.opened.done():
                channel.opened.set_result(msg)
            else:
                channel.put("error", msg)

    def connection_lost(self) -> None:
        """The runner went away: its terminals are gone (it kills them when it loses us)."""
        for channel in self.channels.values():
            if not channel.opened.done():
                channel.opened.set_result("the kernel runner went away")
            else:
                channel.put("error", "the kernel runner went away")

    async def open(self, rows: int, cols: int) -> Channel:
        tid = secrets.token_hex(8)
        channel = self.channels[tid] = Channel(tid)
        try:
            await self.runner._send({"op": "pty-open", "tid": tid, "rows": rows, "cols": cols})
            async with asyncio.timeout(OPEN_TIMEOUT):
                error = await channel.opened
        except BaseException:
            await self.close(tid)
            raise
        if error is not None:
            self.channels.pop(tid, None)
            raise TerminalRefused(error)
        return channel

    async def send(self, tid: str, message: dict[str, Any]) -> None:
        await self.runner._send({**message, "tid": tid})

    async def close(self, tid: str) -> None:
        if self.channels.pop(tid, None) is not None:
            with contextlib.suppress(Exception):
                await self.runner._send({"op": "pty-close", "tid": tid})


class TerminalRefused(Exception):
    pass


def _dimension(raw: Any, default: int) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        return default
    return value if 0 < value <= 1000 else default


async def serve(request: web.Request, runner: KernelRunner) -> web.StreamResponse:
    """The websocket of one terminal on ``runner``'s kernel (see the module docstring)."""
    hub: TerminalHub = runner.terminals
    ws = web.WebSocketResponse(max_msg_size=MAX_INPUT_FRAME, heartbeat=HEARTBEAT)
    await ws.prepare(request)
    rows, cols = _dimension(request.query.get("rows"), 24), _dimension(request.query.get("cols"), 80)
    try:
        channel = await hub.open(rows, cols)
    except (TerminalRefused, TimeoutError, Exception) as exc:  # noqa: BLE001 - told to the manager
        msg = str(exc) if isinstance(exc, TerminalRefused) else f"cannot open a terminal: {exc!r}"
        with contextlib.suppress(Exception):
            await ws.send_str(json.dumps({"type": "error", "msg": msg}))
        await ws.close()
        return ws
    await ws.send_str(json.dumps({"type": "opened"}))
    relay = asyncio.create_task(_relay_output(ws, hub, channel), name=f"pty-out-{channel.tid}")
    try:
        await _relay_input(ws, hub, channel.tid, relay)
    finally:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
        await hub.close(channel.tid)
        if not ws.closed:
            await ws.close()
    return ws


async def _relay_input(ws: web.WebSocketResponse, hub: TerminalHub, tid: str, relay: asyncio.Task[None]) -> None:
    while not relay.done():
        receive = asyncio.ensure_future(ws.receive())
        try:
            done, _ = await asyncio.wait({receive, relay}, timeout=IDLE_TIMEOUT,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not receive.done():
                receive.cancel()
                await asyncio.gather(receive, return_exceptions=True)
        if not done:
            log.info("terminal %s: idle for %.0f s, closing it", tid, IDLE_TIMEOUT)
            return
        if receive not in done:
            return  # the shell ended: the relay said so and closes
        msg = receive.result()
        if msg.type == WSMsgType.BINARY:
            data: bytes = msg.data
            await hub.send(tid, {"op": "pty-in", "data": base64.b64encode(data).decode("ascii")})
        elif msg.type == WSMsgType.TEXT:
            try:
                control = json.loads(msg.data)
            except ValueError:
                continue
            if not isinstance(control, dict):
                continue
            if control.get("op") == "resize":
                await hub.send(tid, {"op": "pty-resize", "rows": _dimension(control.get("rows"), 24),
                                     "cols": _dimension(control.get("cols"), 80)})
            elif control.get("op") == "restart":
                await hub.send(tid, {"op": "pty-restart"})
        else:  # CLOSE, CLOSING, CLOSED, ERROR (e.g. an oversized frame)
            return


async def _relay_output(ws: web.WebSocketResponse, hub: TerminalHub, channel: Channel) -> None:
    while True:
        kind, value = await channel.records.get()
        if kind == "out":
            async with asyncio.timeout(SEND_TIMEOUT):
                await ws.send_bytes(value)
            await hub.send(channel.tid, {"op": "pty-ack", "bytes": len(value)})
        else:
            frame = {"type": "exit", "exitCode": value} if kind == "exit" else {"type": "error", "msg": value}
            with contextlib.suppress(Exception):
                await ws.send_str(json.dumps(frame))
                await ws.close()
            return


def _runner_of(agent: Any, kernel_id: str) -> KernelRunner:
    kernel = getattr(agent, "kernels", {}).get(kernel_id)
    if kernel is None:
        raise KernelNotFound(f"kernel {kernel_id} is not on this agent")
    if kernel.status != "RUNNING" or kernel.runner is None:
        raise InvalidInput(f"kernel {kernel_id} is {str(kernel.status).lower()}", title="Kernel not running")
    runner: KernelRunner = kernel.runner
    return runner


async def serve_terminal(request: web.Request, agent: Any) -> web.StreamResponse:
    """``GET /pty/{kernel_id}`` of ``agent``: 404 ``kernel-not-found`` (400 when it is not running)
    before the upgrade."""
    return await serve(request, _runner_of(agent, request.match_info["kernel_id"]))
