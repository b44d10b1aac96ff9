"""cuda.shares placement by each GPU's free shares (the agents' heartbeat ``placement``), over a
real database and etcd: a request that fits an agent's total but none of its GPUs is not sent
there; it lands on an agent where one GPU has the room, or waits PENDING naming the slot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from bai.manager import errors
from bai.manager.services.context import ManagerContext
from bai.manager.services.scheduler import Scheduler
from bai.manager.services.scheduling import admission
from bai.manager.store import tables as t
from bench import scheduler as bench

from . import test_many_agents as many

# the fixtures of the many-agents tests (a bench world; agents and sessions cleared after each test)
world, clean, _placements = many.world, many.clean, many._placements

GiB = 2**30
Shares = dict[str, str]


async def _agents(w: bench.World, group: str, agents: dict[str, tuple[str, Shares]]) -> None:
    """``{agent id: (total cuda.shares, {gpu: free shares at its last heartbeat})}``, all in ``group``
    (dispersed: the most free in total first)."""
    now = datetime.now(UTC)
    async with w.db.begin() as conn:
        await conn.execute(sa.insert(t.scaling_groups).values(
            name=group, scheduler="fifo", scheduler_opts={"agent_selection_strategy": "dispersed"}))
        for agent_id, (total, free) in agents.items():
            await conn.execute(sa.insert(t.agents).values(
                id=agent_id, status="ALIVE", scaling_group=group, addr=f"http://127.0.0.1:1/{agent_id}",
                available_slots={"cpu": "8", "mem": str(32 * GiB), "cuda.shares": total},
                architecture=bench._arch(), last_seen=now,
                compute_plugins={"cuda": {"version": "1.0", "mode": "fractional",
                                          "placement": {"cuda.shares": free}}}))


async def _running(w: bench.World, group: str, holders: dict[str, str], since: timedelta) -> None:
    """Sessions already RUNNING on agents (``{agent: shares}``), running for ``since``."""
    await bench.enqueue(w, [bench.Session(group, {"cpu": Decimal(1), "cuda.shares": Decimal(s)})
                            for s in holders.values()])
    async with w.db.begin() as conn:
        for name, agent in zip((f"b{i}" for i in range(len(holders))), holders, strict=True):
            sid = (await conn.execute(sa.select(t.sessions.c.id).where(t.sessions.c.name == name))).scalar_one()
            await conn.execute(t.sessions.update().where(t.sessions.c.id == sid).values(
                status="RUNNING", name=f"running-{agent}"))
            await conn.execute(t.kernels.update().where(t.kernels.c.session_id == sid).values(
                status="RUNNING", agent=agent, status_changed=datetime.now(UTC) - since))


async def _state(w: bench.World, name: str) -> tuple[str, str | None, dict[str, Any]]:
    async with w.db.connect() as conn:
        row = (await conn.execute(sa.select(t.sessions.c.status, t.sessions.c.status_info, t.sessions.c.status_data)
                                  .where(t.sessions.c.name == name))).one()
    return row.status, row.status_info, row.status_data or {}


async def _enqueue_named(w: bench.World, group: str, shares: list[str], prefix: str) -> list[str]:
    await bench.enqueue(w, [bench.Session(group, {"cpu": Decimal(1), "cuda.shares": Decimal(s)}) for s in shares])
    async with w.db.begin() as conn:
        for i in range(len(shares)):
            await conn.execute(t.sessions.update().where(t.sessions.c.name == f"b{i}").values(name=f"{prefix}{i}"))
    return [f"{prefix}{i}" for i in range(len(shares))]


async def test_lands_where_one_gpu_fits_and_waits_naming_the_slot_when_none(
        world: tuple[bench.World, ManagerContext]) -> None:
    w, ctx = world
    # frag-a: 1 share free in total as 0.5 + 0.5; frag-b: 0.8 free, all on one GPU
    await _agents(w, "frag", {"frag-a": ("4", {"g0": "0.5", "g1": "0.5"}),
                              "frag-b": ("2", {"g2": "0", "g3": "0.8"})})
    await _running(w, "frag", {"frag-a": "3", "frag-b": "1.2"}, since=timedelta(minutes=1))
    first, second = await _enqueue_named(w, "frag", ["0.8", "0.8"], "want")
    result = await Scheduler(ctx).decide()
    assert [s.name for s in result.scheduled] == [first]
    # dispersed would have taken frag-a (more free in total), which no GPU of could hold it
    assert (await _placements(w))[first] == ["frag-b"]
    status, info, data = await _state(w, second)
    assert (status, info) == ("PENDING", "no-available-instances")
    assert data["scheduler"]["msg"] == (
        "No agent has 0.8 cuda.shares free on a single device (one kernel's cuda.shares must lie on one "
        "device; the most one device has free now: 0.5)")
    assert await bench.over_allocations(w.db, ["frag-a", "frag-b"]) == []
    # a smaller one fits a GPU of frag-a
    small, = await _enqueue_named(w, "frag", ["0.5"], "small")
    assert [s.name for s in (await Scheduler(ctx).decide()).scheduled] == [small]
    assert (await _placements(w))[small] == ["frag-a"]
    assert (await _state(w, second))[0] == "PENDING"


async def test_kernels_newer_than_the_heartbeat_count_against_its_report(
        world: tuple[bench.World, ManagerContext]) -> None:
    """A kernel RUNNING only since about the last heartbeat may not be in its report: the
    scheduler assumes it took from the GPU that would have fitted, and holds the request back."""
    w, ctx = world
    await _agents(w, "fresh", {"fresh-a": ("2", {"g0": "1", "g1": "0.2"})})
    await _running(w, "fresh", {"fresh-a": "0.5"}, since=timedelta(seconds=0))
    want, = await _enqueue_named(w, "fresh", ["0.8"], "want")
    assert (await Scheduler(ctx).decide()).scheduled == []
    assert (await _state(w, want))[1] == "no-available-instances"
    # once that kernel is older than the heartbeat (the next one reported it), the GPU's 1 is sure
    async with w.db.begin() as conn:
        await conn.execute(t.kernels.update().where(t.kernels.c.status == "RUNNING").values(
            status_changed=datetime.now(UTC) - timedelta(minutes=1)))
    assert [s.name for s in (await Scheduler(ctx).decide()).scheduled] == [want]


async def test_a_request_no_single_gpu_could_ever_hold_is_refused_at_create(
        world: tuple[bench.World, ManagerContext]) -> None:
    """Create-time: each kernel's cuda.shares must fit one GPU of some agent (the heartbeat's
    ``placement_capacity``), not only the agent's total."""
    w, _ = world
    await _agents(w, "ever", {"ever-a": ("79.64", {"g0": "39.82", "g1": "39.82"})})
    async with w.db.begin() as conn:
        await conn.execute(t.agents.update().where(t.agents.c.id == "ever-a").values(compute_plugins={"cuda": {
            "placement": {"cuda.shares": {"g0": "39.82", "g1": "39.82"}},
            "placement_capacity": {"cuda.shares": {"g0": "39.82", "g1": "39.82"}}}}))
    arch = bench._arch()
    async with w.db.connect() as conn:
        with pytest.raises(errors.InvalidAPIParameters) as refused:
            await admission.check_capacity(conn, "ever", arch, {"cuda.shares": Decimal(50)}, "single-node", 1)
        assert refused.value.msg == (
            "No agent of resource group 'ever' could ever hold this request (no single device holds 50 "
            "cuda.shares (one kernel's cuda.shares must lie on one device; the largest has 39.82)).")
        await admission.check_capacity(conn, "ever", arch, {"cuda.shares": Decimal(30)}, "single-node", 1)
        # two kernels of 30 on one agent: one on each GPU
        await admission.check_capacity(conn, "ever", arch, {"cuda.shares": Decimal(30)}, "single-node", 2)
        with pytest.raises(errors.InvalidAPIParameters, match="cuda.shares: 120 > 79.64"):
            await admission.check_capacity(conn, "ever", arch, {"cuda.shares": Decimal(30)}, "single-node", 4)
