"""The terminal (``/stream/session/{ref}/pty``) on the whole node: the original's JSON frames
through the manager, the agent and the runner to a login shell in the real kernel container."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from bai.common.auth import API_VERSION, sign_request

from .conftest import Node

PROCS = ("import os\n"
         "for p in os.listdir('/proc'):\n"
         "    if p.isdigit():\n"
         "        try: print(open(f'/proc/{p}/cmdline','rb').read().replace(b'\\0', b' ').decode())\n"
         "        except OSError: pass\n")


def name() -> str:
    return f"t-{secrets.token_hex(5)}"


@pytest.fixture(scope="module")
async def session(node: Node) -> AsyncIterator[str]:
    n = name()
    st, body = await node.call("POST", "/session", {"name": n, "image": "python"})
    assert st == 201 and body["status"] == "RUNNING", body
    yield n
    await node.call("DELETE", f"/session/{n}")


def headers(node: Node, path: str, keys: tuple[str, str] | None = None) -> dict[str, str]:
    host = f"{node.client.host}:{node.client.port}"
    ak, sk = keys or (node.access_key, node.secret_key)
    signed = sign_request(ak, sk, "GET", path, host, "application/octet-stream")
    return {"Date": signed.date, "Authorization": signed.authorization, "X-BackendAI-Version": API_VERSION,
            "Host": host}


@asynccontextmanager
async def terminal(node: Node, ref: str) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    path = f"/stream/session/{ref}/pty"
    async with node.client.ws_connect(path, headers=headers(node, path)) as ws:
        yield ws


async def type_in(ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
    await ws.send_json({"type": "stdin", "chars": base64.b64encode(text.encode()).decode()})


async def frame(ws: aiohttp.ClientWebSocketResponse, deadline: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(deadline):
        msg = await ws.receive()
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    data: dict[str, Any] = json.loads(msg.data)
    return data


async def read_until(ws: aiohttp.ClientWebSocketResponse, wanted: str, deadline: float = 15.0) -> str:
    seen = ""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while wanted not in seen:
        f = await frame(ws, max(0.01, end - loop.time()))
        assert f["type"] == "out", (f, seen)
        seen += base64.b64decode(f["data"]).decode(errors="replace")
    return seen


async def processes(node: Node, ref: str) -> str:
    st, body = await node.call("POST", f"/session/{ref}", {"mode": "query", "code": PROCS, "runId": None})
    assert st == 200 and body["result"]["status"] == "finished", body
    return "".join(text for kind, text in body["result"]["console"] if kind == "stdout")


async def test_shell_runs_commands_as_the_kernel_user_and_resizes(node: Node, session: str) -> None:
    async with terminal(node, session) as ws:
        await type_in(ws, "echo pty-$((6*7)) $(id -u) $(pwd) $TERM\r")
        assert "pty-42 1000 /home/work xterm-256color" in await read_until(ws, "pty-42 1000")
        await ws.send_json({"type": "resize", "rows": 40, "cols": 132})
        await type_in(ws, "stty size\r")
        await read_until(ws, "40 132")
        await ws.send_json({"type": "ping"})
        while (f := await frame(ws))["type"] == "out":
            pass
        assert f == {"type": "pong"}


async def test_malformed_frames_get_an_error_and_the_terminal_goes_on(node: Node, session: str) -> None:
    async with terminal(node, session) as ws:
        for bad, why in (("not json", "invalid frame"), ("[1, 2]", "invalid frame"),
                         (json.dumps({"type": "launch-missiles"}), "unknown type"),
                         (json.dumps({"type": "stdin", "chars": "%%%"}), "not base64"),
                         (json.dumps({"type": "stdin"}), "needs 'chars'"),
                         (json.dumps({"type": "resize", "rows": "many", "cols": 80}), "rows must be"),
                         (json.dumps({"type": "resize", "rows": 10, "cols": 0}), "cols must be")):
            await ws.send_str(bad)
            while (f := await frame(ws))["type"] == "out":
                pass  # the prompt
            assert f["type"] == "error" and why in f["data"], (bad, f)
        await ws.send_bytes(b"\x00\x01")
        while (f := await frame(ws))["type"] == "out":
            pass
        assert f["type"] == "error" and "binary" in f["data"]
        await type_in(ws, "echo still-$((2+3))\r")
        await read_until(ws, "still-5")
    st, body = await node.call("GET", f"/session/{session}")
    assert st == 200 and body["status"] == "RUNNING"


async def test_a_vanished_client_leaves_no_process_behind(node: Node, session: str) -> None:
    marker = str(secrets.randbelow(10**6) + 10**6)
    path = f"/stream/session/{session}/pty"
    ws = await node.client.ws_connect(path, headers=headers(node, path))
    await type_in(ws, f"sleep {marker}1 & sleep {marker}2\r")
    loop = asyncio.get_running_loop()
    end = loop.time() + 15
    while (await processes(node, session)).count(f"sleep {marker}") < 2:
        assert loop.time() < end, "the shell's commands never ran"
        await asyncio.sleep(0.05)
    # Gone without a close frame: the connection just drops.
    transport = ws._response.connection.transport  # type: ignore[union-attr]
    assert transport is not None
    transport.abort()
    end = loop.time() + 15
    while True:
        left = [line for line in (await processes(node, session)).splitlines()
                if marker in line or line.startswith(("-bash", "bash", "/bin/bash", "-sh"))]
        if not left:
            break
        assert loop.time() < end, f"processes left after the client vanished: {left}"
        await asyncio.sleep(0.05)
    st, body = await node.call("GET", f"/session/{session}")
    assert st == 200 and body["status"] == "RUNNING"


async def test_terminals_per_session_are_capped(node: Node, session: str) -> None:
    path = f"/stream/session/{session}/pty"
    opened = []
    try:
        for _ in range(4):
            ws = await node.client.ws_connect(path, headers=headers(node, path))
            opened.append(ws)
            await type_in(ws, "echo up\r")
            await read_until(ws, "up")
        async with node.client.ws_connect(path, headers=headers(node, path)) as fifth:
            f = await frame(fifth)
            assert f["type"] == "error" and "too many terminals" in f["data"], f
            async with asyncio.timeout(10):
                assert (await fifth.receive()).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    finally:
        for ws in opened:
            await ws.close()
    # the closed ones make room again (their shells are killed as their sockets close)
    loop = asyncio.get_running_loop()
    end = loop.time() + 15
    while True:
        async with terminal(node, session) as ws:
            f = await frame(ws)
            if f["type"] == "out":
                break
            assert "too many terminals" in f["data"] and loop.time() < end, f
        await asyncio.sleep(0.05)


async def test_exit_closes_the_socket(node: Node, session: str) -> None:
    async with terminal(node, session) as ws:
        await type_in(ws, "exit 3\r")
        async with asyncio.timeout(15):
            while (msg := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
                assert json.loads(msg.data)["type"] == "out"
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert "status 3" in (msg.extra or "")


async def test_only_the_owner_opens_a_terminal(node: Node, session: str) -> None:
    other = await node.add_keypair({"total_resource_slots": {}, "max_concurrent_sessions": 5})
    path = f"/stream/session/{session}/pty"
    resp = await node.client.get(path, headers={**headers(node, path, other), "Connection": "Upgrade",
                                                "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                                                "Sec-WebSocket-Key": base64.b64encode(b"x" * 16).decode()})
    assert resp.status == 404 and resp.content_type == "application/problem+json", await resp.text()
    # a plain GET (no upgrade) of one's own session: 400, not a hang
    resp = await node.client.get(path, headers=headers(node, path))
    assert resp.status == 400, await resp.text()
    # a session that is not running
    n = name()
    st, body = await node.call("POST", "/session", {"name": n, "image": "python", "type": "batch",
                                                    "startupCommand": "true", "startsAt": "1h", "enqueueOnly": True})
    assert st == 201, body
    p2 = f"/stream/session/{n}/pty"
    resp = await node.client.get(p2, headers={**headers(node, p2), "Connection": "Upgrade", "Upgrade": "websocket",
                                              "Sec-WebSocket-Version": "13",
                                              "Sec-WebSocket-Key": base64.b64encode(b"y" * 16).decode()})
    assert resp.status == 400, await resp.text()
    assert (await node.call("DELETE", f"/session/{n}"))[0] == 200


async def test_restart_gives_a_new_shell_and_a_fresh_kernel(node: Node, session: str) -> None:
    st, body = await node.call("POST", f"/session/{session}", {"mode": "query", "code": "kept = 1", "runId": None})
    assert st == 200 and body["result"]["status"] == "finished", body
    async with terminal(node, session) as ws:
        await type_in(ws, "export IN_OLD_SHELL=yes; echo $$ > /tmp/old-shell-pid; echo saved-pid\r")
        await read_until(ws, "saved-pid")
        await ws.send_json({"type": "restart"})
        await read_until(ws, "Restarting...")
        await type_in(ws, 'echo "[${IN_OLD_SHELL:-fresh}]" $([ "$$" = "$(cat /tmp/old-shell-pid)" ] && echo same || '
                          'echo new)-shell\r')
        await read_until(ws, "[fresh] new-shell")
    # the kernel restarted too: its variables are gone (as with a session restart)
    st, body = await node.call("POST", f"/session/{session}", {"mode": "query", "code": "print(kept)",
                                                              "runId": None})
    assert st == 200 and "NameError" in json.dumps(body["result"]["console"]), body
