"""Fault injection against a node of real processes (see conftest): each scenario breaks one
thing, measures how long the node takes to work again and how many running sessions it lost
(must be 0), and leaves the node healthy for the next. Scenarios run in file order and share one
long-lived session, ``keeper``, whose kernel keeps counting in a background thread: its count
going up across a fault proves the very same process kept executing."""

from __future__ import annotations

import asyncio
import time
import tomllib
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa

from bai.common import etcd as etcd_mod
from bai.common.events import REDIS_DB_STREAM, STREAM_KEY
from bai.manager.store import tables as t

from .conftest import Cluster, containers_of, record, until

KEEPER = "keeper"
#: A thread in the kernel bumps `ticks` every 50 ms, independent of any request.
COUNTER = """
import threading, time
ticks = 0
def _tick():
    global ticks
    while True:
        ticks += 1
        time.sleep(0.05)
threading.Thread(target=_tick, daemon=True).start()
print("ok")
"""

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
async def keeper(cluster: Cluster) -> str:
    sid = await cluster.create(KEEPER)
    assert await cluster.run(KEEPER, COUNTER) == "ok\n"
    return sid


async def ticks(cluster: Cluster) -> int:
    return int(await cluster.run(KEEPER, "print(ticks)"))


async def running(cluster: Cluster) -> dict[str, str]:
    """RUNNING sessions and their container IDs, per the database."""
    async with cluster.db.connect() as conn:
        rows = (await conn.execute(
            sa.select(t.sessions.c.id, t.kernels.c.container_id)
            .select_from(t.sessions.join(t.kernels, t.kernels.c.session_id == t.sessions.c.id))
            .where(t.sessions.c.status == "RUNNING"))).all()
    return {str(r.id): r.container_id for r in rows}


async def lost_since(cluster: Cluster, before: dict[str, str]) -> int:
    """Sessions running before a fault that are not running now in the same container (or whose
    container has a twin: a re-adoption that duplicated it counts as a loss too)."""
    now = await running(cluster)
    lost = 0
    for sid, container in before.items():
        found = await containers_of(cluster.agent_id, sid)
        alive = [c for c in found if c["State"]["Running"]]
        if now.get(sid) != container or len(found) != 1 or [c["Id"] for c in alive] != [container]:
            lost += 1
    return lost


async def heartbeat_since(cluster: Cluster, moment: datetime) -> bool:
    seen = await cluster.last_heartbeat()
    return seen is not None and seen > moment


async def test_malformed_and_forged_stream_entries(cluster: Cluster, keeper: str) -> None:
    before = await running(cluster)
    redis = aioredis.Redis(port=cluster.redis_port, db=REDIS_DB_STREAM)
    try:
        addr = await _agent_addr(cluster)
        await redis.xadd(STREAM_KEY, {"name": "kernel_started", "source": cluster.agent_id, "args": "{not json"})
        await redis.xadd(STREAM_KEY, {"name": "agent_heartbeat", "source": cluster.agent_id,
                                      "args": '{"addr": "http://127.0.0.1:9", "resource_slots": {"cpu": "64"}}'})
        injected = datetime.now(UTC)
        took = await until(lambda: heartbeat_since(cluster, injected), "heartbeats handled after the bad entries")
    finally:
        await redis.aclose()
    assert await _agent_addr(cluster) == addr  # the forged address was not taken
    assert await cluster.run(KEEPER, "print(1)") == "1\n"
    lost = await lost_since(cluster, before)
    record("malformed-and-forged-entries", next_event_handled_s=took, sessions_lost=lost)
    assert lost == 0


async def _agent_addr(cluster: Cluster) -> str:
    async with cluster.db.connect() as conn:
        return str(await conn.scalar(sa.select(t.agents.c.addr).where(t.agents.c.id == cluster.agent_id)))


async def test_manager_kill9(cluster: Cluster, keeper: str) -> None:
    before, count = await running(cluster), await ticks(cluster)
    cluster.manager.kill()
    killed = time.monotonic()
    start_s = await asyncio.to_thread(cluster.manager.start, 30)
    await until(cluster.api_up, "the API answering again", 10)
    api_back = time.monotonic() - killed
    # the kernel kept running meanwhile, and the manager routes to it as before
    after = await ticks(cluster)
    exec_back = time.monotonic() - killed
    assert after > count
    lost = await lost_since(cluster, before)
    record("manager-kill9", api_back_s=api_back, process_start_s=start_s, execute_back_s=exec_back,
           kernel_ticks_during=after - count, sessions_lost=lost)
    assert lost == 0
    assert api_back < 5.0


async def test_agent_kill9_with_running_sessions(cluster: Cluster, keeper: str) -> None:
    before, count = await running(cluster), await ticks(cluster)
    cluster.agent.kill()
    killed = time.monotonic()
    assert [c["State"]["Running"] for c in await containers_of(cluster.agent_id, keeper)] == [True]
    await asyncio.to_thread(cluster.agent.start, 60)
    await until(_runs(cluster), "execute through the re-adopted kernel", 30, interval=0.1)
    back = time.monotonic() - killed
    assert await ticks(cluster) > count  # same process, never restarted
    lost = await lost_since(cluster, before)
    record("agent-kill9", execute_back_s=back, sessions_lost=lost)
    assert lost == 0
    assert (await cluster.session_statuses())[KEEPER] == "RUNNING"


def _runs(cluster: Cluster) -> Any:
    async def check() -> bool:
        try:
            return await cluster.run(KEEPER, "print('up')", deadline=5) == "up\n"
        except AssertionError:
            return False
    return check


async def test_session_destroyed_while_its_agent_is_down(cluster: Cluster, keeper: str) -> None:
    idle = await cluster.agent_occupied()
    victim = await cluster.create("victim")
    before = {k: v for k, v in (await running(cluster)).items() if k != victim}
    cluster.agent.kill()
    st, body = await cluster.call("DELETE", "/session/victim")
    assert st == 200, body
    assert (await cluster.session_statuses())["victim"] == "TERMINATED"
    assert await cluster.agent_occupied() == idle  # free on the manager's side at once
    [orphan] = await containers_of(cluster.agent_id, victim)  # the agent was not there to remove it
    assert orphan["State"]["Running"]
    restarted = time.monotonic()
    await asyncio.to_thread(cluster.agent.start, 60)

    async def removed() -> bool:
        return not await containers_of(cluster.agent_id, victim)
    await until(removed, "the orphan container removed", 30, interval=0.1)
    gone = time.monotonic() - restarted
    # its slots are free on the agent too: a session needing them starts
    probe = await cluster.create("after-orphan")
    assert (await cluster.call("DELETE", "/session/after-orphan"))[0] == 200
    lost = await lost_since(cluster, before)
    record("destroyed-while-agent-down", orphan_removed_after_agent_start_s=gone, sessions_lost=lost)
    assert probe and lost == 0
    assert await cluster.agent_occupied() == idle


async def test_redis_restarted_empty(cluster: Cluster, keeper: str) -> None:
    before = await running(cluster)
    cluster.redis.kill()
    down = time.monotonic()
    await asyncio.to_thread(cluster.redis.start, 20)
    back = datetime.now(UTC)
    await until(lambda: heartbeat_since(cluster, back), "heartbeats handled again", 30)
    heartbeats = time.monotonic() - down
    await cluster.create("after-redis")
    scheduled = time.monotonic() - down
    assert (await cluster.call("DELETE", "/session/after-redis"))[0] == 200
    assert await cluster.run(KEEPER, "print(2)") == "2\n"
    lost = await lost_since(cluster, before)
    record("redis-restarted-empty", heartbeats_back_s=heartbeats, new_session_running_s=scheduled,
           sessions_lost=lost)
    assert lost == 0


async def test_etcd_kill9(cluster: Cluster, keeper: str) -> None:
    """etcd crashes: running sessions keep executing, what needs etcd answers 503 (not 500)
    while it is away, and once it is back the manager and agent registrations are there and new
    sessions start."""
    before = await running(cluster)
    conf = tomllib.loads((cluster.root / "manager.toml").read_text())
    cluster.etcd.kill()
    down = time.monotonic()
    st, body = await cluster.call("GET", "/manager/announcement", deadline=20)
    assert st == 503 and body["type"].endswith("/service-unavailable"), (st, body)
    outage_answer = time.monotonic() - down
    assert await cluster.run(KEEPER, "print(4)") == "4\n"  # execution does not go through etcd
    await asyncio.to_thread(cluster.etcd.start, 20)
    etcd_up = time.monotonic() - down

    async def serving() -> bool:
        return (await cluster.call("GET", "/manager/announcement", deadline=5))[0] == 200
    await until(serving, "the announcement served from etcd again", 30, interval=0.1)
    api_back = time.monotonic() - down

    async def registered() -> bool:
        async with etcd_mod.connect(conf["etcd"]["addr"], conf["etcd"]["namespace"], call_deadline=3) as store:
            nodes = await store.get_prefix("nodes/")
        return f"manager/{conf['manager']['id']}" in nodes and f"agents/{cluster.agent_id}" in nodes
    await until(registered, "manager and agent registered in etcd", 30, interval=0.2)
    registrations = time.monotonic() - down
    await cluster.create("after-etcd")
    scheduled = time.monotonic() - down
    assert (await cluster.call("DELETE", "/session/after-etcd"))[0] == 200
    lost = await lost_since(cluster, before)
    record("etcd-kill9", outage_answer_s=outage_answer, etcd_back_s=etcd_up, api_back_s=api_back,
           registrations_s=registrations, new_session_running_s=scheduled, sessions_lost=lost)
    assert lost == 0


async def test_postgres_restarted(cluster: Cluster, keeper: str) -> None:
    before = await running(cluster)
    down = time.monotonic()
    await asyncio.to_thread(cluster.pg.stop)
    assert cluster.pg.proc is not None and cluster.pg.proc.poll() is not None
    statuses: list[int] = []

    async def api_answers() -> bool:
        st, _ = await cluster.call("GET", f"/session/{KEEPER}", deadline=5)
        statuses.append(st)
        return st == 200

    async def api_fails() -> bool:
        return not await api_answers()
    # Keep it down until the manager has felt it (a database-backed request failed, and the
    # event loop is retrying a heartbeat it could not record), then restart.
    await until(api_fails, "the manager noticing the database is gone", 10)
    outage_status = statuses[-1]
    assert outage_status == 503  # problem+json "service-unavailable", not a 500 with a traceback
    log_before = cluster.manager.log.read_text(errors="replace").count("transient error")

    async def retrying() -> bool:
        return cluster.manager.log.read_text(errors="replace").count("transient error") > log_before
    await until(retrying, "the event consumer retrying over the outage", 10)
    await asyncio.to_thread(cluster.pg.start, 30)
    pg_up = time.monotonic() - down
    back = datetime.now(UTC)
    await until(api_answers, "the API serving from the database again", 30, interval=0.1)
    api_back = time.monotonic() - down
    await until(lambda: heartbeat_since(cluster, back), "heartbeats recorded again", 30)
    heartbeats = time.monotonic() - down
    await cluster.create("after-pg")
    scheduled = time.monotonic() - down
    assert (await cluster.call("DELETE", "/session/after-pg"))[0] == 200
    assert await cluster.run(KEEPER, "print(3)") == "3\n"
    lost = await lost_since(cluster, before)
    record("postgres-restarted", outage_status=outage_status, postgres_back_s=pg_up, api_back_s=api_back, heartbeats_back_s=heartbeats,
           new_session_running_s=scheduled, sessions_lost=lost)
    assert lost == 0
    assert (await cluster.call("DELETE", f"/session/{KEEPER}"))[0] == 200
