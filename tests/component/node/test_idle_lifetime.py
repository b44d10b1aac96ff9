"""Idle timeout and maximum lifetime from the keypair policy, enforced by the manager's
background checker on a whole node (checking every 0.3 s here): activity keeps a session alive,
silence ends it with ``idle-timeout``; ``max_session_lifetime`` ends even a busy one with
``idle-session-lifetime``; a batch session is never idle while its command runs."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from bai.common.events import REDIS_DB_STREAM
from bai.manager.server import build_app
from bai.manager.services.sessions.activity import LAST_ACCESS_KEY
from bai.manager.store import tables as t
from tests.fixtures.halfstack import HalfStack
from tests.fixtures.node_parts import node_parts

from .conftest import Node
from .test_events import sse
from .test_pty import headers, read_until, type_in
from .test_sessions import wait_status

CHECK_INTERVAL = 0.3


@pytest.fixture(scope="module")
async def idle_node(halfstack: HalfStack, kernel_image: str) -> AsyncIterator[Node]:
    async with node_parts(halfstack, "idle", {"idle-check-interval": CHECK_INTERVAL}) as parts:
        client = TestClient(TestServer(build_app(parts.manager_config), host="127.0.0.1"))
        await client.start_server()
        await parts.agent.start()
        try:
            await parts.wait_agent_registered()
            yield Node(client, parts.db, parts.access_key, parts.secret_key, parts.agent, parts.redis_addr)
        finally:
            await client.close()
            await parts.agent.stop()


def name() -> str:
    return f"i-{secrets.token_hex(5)}"


async def session_row(node: Node, sid: str) -> Any:
    async with node.db.connect() as conn:
        return (await conn.execute(sa.select(t.sessions).where(t.sessions.c.id == sid))).one()


async def run(node: Node, keys: tuple[str, str], ref: str) -> None:
    st, body = await node.call("POST", f"/session/{ref}", {"mode": "query", "code": "print(1)", "runId": None},
                               keys=keys)
    assert st == 200 and body["result"]["status"] == "finished", body


async def keep_busy(node: Node, keys: tuple[str, str], ref: str, seconds: float) -> datetime:
    """Execute every 0.25 s for ``seconds``; answers when the last execute was sent (the session's
    last activity is no earlier than that)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    last_sent = datetime.now().astimezone()
    while loop.time() < end:
        last_sent = datetime.now().astimezone()
        await run(node, keys, ref)
        await asyncio.sleep(0.25)  # the pace of a user's activity, not a synchronisation
    return last_sent


async def test_activity_keeps_a_session_and_silence_ends_it(idle_node: Node) -> None:
    node = idle_node
    keys = await node.add_keypair({"total_resource_slots": {}, "max_concurrent_sessions": 5, "idle_timeout": 2,
                                   "max_session_lifetime": 0})
    n = name()
    async with sse(node, f"/events/session?sessionName={n}&scope=session", keys) as stream:
        st, body = await node.call("POST", "/session", {"name": n, "image": "python"}, keys=keys)
        assert st == 201 and body["status"] == "RUNNING", body
        sid = body["sessionId"]
        quiet_from = await keep_busy(node, keys, n, 3.5)  # longer than the timeout, never idle for 2 s
        assert (await session_row(node, sid)).status == "RUNNING"
        assert await wait_status(node, sid, {"TERMINATED"}, deadline=15) == "TERMINATED"
        got = await stream.until("session_terminated", n)
    r = await session_row(node, sid)
    assert r.status_info == "idle-timeout"
    assert (datetime.fromisoformat(r.status_history["TERMINATING"]) - quiet_from).total_seconds() >= 1.9
    reasons = dict(got)
    assert reasons["session_terminating"]["reason"] == reasons["session_terminated"]["reason"] == "idle-timeout"


async def test_max_lifetime_ends_even_a_busy_session(idle_node: Node) -> None:
    node = idle_node
    keys = await node.add_keypair({"total_resource_slots": {}, "max_concurrent_sessions": 5, "idle_timeout": 0,
                                   "max_session_lifetime": 3})
    n = name()
    st, body = await node.call("POST", "/session", {"name": n, "image": "python"}, keys=keys)
    assert st == 201 and body["status"] == "RUNNING", body
    sid = body["sessionId"]
    loop = asyncio.get_running_loop()
    end = loop.time() + 15
    while (await session_row(node, sid)).status == "RUNNING":
        assert loop.time() < end, "the session outlived its maximum lifetime"
        st, body = await node.call("POST", f"/session/{n}", {"mode": "query", "code": "print(1)", "runId": None},
                                   keys=keys)
        assert st in (200, 400, 404), body  # 400/404 once it is ending
        await asyncio.sleep(0.1)
    assert await wait_status(node, sid, {"TERMINATED"}) == "TERMINATED"
    r = await session_row(node, sid)
    assert r.status_info == "idle-session-lifetime"
    lived = datetime.fromisoformat(r.status_history["TERMINATING"]) - datetime.fromisoformat(
        r.status_history["PREPARING"])
    assert 3.0 <= lived.total_seconds() < 3.0 + 5 * CHECK_INTERVAL + 2, lived


async def test_a_batch_session_is_not_idle_while_its_command_runs(idle_node: Node) -> None:
    node = idle_node
    keys = await node.add_keypair({"total_resource_slots": {}, "max_concurrent_sessions": 5, "idle_timeout": 1,
                                   "max_session_lifetime": 0})
    st, body = await node.call("POST", "/session", {"name": name(), "image": "python", "type": "batch",
                                                    "startupCommand": "sleep 3"}, keys=keys)
    assert st == 201, body
    sid = body["sessionId"]
    assert await wait_status(node, sid, {"TERMINATED"}, deadline=30) == "TERMINATED"
    r = await session_row(node, sid)
    assert (r.result, r.status_info) == ("SUCCESS", "task-finished"), (r.result, r.status_info)


async def test_a_session_without_limits_is_left_alone(idle_node: Node) -> None:
    node = idle_node
    keys = await node.add_keypair({"total_resource_slots": {}, "max_concurrent_sessions": 5, "idle_timeout": 0,
                                   "max_session_lifetime": 0})
    n = name()
    st, body = await node.call("POST", "/session", {"name": n, "image": "python"}, keys=keys)
    assert st == 201 and body["status"] == "RUNNING", body
    sid = body["sessionId"]
    # Checker ticks go by, each one seen through the activity stamp it writes to Redis.
    redis = aioredis.Redis(host="127.0.0.1", port=int(node.redis_addr.rsplit(":", 1)[1]), db=REDIS_DB_STREAM)
    try:
        seen: set[float] = set()
        loop = asyncio.get_running_loop()
        end = loop.time() + 15
        while len(seen) < 4:
            await run(node, keys, n)
            score = await redis.zscore(LAST_ACCESS_KEY, sid)
            if score is not None:
                seen.add(score)
            assert loop.time() < end, seen
            await asyncio.sleep(0.05)
    finally:
        await redis.aclose()
    assert (await session_row(node, sid)).status == "RUNNING"
    assert (await node.call("DELETE", f"/session/{n}", keys=keys))[0] == 200


async def test_terminal_traffic_is_activity(idle_node: Node) -> None:
    node = idle_node
    keys = await node.add_keypair({"total_resource_slots": {}, "max_concurrent_sessions": 5, "idle_timeout": 2,
                                   "max_session_lifetime": 0})
    n = name()
    st, body = await node.call("POST", "/session", {"name": n, "image": "python"}, keys=keys)
    assert st == 201 and body["status"] == "RUNNING", body
    path = f"/stream/session/{n}/pty"
    loop = asyncio.get_running_loop()
    async with node.client.ws_connect(path, headers=headers(node, path, keys)) as ws:
        end = loop.time() + 3.5  # longer than the timeout; only terminal frames in between
        while loop.time() < end:
            await ws.send_json({"type": "ping"})
            while (await ws.receive_json(timeout=10))["type"] != "pong":
                pass
            await asyncio.sleep(0.25)  # a user's pace, not a synchronisation
        await type_in(ws, "echo alive\r")
        await read_until(ws, "alive")
    assert (await session_row(node, body["sessionId"])).status == "RUNNING"
    # and once the terminal is quiet, the timeout applies
    assert await wait_status(node, body["sessionId"], {"TERMINATED"}, deadline=15) == "TERMINATED"
    assert (await session_row(node, body["sessionId"])).status_info == "idle-timeout"
