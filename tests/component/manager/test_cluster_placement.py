"""Multi-node placement and the overlay network, over a real database and etcd: without the
overlay (etcd ``config/network/overlay/enabled``) a multi-node session is kept on the agents of
one host (they share a Docker engine, so the kernels can meet on a local bridge) and waits,
saying why, when only several hosts together have room; with the overlay it spreads across
hosts."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import sqlalchemy as sa

from bai.common import etcd as etcd_mod
from bai.manager.config import ManagerConfig
from bai.manager.services.context import ManagerContext
from bai.manager.services.scheduler import Scheduler
from bai.manager.store import tables as t
from bench import scheduler as bench
from tests.fixtures.halfstack import HalfStack

from .conftest import ManagerDB

GiB = 2**30


@pytest.fixture(scope="module")
async def world(halfstack: HalfStack, manager_db: ManagerDB) -> AsyncIterator[tuple[bench.World, etcd_mod.EtcdStore]]:
    async with etcd_mod.connect(halfstack.etcd_addr, f"cp-{secrets.token_hex(4)}") as etcd:
        yield await bench.setup_world(manager_db.engine, etcd, n_owners=2), etcd


@pytest.fixture(autouse=True)
async def clean(world: tuple[bench.World, etcd_mod.EtcdStore]) -> AsyncIterator[None]:
    yield
    await bench.clear(world[0])
    async with world[0].db.begin() as conn:
        await conn.execute(t.agents.delete())
    await world[1].delete("config/network/overlay/enabled")


def _scheduler(w: bench.World, etcd: etcd_mod.EtcdStore) -> Scheduler:
    # a new one each time: it caches etcd's overlay setting for a few seconds
    return Scheduler(ManagerContext(config=ManagerConfig(), db=w.db, etcd=etcd, redis_stream=None,  # type: ignore[arg-type]
                                    redis_ratelimit=None, agents=None, events=None))  # type: ignore[arg-type]


async def _group(w: bench.World, name: str, agents: dict[str, str]) -> None:
    """``agents``: id -> the host of its RPC address; each agent has 2 cores."""
    async with w.db.begin() as conn:
        await conn.execute(sa.insert(t.scaling_groups).values(
            name=name, scheduler="fifo", scheduler_opts={"agent_selection_strategy": "dispersed"}))
        for agent_id, host in agents.items():
            await conn.execute(sa.insert(t.agents).values(
                id=agent_id, status="ALIVE", scaling_group=name, addr=f"http://{host}:6001",
                available_slots={"cpu": "2", "mem": str(8 * GiB)}, architecture=bench._arch()))


async def _session(w: bench.World, group: str) -> tuple[str, list[str | None], str | None]:
    async with w.db.connect() as conn:
        row = (await conn.execute(sa.select(t.sessions).where(t.sessions.c.scaling_group_name == group))).one()
        agents = (await conn.execute(sa.select(t.kernels.c.agent).where(t.kernels.c.session_id == row.id)
                                     .order_by(t.kernels.c.local_rank))).scalars().all()
    return row.status, list(agents), ((row.status_data or {}).get("scheduler") or {}).get("msg")


def _two_kernels(group: str) -> list[bench.Session]:
    return [bench.Session(group, {"cpu": Decimal(2), "mem": Decimal(GiB)}, cluster_size=2)]


async def test_without_the_overlay_a_session_stays_on_one_host(world: tuple[bench.World, etcd_mod.EtcdStore]) -> None:
    w, etcd = world
    # the dispersed policy would start on the lone agent of 10.0.0.1 (lowest id among equals)
    await _group(w, "one-host", {"oh-0": "10.0.0.1", "oh-1": "10.0.0.2", "oh-2": "10.0.0.2"})
    await bench.enqueue(w, _two_kernels("one-host"))
    assert len((await _scheduler(w, etcd).decide()).scheduled) == 1
    status, agents, _ = await _session(w, "one-host")
    assert status == "SCHEDULED" and sorted(agents) == ["oh-1", "oh-2"]  # type: ignore[type-var]
    assert await bench.over_allocations(w.db, ["oh-0", "oh-1", "oh-2"]) == []


async def test_across_hosts_it_waits_for_the_overlay(world: tuple[bench.World, etcd_mod.EtcdStore]) -> None:
    w, etcd = world
    await _group(w, "two-hosts", {"th-0": "10.0.1.1", "th-1": "10.0.1.2"})
    await bench.enqueue(w, _two_kernels("two-hosts"))
    assert (await _scheduler(w, etcd).decide()).scheduled == []
    status, agents, msg = await _session(w, "two-hosts")
    assert status == "PENDING" and agents == [None, None]
    assert msg is not None and "needs the overlay network" in msg and "config/network/overlay/enabled" in msg, msg
    async with w.db.connect() as conn:  # nothing stays reserved
        occupied = (await conn.execute(sa.select(t.agents.c.occupied_slots))).scalars().all()
    assert all(Decimal(o.get("cpu", "0")) == 0 for o in occupied), occupied

    await etcd.put("config/network/overlay/enabled", "true")
    assert len((await _scheduler(w, etcd).decide()).scheduled) == 1
    status, agents, _ = await _session(w, "two-hosts")
    assert status == "SCHEDULED" and sorted(agents) == ["th-0", "th-1"]  # type: ignore[type-var]
