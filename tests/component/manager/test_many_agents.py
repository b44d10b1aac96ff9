"""The scheduler with many dummy agents, over a real database and etcd (bench/scheduler.py at a
small scale), the agent-selection resource priority, and multi-node placement: each kernel of a
multi-node session on an agent of its own choosing, all of them or none."""

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
async def world(halfstack: HalfStack, manager_db: ManagerDB) -> AsyncIterator[tuple[bench.World, ManagerContext]]:
    async with etcd_mod.connect(halfstack.etcd_addr, f"many-{secrets.token_hex(4)}") as etcd:
        w = await bench.setup_world(manager_db.engine, etcd, n_owners=5)
        ctx = ManagerContext(config=ManagerConfig(), db=manager_db.engine, etcd=etcd,  # type: ignore[arg-type]
                             redis_stream=None, redis_ratelimit=None, agents=None, events=None)
        yield w, ctx


@pytest.fixture(autouse=True)
async def clean(world: tuple[bench.World, ManagerContext]) -> AsyncIterator[None]:
    yield
    await bench.clear(world[0])
    async with world[0].db.begin() as conn:
        await conn.execute(t.agents.delete())


@pytest.mark.parametrize(("scheduler", "strategy"), [
    ("fifo", "dispersed"), ("lifo", "concentrated"), ("drf", "roundrobin"), ("mof", "dispersed")])
async def test_every_session_placed_without_over_allocation(world: tuple[bench.World, ManagerContext],
                                                            scheduler: str, strategy: str) -> None:
    w, ctx = world
    groups = ["many-a", "many-b"]
    fleet = bench.make_fleet(20, groups)
    result = await bench.run_one(w, ctx, fleet, bench.make_sessions(200, groups), scheduler, strategy)
    assert result.placed == 200, result
    assert result.over_allocations == []
    # occupied_slots, as the pass wrote it, agrees with the kernels placed on each agent
    async with w.db.connect() as conn:
        rows = (await conn.execute(sa.select(t.agents.c.id, t.agents.c.occupied_slots))).all()
        placed = (await conn.execute(sa.select(t.kernels.c.agent, t.kernels.c.requested_slots)
                                     .where(t.kernels.c.status == "SCHEDULED"))).all()
    by_agent: dict[str, dict[str, Decimal]] = {}
    for agent, slots in placed:
        for k, v in slots.items():
            by_agent.setdefault(agent, {})[k] = by_agent.get(agent, {}).get(k, Decimal(0)) + Decimal(v)
    for agent_id, occupied in rows:
        assert {k: Decimal(v) for k, v in occupied.items() if Decimal(v)} == by_agent.get(agent_id, {}), agent_id


async def test_statements_per_pass_do_not_grow_with_agents(world: tuple[bench.World, ManagerContext]) -> None:
    w, ctx = world
    groups = ["many-c", "many-d"]
    few = await bench.statements_per_pass(w, ctx, 5, 100, groups)
    many = await bench.statements_per_pass(w, ctx, 40, 100, groups)
    assert many <= few, (few, many)


async def _group_with(w: bench.World, name: str, agents: dict[str, dict[str, str]], strategy: str = "dispersed"
                      ) -> None:
    async with w.db.begin() as conn:
        await conn.execute(sa.insert(t.scaling_groups).values(
            name=name, scheduler="fifo", scheduler_opts={"agent_selection_strategy": strategy}))
        for agent_id, slots in agents.items():
            await conn.execute(sa.insert(t.agents).values(
                id=agent_id, status="ALIVE", scaling_group=name, addr=f"http://127.0.0.1:1/{agent_id}",
                available_slots=slots, architecture=bench._arch()))


async def _placements(w: bench.World) -> dict[str, list[str]]:
    """Session name -> the agents of its kernels, by local rank, for SCHEDULED sessions."""
    async with w.db.connect() as conn:
        rows = await conn.execute(
            sa.select(t.sessions.c.name, t.kernels.c.agent)
            .select_from(t.sessions.join(t.kernels, t.kernels.c.session_id == t.sessions.c.id))
            .where(t.sessions.c.status == "SCHEDULED").order_by(t.sessions.c.name, t.kernels.c.local_rank))
        out: dict[str, list[str]] = {}
        for name, agent in rows:
            out.setdefault(name, []).append(agent)
    return out


async def test_resource_priority_decides_which_agent_is_emptiest(world: tuple[bench.World, ManagerContext]) -> None:
    """Dispersed picks the agent with the most free slots, compared in priority order: with cpu
    first the many-core agent, with mem first the big-memory one."""
    w, ctx = world
    await _group_with(w, "prio", {"prio-cores": {"cpu": "16", "mem": str(8 * GiB)},
                                  "prio-memory": {"cpu": "4", "mem": str(64 * GiB)}})
    session = [bench.Session("prio", {"cpu": Decimal(1), "mem": Decimal(GiB)})]
    placed = {}
    for priority in (("cpu", "mem"), ("mem", "cpu")):
        config = ManagerConfig.model_validate({"manager": {"agent-selection-resource-priority": list(priority)}})
        await bench.clear(w)
        await bench.enqueue(w, session)
        result = await Scheduler(ManagerContext(config=config, db=w.db, etcd=ctx.etcd, redis_stream=None,
                                                redis_ratelimit=None, agents=None, events=None)).decide()
        assert len(result.scheduled) == 1
        placed[priority[0]] = (await _placements(w))["b0"]
    assert placed == {"cpu": ["prio-cores"], "mem": ["prio-memory"]}


async def test_multi_node_kernels_spread_over_agents(world: tuple[bench.World, ManagerContext]) -> None:
    w, ctx = world
    await _group_with(w, "mn", {f"mn-{i}": {"cpu": "2", "mem": str(8 * GiB)} for i in range(3)})
    # three kernels of 2 cores: no agent holds two of them, so each lands on another agent
    await bench.enqueue(w, [bench.Session("mn", {"cpu": Decimal(2), "mem": Decimal(GiB)}, cluster_size=3)])
    result = await Scheduler(ctx).decide()
    assert len(result.scheduled) == 1
    assert sorted((await _placements(w))["b0"]) == ["mn-0", "mn-1", "mn-2"]
    assert await bench.over_allocations(w.db, ["mn-0", "mn-1", "mn-2"]) == []
    async with w.db.connect() as conn:
        occupied = dict((await conn.execute(sa.select(t.agents.c.id, t.agents.c.occupied_slots)
                                             .where(t.agents.c.scaling_group == "mn"))).all())
    assert {a: o["cpu"] for a, o in occupied.items()} == {"mn-0": "2", "mn-1": "2", "mn-2": "2"}


async def test_multi_node_is_all_or_nothing(world: tuple[bench.World, ManagerContext]) -> None:
    """Two agents with room for one kernel each: a three-kernel session takes nothing (and says
    why), while a later two-kernel one is placed across both."""
    w, ctx = world
    await _group_with(w, "aon", {f"aon-{i}": {"cpu": "2", "mem": str(8 * GiB)} for i in range(2)})
    await bench.enqueue(w, [bench.Session("aon", {"cpu": Decimal(2), "mem": Decimal(GiB)}, cluster_size=3),
                            bench.Session("aon", {"cpu": Decimal(2), "mem": Decimal(GiB)}, cluster_size=2)])
    result = await Scheduler(ctx).decide()
    assert len(result.scheduled) == 1
    placements = await _placements(w)
    assert list(placements) == ["b1"] and sorted(placements["b1"]) == ["aon-0", "aon-1"]
    async with w.db.connect() as conn:
        first = (await conn.execute(sa.select(t.sessions.c.status, t.sessions.c.status_info)
                                    .where(t.sessions.c.name == "b0"))).one()
        agents_of_first = (await conn.execute(
            sa.select(t.kernels.c.agent).select_from(t.kernels.join(t.sessions, t.sessions.c.id == t.kernels.c.session_id))
            .where(t.sessions.c.name == "b0"))).scalars().all()
    assert tuple(first) == ("PENDING", "no-available-instances")
    assert agents_of_first == [None, None, None]
    assert await bench.over_allocations(w.db, ["aon-0", "aon-1"]) == []


async def test_max_container_count_caps_each_agent(world: tuple[bench.World, ManagerContext]) -> None:
    """etcd ``config/agent/max-container-count`` = 2: two agents with room for many take two
    kernels each, whether single kernels or one multi-node session's; the rest waits."""
    w, ctx = world
    await _group_with(w, "cap", {f"cap-{i}": {"cpu": "64", "mem": str(64 * GiB)} for i in range(2)})
    await ctx.etcd.put("config/agent/max-container-count", "2")
    try:
        small = {"cpu": Decimal(1), "mem": Decimal(GiB)}
        await bench.enqueue(w, [bench.Session("cap", small, cluster_size=2)]  # one kernel on each agent
                            + [bench.Session("cap", small) for _ in range(3)])
        result = await Scheduler(ctx).decide()  # a new Scheduler: nothing cached from etcd
        assert len(result.scheduled) == 3
        placed = await _placements(w)
        assert sorted(placed) == ["b0", "b1", "b2"] and sorted(placed["b0"]) == ["cap-0", "cap-1"]
        async with w.db.connect() as conn:
            counts = dict((await conn.execute(
                sa.select(t.kernels.c.agent, sa.func.count()).where(t.kernels.c.status == "SCHEDULED")
                .group_by(t.kernels.c.agent))).all())
        assert counts == {"cap-0": 2, "cap-1": 2}
        assert len((await Scheduler(ctx).decide()).scheduled) == 0  # the existing kernels count too
    finally:
        await ctx.etcd.delete("config/agent/max-container-count")
