"""The manager's end of a terminal on an agent: the agent's ``GET /pty/{kernel_id}`` websocket
(protocol in :mod:`bai.agent.terminal`), opened by ``AgentClient.open_terminal``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

__all__ = ["AgentTerminal", "TerminalError", "connect_terminal"]

#: Keystrokes per frame towards the agent (its limit).
INPUT_CHUNK = 64 * 1024
#: Output frames from the agent are at most the runner's read chunk; this leaves room.
MAX_OUTPUT_FRAME = 2 * 2**20
HEARTBEAT = 20.0


class TerminalError(Exception):
    """The agent refused or lost the terminal (``status``: the agent's HTTP status when the
    upgrade itself was refused, e.g. 404 for a kernel it does not have)."""

    def __init__(self, msg: str, status: int | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.status = status


class AgentTerminal:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send_input(self, data: bytes) -> None:
        for start in range(0, len(data), INPUT_CHUNK):
            await self.ws.send_bytes(data[start:start + INPUT_CHUNK])

    async def resize(self, rows: int, cols: int) -> None:
        await self.ws.send_str(json.dumps({"op": "resize", "rows": rows, "cols": cols}))

    async def restart(self) -> None:
        await self.ws.send_str(json.dumps({"op": "restart"}))

    async def keepalive(self) -> None:
        """Counts as activity for the agent's idle limit."""
        await self.ws.send_str(json.dumps({"op": "ping"}))

    async def receive(self) -> tuple[str, Any]:
        """``("out", bytes)``, ``("exit", exit code)``, ``("error", message)`` or ``("closed", None)``."""
        while True:
            msg = await self.ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                return "out", msg.data
            if msg.type != aiohttp.WSMsgType.TEXT:
                return "closed", None
            try:
                frame = json.loads(msg.data)
            except ValueError:
                continue
            if not isinstance(frame, dict):
                continue
            if frame.get("type") == "exit":
                return "exit", frame.get("exitCode")
            if frame.get("type") == "error":
                return "error", str(frame.get("msg", "terminal error"))

    async def close(self) -> None:
        await self.ws.close()


async def connect_terminal(session: aiohttp.ClientSession, url: str, headers: dict[str, str], rows: int, cols: int,
                           connect_timeout: float) -> AgentTerminal:
    """Open the websocket and wait for the shell (``{"type": "opened"}``); TerminalError when the
    agent refuses (no such kernel, too many terminals, ...)."""
    try:
        async with asyncio.timeout(connect_timeout):
            ws = await session.ws_connect(
                url, headers={k: v for k, v in headers.items() if k.lower() != "content-type"},
                params={"rows": str(rows), "cols": str(cols)}, heartbeat=HEARTBEAT, max_msg_size=MAX_OUTPUT_FRAME)
    except aiohttp.WSServerHandshakeError as exc:
        raise TerminalError(f"the agent refused the terminal ({exc.status})", exc.status) from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TerminalError(f"cannot reach the agent: {exc!r}", 503) from exc
    term = AgentTerminal(ws)
    try:
        async with asyncio.timeout(connect_timeout + 10.0):
            first = await ws.receive()
    except TimeoutError:
        await ws.close()
        raise TerminalError("the agent did not open the terminal in time", 504) from None
    frame: Any = None
    if first.type == aiohttp.WSMsgType.TEXT:
        try:
            frame = json.loads(first.data)
        except ValueError:
            frame = None
    if isinstance(frame, dict) and frame.get("type") == "opened":
        return term
    await ws.close()
    msg = str(frame.get("msg")) if isinstance(frame, dict) and frame.get("msg") else "the terminal did not open"
    raise TerminalError(msg)

