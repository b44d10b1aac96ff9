"""The idle timeout on a whole node (the real manager, agent, kernel and web terminal) behind a
real app proxy: a session used only through its app (through the proxy's circuit, or the
manager's tcpproxy tunnel) stays RUNNING past twice its 2 s idle timeout while traffic flows,
then, traffic stopped, ends with the original's ``idle-timeout``."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from bai.manager.services.idle import IDLE_TIMEOUT
from bai.manager.store import tables as t
from tests.component.node.conftest import Node
from tests.component.node.test_sessions import wait_status
from tests.fixtures.halfstack import HalfStack

from .test_node_apps import AppNode, app_node_running

IDLE_SECONDS = 2
#: Traffic goes on for this long: more than twice the idle timeout.
BUSY_SECONDS = 2 * IDLE_SECONDS + 0.5


@pytest.fixture(scope="module")
async def idle_apps_node(halfstack: HalfStack, kernel_image: str) -> AsyncIterator[AppNode]:
    async with app_node_running(halfstack, "apxidle", {"idle-check-interval": 0.3},
                                **{"activity-flush": "0.2s"}) as app_node:
        yield app_node


async def idle_session(node: Node) -> tuple[tuple[str, str], str, str]:
    """A RUNNING session of a user whose policy ends sessions idle for IDLE_SECONDS."""
    keys = await node.add_keypair({"total_resource_slots": {}, "max_concurrent_sessions": 5,
                                   "idle_timeout": IDLE_SECONDS, "max_session_lifetime": 0})
    name = f"apxi-{secrets.token_hex(3)}"
    status, body = await node.call("POST", "/session", {"name": name, "image": "python"}, keys=keys)
    assert status == 201 and body["status"] == "RUNNING", body
    return keys, name, body["sessionId"]


async def read_http_answer(ws: aiohttp.ClientWebSocketResponse) -> bytes:
    """One whole HTTP/1.1 answer with a Content-Length, from the tunnel's binary frames."""
    got = b""
    while True:
        head, sep, body = got.partition(b"\r\n\r\n")
        if sep:
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            if len(body) >= length:
                return got
        msg = await ws.receive()
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        got += msg.data


async def session_row(node: Node, sid: str) -> Any:
    async with node.db.connect() as conn:
        return (await conn.execute(sa.select(t.sessions).where(t.sessions.c.id == sid))).one()


async def assert_ends_idle(node: Node, sid: str) -> None:
    assert (await session_row(node, sid)).status == "RUNNING"  # traffic kept it past 2x the timeout
    assert await wait_status(node, sid, {"TERMINATED"}, deadline=15) == "TERMINATED"
    assert (await session_row(node, sid)).status_info == IDLE_TIMEOUT


async def test_traffic_through_the_app_proxy_keeps_the_session(idle_apps_node: AppNode) -> None:
    node = idle_apps_node.node
    keys, name, sid = await idle_session(node)
    status, body = await node.call("POST", f"/session/{name}/start-service", {"app": "ttyd"}, keys=keys)
    assert status == 200, body
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        params = {"token": body["token"], "session_id": sid, "app": "ttyd", "protocol": "http"}
        async with browser.get(body["wsproxy_addr"] + "/v2/proxy/auth", params=params) as r:
            assert r.status == 200
            base = f"{r.url.scheme}://{r.url.host}:{r.url.port}"
        end = loop.time() + BUSY_SECONDS  # the browser only talks to the app, never to the manager
        while loop.time() < end:
            async with browser.get(base + "/") as r:
                assert r.status == 200
                await r.read()
            await asyncio.sleep(0.25)  # a user's pace, not a synchronisation
    await assert_ends_idle(node, sid)


async def test_data_through_the_managers_tunnel_keeps_the_session(idle_apps_node: AppNode) -> None:
    node = idle_apps_node.node
    keys, name, sid = await idle_session(node)
    path = f"/stream/session/{name}/tcpproxy?app=ttyd"
    loop = asyncio.get_running_loop()
    async with node.client.ws_connect(path, headers=idle_apps_node.ws_headers(path, keys)) as ws:
        end = loop.time() + BUSY_SECONDS  # one long tunnel; only its data in between
        while loop.time() < end:
            await ws.send_bytes(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            async with asyncio.timeout(10):
                answer = await read_http_answer(ws)
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
            await asyncio.sleep(0.25)  # a user's pace, not a synchronisation
    await assert_ends_idle(node, sid)
