"""Streaming handlers stay bounded against clients that vanish, never answer pings, send frames
that are too big or stop reading: the websocket execute handler stops polling the agent and ends,
and an SSE stream of a slow consumer is cut off with bounded memory."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from bai.common.auth import API_VERSION, sign_request
from bai.manager.api import events, stream

from .conftest import LiveNode

HEARTBEAT = 0.5
MAX_WS_MSG = 4096


@pytest.fixture(scope="module")
def node_overrides() -> dict[str, Any]:
    return {"default-create-wait": 10, "ws-heartbeat": HEARTBEAT, "max-wsmsg-size": MAX_WS_MSG,
            "stream-send-timeout": 1.0}


def _headers(node: LiveNode, method: str, path: str, ctype: str = "application/octet-stream") -> dict[str, str]:
    host = urlsplit(node.url).netloc
    signed = sign_request(node.access_key, node.secret_key, method, path, host, ctype)
    return {"Date": signed.date, "Authorization": signed.authorization, "X-BackendAI-Version": API_VERSION,
            "Host": host}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _until(check: Callable[[], bool], what: str, deadline: float) -> float:
    """Seconds until ``check()`` holds; fails after ``deadline``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not check():
        if loop.time() - start > deadline:
            raise AssertionError(f"not within {deadline} s: {what}")
        await asyncio.sleep(0.02)
    return loop.time() - start


@pytest.fixture
async def session_name(live_node: LiveNode, http: aiohttp.ClientSession) -> AsyncIterator[str]:
    name = f"st-{secrets.token_hex(4)}"
    body = json.dumps({"name": name, "image": "python", "config": {"resources": {"cpu": "1", "mem": "256m"}}})
    async with http.post(f"{live_node.url}/session", data=body,
                         headers={**_headers(live_node, "POST", "/session", "application/json"),
                                  "Content-Type": "application/json"}) as resp:
        assert resp.status == 201 and (await resp.json())["status"] == "RUNNING", await resp.text()
    yield name
    path = f"/session/{name}?forced=true"
    async with http.delete(f"{live_node.url}{path}", headers=_headers(live_node, "DELETE", path)) as resp:
        assert resp.status == 200, await resp.text()


def _ws_path(name: str) -> str:
    return f"/stream/session/{name}/execute"


async def test_vanished_client_stops_agent_polling(live_node: LiveNode, http: aiohttp.ClientSession,
                                                   session_name: str) -> None:
    streams = live_node.app[stream.EXECUTE_STREAMS]
    path = _ws_path(session_name)
    ws = await http.ws_connect(f"{live_node.url}{path}", headers=_headers(live_node, "GET", path))
    # Prints once, then stays silent for 30 s: the handler keeps polling the agent (mode=continue)
    # with nothing to send, so only watching the socket can tell it that the client left.
    await ws.send_json({"mode": "query", "code": "import time\nprint('start', flush=True)\ntime.sleep(30)"})
    msg = await asyncio.wait_for(ws.receive(), 10)
    assert msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["console"] == [["stdout", "start\n"]]
    polled = streams.agent_calls
    await _until(lambda: streams.agent_calls >= polled + 2, "the handler polls the silent run", 10.0)
    assert streams.open == 1
    calls_before = streams.agent_calls
    # Vanish: the TCP connection goes away without a close frame.
    sock = ws.get_extra_info("socket")
    sock.shutdown(socket.SHUT_RDWR)
    took = await _until(lambda: streams.open == 0, "the handler noticed its client is gone", 5.0)
    calls = streams.agent_calls - calls_before
    # The handler has returned, so it can no longer poll; it stopped long before the 30 s run ended.
    assert took < 2.0 and calls < 15, (took, calls)
    await ws.close()


async def test_frame_over_max_wsmsg_size_closes_with_1009(live_node: LiveNode, http: aiohttp.ClientSession,
                                                          session_name: str) -> None:
    streams = live_node.app[stream.EXECUTE_STREAMS]
    path = _ws_path(session_name)
    async with http.ws_connect(f"{live_node.url}{path}", headers=_headers(live_node, "GET", path)) as ws:
        await ws.send_str(json.dumps({"mode": "query", "code": "#" * (MAX_WS_MSG * 2)}))
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    await _until(lambda: streams.open == 0, "the handler ended", 5.0)


async def test_client_that_never_answers_pings_is_dropped(live_node: LiveNode, http: aiohttp.ClientSession,
                                                          session_name: str) -> None:
    streams = live_node.app[stream.EXECUTE_STREAMS]
    path = _ws_path(session_name)
    # autoping=False and no reads: the server's pings go unanswered.
    ws = await http.ws_connect(f"{live_node.url}{path}", headers=_headers(live_node, "GET", path),
                               autoping=False)
    try:
        await _until(lambda: streams.open == 1, "the stream opened", 5.0)
        took = await _until(lambda: streams.open == 0, "the silent client was dropped", HEARTBEAT * 6)
        assert took >= HEARTBEAT, took  # not before a ping could have been answered
    finally:
        await ws.close()


async def test_plain_get_of_the_stream_is_a_problem(live_node: LiveNode, http: aiohttp.ClientSession,
                                                    session_name: str) -> None:
    path = _ws_path(session_name)
    async with http.get(f"{live_node.url}{path}", headers=_headers(live_node, "GET", path)) as resp:
        assert resp.status == 400 and resp.content_type == "application/problem+json"
        assert "websocket upgrade" in (await resp.json())["msg"]


async def test_sse_slow_consumer_is_cut_off_with_bounded_memory(
        live_node: LiveNode, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "QUEUE_SIZE", 8)
    hub = live_node.app[events.EVENT_HUB]
    before, serving = hub.open_streams, hub.serving
    path = "/events/session"
    host, port = urlsplit(live_node.url).hostname, urlsplit(live_node.url).port
    # A client that sends its request and then never reads: a raw socket with a small buffer.
    reader, writer = await asyncio.open_connection(host, port)
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    head = "".join(f"{k}: {v}\r\n" for k, v in _headers(live_node, "GET", path).items())
    writer.write(f"GET {path} HTTP/1.1\r\n{head}\r\n".encode())
    await writer.drain()
    try:
        await _until(lambda: hub.open_streams == before + 1, "the stream opened", 5.0)
        big = "x" * 65536

        async def flood() -> int:
            deepest = 0
            for _ in range(400):  # ~26 MB of records: far more than socket buffers hold
                hub.dispatch({"name": "session_started", "args": {
                    "sessionId": str(uuid.uuid4()), "sessionName": "flood", "reason": big,
                    "ownerAccessKey": live_node.access_key}})
                deepest = max(deepest, hub.backlog)
                await asyncio.sleep(0)
            return deepest

        depth = live_node.run(flood())
        assert depth <= 8  # never more than QUEUE_SIZE events held for the slow client
        await _until(lambda: hub.open_streams == before and hub.serving == serving,
                     "the slow consumer was cut off and its handler ended", 10.0)
    finally:
        writer.close()


@pytest.mark.parametrize(("frame", "problem"), [
    ('{"mode": "complete", "code": "1"}', "mode: Input should be 'query' or 'batch'"),
    ("not json", "frame: Invalid JSON"),
    ('{"code": 5}', "code: Input should be a valid string"),
])
async def test_invalid_first_frame_is_an_error_frame(live_node: LiveNode, http: aiohttp.ClientSession,
                                                     session_name: str, frame: str, problem: str) -> None:
    path = _ws_path(session_name)
    async with http.ws_connect(f"{live_node.url}{path}", headers=_headers(live_node, "GET", path)) as ws:
        await ws.send_str(frame)
        replies = [json.loads(m.data) async for m in ws]
    assert len(replies) == 1 and replies[0]["status"] == "error", replies
    assert replies[0]["msg"].startswith("invalid request: ") and problem in replies[0]["msg"], replies
