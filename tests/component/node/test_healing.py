"""The manager's view heals itself, through the real manager, agent, Redis and Docker: forged and
malformed stream entries are dropped without stopping the flow, a Redis that lost its data is
picked up again, sessions stuck half-way are failed with their slots freed, and a container whose
session ended while its agent was unreachable is removed once the agent answers again."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiodocker
import redis.asyncio as aioredis
import sqlalchemy as sa

from bai.common.events import DEAD_LETTER_KEY, REDIS_DB_STREAM, STREAM_KEY, EventProducer
from bai.manager.api.keys import CTX
from bai.manager.services.lifecycle import sweep_stuck_sessions
from bai.manager.store import tables as t

from .conftest import Node


def name() -> str:
    return f"h-{secrets.token_hex(5)}"


async def until(check: Callable[[], Awaitable[Any]], what: str, deadline: float = 20.0) -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        got = await check()
        if got:
            return got
        if loop.time() > end:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


def redis_of(node: Node) -> aioredis.Redis:
    host, _, port = node.redis_addr.rpartition(":")
    return aioredis.Redis(host=host, port=int(port), db=REDIS_DB_STREAM)


async def agent_row(node: Node) -> Any:
    async with node.db.connect() as conn:
        return (await conn.execute(sa.select(t.agents).where(t.agents.c.id == node.agent.config.agent.id))).one()


async def heartbeat_after(node: Node, moment: datetime) -> bool:
    return bool((await agent_row(node)).last_seen > moment)


async def containers_of(session_id: str) -> list[dict[str, Any]]:
    async with aiodocker.Docker() as docker:
        found = await docker.containers.list(
            all=True, filters=json.dumps({"label": [f"ai.backend.session-id={session_id}"]}))
        return [await c.show() for c in found]


async def session_row(node: Node, session_id: str) -> Any:
    async with node.db.connect() as conn:
        return (await conn.execute(sa.select(t.sessions).where(t.sessions.c.id == session_id))).one()


async def test_forged_and_malformed_entries_are_dropped_and_the_flow_goes_on(node: Node) -> None:
    redis = redis_of(node)
    try:
        real_addr = (await agent_row(node)).addr
        agent_id = node.agent.config.agent.id
        forged_args = json.dumps({"id": agent_id, "addr": "http://127.0.0.1:9", "resource_slots": {"cpu": "999"}})
        await redis.xadd(STREAM_KEY, {"name": "agent_heartbeat", "source": agent_id, "args": forged_args})
        await redis.xadd(STREAM_KEY, {"name": "agent_heartbeat", "source": agent_id, "args": forged_args,
                                      "ts": "1", "sig": "ab" * 32})
        await redis.xadd(STREAM_KEY, {"name": "kernel_started", "source": agent_id, "args": "{oops"})
        await redis.xadd(STREAM_KEY, {"no": "fields"})
        # authentic, but its handler fails (no kernel_id): set aside too, not retried forever
        signed = EventProducer(redis, signing_key=node.client.app[CTX].events.signing_key)
        await signed.produce("kernel_started", agent_id, session_id="not-even-a-uuid")
        sent = datetime.now(UTC)
        # the real heartbeats behind them are still handled ...
        await until(lambda: heartbeat_after(node, sent), "a heartbeat after the bad entries")
        dead = await until(lambda: redis.xrange(DEAD_LETTER_KEY), "entries on the dead-letter stream")
        await until(lambda: _count(redis, 5), "the five bad entries set aside")
        errors = [d[1][b"error"].decode() for d in await redis.xrange(DEAD_LETTER_KEY)]
        assert {"unsigned", "invalid signature"} <= set(errors)
        assert "KeyError('kernel_id')" in errors
        assert dead
        # ... and the forged address never reached the agents table
        row = await agent_row(node)
        assert row.addr == real_addr and row.available_slots.get("cpu") != "999"
        # a session still starts and runs code
        n = name()
        st, body = await node.call("POST", "/session", {"name": n, "image": "python"})
        assert st == 201 and body["status"] == "RUNNING", body
        assert (await node.call("DELETE", f"/session/{n}"))[0] == 200
    finally:
        await redis.aclose()


async def _count(redis: aioredis.Redis, at_least: int) -> bool:
    return int(await redis.xlen(DEAD_LETTER_KEY)) >= at_least


async def test_redis_losing_its_data_does_not_stop_the_flow(node: Node) -> None:
    redis = redis_of(node)
    try:
        await redis.flushall()  # as if Redis restarted without persistence: stream and group gone
        wiped = datetime.now(UTC)
        await until(lambda: heartbeat_after(node, wiped), "heartbeats handled again")
        groups = await redis.xinfo_groups(STREAM_KEY)
        assert [g["name"] for g in groups] == [b"manager"]
        n = name()
        st, body = await node.call("POST", "/session", {"name": n, "image": "python"})
        assert st == 201 and body["status"] == "RUNNING", body
        assert (await node.call("DELETE", f"/session/{n}"))[0] == 200
    finally:
        await redis.aclose()


async def _backdate(node: Node, session_id: str, status: str, minutes: int = 30) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()
    async with node.db.begin() as conn:
        await conn.execute(t.sessions.update().where(t.sessions.c.id == session_id).values(
            status=status, status_history=sa.func.jsonb_set(
                t.sessions.c.status_history, sa.text(f"'{{{status}}}'"), sa.func.to_jsonb(past))))
        await conn.execute(t.kernels.update().where(t.kernels.c.session_id == session_id).values(status=status))


async def occupied_cpu(node: Node) -> str:
    return str((await agent_row(node)).occupied_slots.get("cpu", "0"))


async def test_sweep_fails_sessions_stuck_half_way_and_frees_their_slots(node: Node) -> None:
    app = node.client.app
    ctx = app[CTX]
    idle_cpu = await occupied_cpu(node)
    # one stuck while starting (its container did start: the sweep must not leave it behind) and
    # one whose destroy never finished (two sessions: this machine has room for two at a time)
    starting, stopping = name(), name()
    ids = {}
    for n in (starting, stopping):
        st, body = await node.call("POST", "/session", {"name": n, "image": "python"})
        assert st == 201 and body["status"] == "RUNNING", body
        ids[n] = body["sessionId"]
    await _backdate(node, ids[starting], "PREPARING")
    await _backdate(node, ids[stopping], "TERMINATING")
    assert await sweep_stuck_sessions(ctx, older_than=3600) == []  # not stuck for that long
    failed = await sweep_stuck_sessions(ctx)
    assert set(map(str, failed)) == {ids[starting], ids[stopping]}
    row = await session_row(node, ids[starting])
    assert (row.status, row.status_info) == ("CANCELLED", "hang-timeout")
    row = await session_row(node, ids[stopping])
    assert (row.status, row.status_info) == ("TERMINATED", "hang-timeout")
    for n in (starting, stopping):
        await until(lambda n=n: _no_containers(ids[n]), f"containers of {n} removed")
    assert await occupied_cpu(node) == idle_cpu
    assert await sweep_stuck_sessions(ctx) == []


async def _no_containers(session_id: str) -> bool:
    return not await containers_of(session_id)


async def test_container_of_a_session_ended_while_its_agent_was_unreachable_is_removed(node: Node) -> None:
    """The manager closes the session although the destroy could not reach the agent; when the
    agent's next heartbeat arrives the manager reconciles at once and removes the container."""
    ctx = node.client.app[CTX]
    idle_cpu = await occupied_cpu(node)
    n = name()
    st, body = await node.call("POST", "/session", {"name": n, "image": "python"})
    assert st == 201 and body["status"] == "RUNNING", body
    sid = body["sessionId"]
    assert await containers_of(sid)
    # What a destroy during the agent's absence leaves: the session TERMINATED in the database,
    # the container still running, and the agent noted as unreachable by the failed RPC.
    async with node.db.begin() as conn:
        await conn.execute(t.sessions.update().where(t.sessions.c.id == sid).values(status="TERMINATED"))
        await conn.execute(t.kernels.update().where(t.kernels.c.session_id == sid).values(status="TERMINATED"))
    addr = (await agent_row(node)).addr
    ctx.agents.unreachable.add(addr.rstrip("/"))
    await until(lambda: _no_containers(sid), "the orphan container removed after the next heartbeat", 15)
    assert not ctx.agents.needs_reconciliation(addr)
    assert all(k["session_id"] != sid for k in node.agent.agent.list_kernels())  # type: ignore[union-attr]
    await until(lambda: _cpu_is(node, idle_cpu), "slots free again on the manager's side")


async def _cpu_is(node: Node, value: str) -> bool:
    return await occupied_cpu(node) == value


async def test_a_blocking_create_answers_timeout_by_default(node: Node) -> None:
    """maxWaitSeconds=0 no longer means "forever": after ``default-create-wait`` the original's
    TIMEOUT answer comes back, and the session stays queued for the client to follow."""
    ctx = node.client.app[CTX]
    original = ctx.config
    # a session holding every core, so that the next one stays PENDING
    hog = name()
    st, body = await node.call("POST", "/session", {"name": hog, "image": "python", "config": {"resources": {
        "cpu": (await agent_row(node)).available_slots["cpu"], "mem": "256m"}}})
    assert st == 201 and body["status"] == "RUNNING", body
    ctx.config = original.model_copy(update={
        "manager": original.manager.model_copy(update={"default_create_wait": 1.0})})
    try:
        n = name()
        loop = asyncio.get_running_loop()
        began = loop.time()
        st, body = await node.call("POST", "/session", {  # no core free: stays PENDING
            "name": n, "image": "python", "config": {"resources": {"cpu": "1", "mem": "256m"}}})
        took = loop.time() - began
        assert st == 201 and body["status"] == "TIMEOUT", body
        assert 1.0 <= took < 5.0
        assert (await session_row(node, body["sessionId"])).status == "PENDING"
        assert (await node.call("DELETE", f"/session/{n}"))[0] == 200
    finally:
        ctx.config = original
        assert (await node.call("DELETE", f"/session/{hog}"))[0] == 200
