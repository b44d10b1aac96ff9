"""Scheduler benchmark: many dummy agents, thousands of pending sessions, every scheduler.

200 dummy-backend agents (``bai.agent.dummy.DummyAgent``, in-process; registered through the
manager's real heartbeat store path) in several resource groups, with mixed GPU/CPU capacities
(``[dummy] slots`` incl. ``cuda.device``), and 2,000 PENDING sessions of mixed sizes (a few of
them multi-node), on a throwaway PostgreSQL and etcd. For each scheduler (fifo, lifo, drf, mof) x
agent-selection strategy, the real ``Scheduler.decide`` passes run until every session is placed
(or a pass places nothing), and the run reports:

  * scheduler wall time (sum of the passes) and placements per second;
  * final utilisation of cpu, mem and cuda.device over all agents;
  * over-allocations, read back from the database: agents whose kernels' requested slots
    (SCHEDULED kernels) sum to more than the agent's capacity in any slot -- must be 0;
  * SQL statements per scheduling pass (SQLAlchemy ``before_cursor_execute``), with 50 and with
    200 agents: must not grow with the number of agents.

Targets: all 2,000 placed in under 5 s of scheduler time for every scheduler; 0 over-allocations.

Usage: /opt/bai/venv/bin/python bench/scheduler.py [--agents 200] [--sessions 2000] [--groups 4] [--json]
(tests/component/manager/test_many_agents.py runs the same code at 20 x 200).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bai.agent.config import AgentConfig  # noqa: E402
from bai.agent.dummy import DummyAgent  # noqa: E402
from bai.common import etcd as etcd_mod  # noqa: E402
from bai.common.types import slots_from_json, slots_to_json  # noqa: E402
from bai.manager.config import ManagerConfig  # noqa: E402
from bai.manager.services.context import ManagerContext  # noqa: E402
from bai.manager.services.scheduler import Scheduler  # noqa: E402
from bai.manager.store import agents as agent_store  # noqa: E402
from bai.manager.store import fixtures  # noqa: E402
from bai.manager.store import tables as t  # noqa: E402

GiB = 2**30
#: Agent shapes (dummy slots) and their share of the fleet: GPU and CPU nodes, big and small.
AGENT_SHAPES: list[tuple[float, dict[str, Any]]] = [
    (0.20, {"cpu": 64, "mem": "512g", "cuda.device": 8}),
    (0.20, {"cpu": 32, "mem": "256g", "cuda.device": 4}),
    (0.30, {"cpu": 96, "mem": "768g"}),
    (0.30, {"cpu": 48, "mem": "384g"}),
]
#: (scheduler, agent_selection_strategy) pairs measured; mof picks agents its own way.
COMBINATIONS = [(s, a) for s in ("fifo", "lifo", "drf") for a in ("dispersed", "concentrated", "roundrobin")] \
    + [("mof", "dispersed")]


@dataclass
class Session:
    group: str
    per_kernel: dict[str, Decimal]
    cluster_size: int = 1


@dataclass
class Fleet:
    agents: list[DummyAgent]
    groups: list[str]

    def capacity(self) -> dict[str, Decimal]:
        total: dict[str, Decimal] = {}
        for a in self.agents:
            for k, v in a.allocator.capacity.items():
                total[k] = total.get(k, Decimal(0)) + v
        return total


def make_fleet(n_agents: int, groups: list[str], seed: int = 1) -> Fleet:
    """Every group gets the same mix of shapes (in a shuffled order)."""
    rng = random.Random(seed)
    pattern = [shape for weight, shape in AGENT_SHAPES for _ in range(round(weight * 10))]
    agents = []
    for i in range(n_agents):
        group, nth = groups[i % len(groups)], i // len(groups)
        if nth % len(pattern) == 0:
            rng.shuffle(pattern)
        shape = pattern[nth % len(pattern)]
        config = AgentConfig.model_validate({
            "agent": {"id": f"bench-{group}-{i:04d}", "backend": "dummy", "scaling-group": group},
            "dummy": {"slots": shape}})
        agent = DummyAgent(config, events=None)  # type: ignore[arg-type]  # registered directly, no events
        agent.addr = f"http://127.0.0.1:1/{config.agent.id}"  # never called: the bench stops at SCHEDULED
        agents.append(agent)
    return Fleet(agents, groups)


def make_sessions(n: int, groups: list[str], seed: int = 2) -> list[Session]:
    """Mixed sizes: mostly 1-8 cores, 1-32 GiB; 10% want 1-2 GPUs; 5% are multi-node (2-3 kernels)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        cpu = rng.choice([1, 1, 2, 2, 4, 4, 8])
        slots = {"cpu": Decimal(cpu), "mem": Decimal(rng.choice([1, 2, 4, 8, 16, 32]) * GiB)}
        if rng.random() < 0.10:
            slots["cuda.device"] = Decimal(rng.choice([1, 1, 2]))
        size = rng.choice([2, 3]) if rng.random() < 0.05 else 1
        out.append(Session(groups[i % len(groups)], slots, size))
    return out


@dataclass
class World:
    db: AsyncEngine
    etcd: etcd_mod.EtcdStore
    group_id: uuid.UUID
    owners: list[tuple[str, uuid.UUID]] = field(default_factory=list)


async def setup_world(db: AsyncEngine, etcd: etcd_mod.EtcdStore, n_owners: int = 20) -> World:
    async with db.begin() as conn:
        gid = await conn.scalar(sa.select(t.groups.c.id).where(t.groups.c.name == "default"))
        assert gid is not None
        world = World(db, etcd, gid)
        policy = f"bench-{secrets.token_hex(3)}"
        await conn.execute(sa.insert(t.keypair_resource_policies).values(name=policy, max_concurrent_sessions=0))
        for _ in range(n_owners):
            ak, sk = fixtures.generate_keypair()
            user, tag = uuid.uuid4(), secrets.token_hex(4)
            await conn.execute(sa.insert(t.users).values(
                uuid=user, email=f"{tag}@bench.example", username=tag, domain_name="default", role="user",
                main_access_key=ak))
            await conn.execute(sa.insert(t.keypairs).values(
                access_key=ak, secret_key=sk, user_id=f"{tag}@bench.example", user=user, resource_policy=policy))
            world.owners.append((ak, user))
    return world


async def register(db: AsyncEngine, fleet: Fleet, scheduler: str, strategy: str) -> None:
    """Resource groups with this scheduler, and the agents as their heartbeats register them."""
    async with db.begin() as conn:
        for group in fleet.groups:
            values = {"scheduler": scheduler, "scheduler_opts": {"agent_selection_strategy": strategy}}
            await conn.execute(pg_insert(t.scaling_groups).values(name=group, **values)
                               .on_conflict_do_update(index_elements=[t.scaling_groups.c.name], set_=values))
        for agent in fleet.agents:
            await agent_store.upsert_heartbeat(conn, agent.id, agent.heartbeat_info())
        await conn.execute(t.agents.update().where(t.agents.c.id.in_([a.id for a in fleet.agents]))
                           .values(occupied_slots={}, schedulable=True))


async def enqueue(world: World, sessions: list[Session]) -> None:
    """The sessions as POST /session leaves them: PENDING, oldest first, one kernel row each."""
    now = datetime.now(UTC)
    rows, kernels = [], []
    for i, s in enumerate(sessions):
        sid, (ak, user) = uuid.uuid4(), world.owners[i % len(world.owners)]
        total = {k: v * s.cluster_size for k, v in s.per_kernel.items()}
        common = dict(domain_name="default", group_id=world.group_id, user_uuid=user, access_key=ak,
                      image="python", architecture=_arch(), status="PENDING")
        rows.append({"id": sid, "name": f"b{i}", "scaling_group_name": s.group, "created_at": now + timedelta(
            microseconds=i), "requested_slots": slots_to_json(total), "cluster_size": s.cluster_size,
            "cluster_mode": "multi-node" if s.cluster_size > 1 else "single-node", **common})
        for rank in range(s.cluster_size):
            role, idx = ("main", 1) if rank == 0 else ("sub", rank)
            kernels.append({"id": uuid.uuid4(), "session_id": sid, "scaling_group": s.group, "local_rank": rank,
                            "cluster_role": role, "cluster_idx": idx, "cluster_hostname": f"{role}{idx}",
                            "requested_slots": slots_to_json(s.per_kernel), **common})
    async with world.db.begin() as conn:
        for chunk in range(0, len(rows), 500):
            await conn.execute(sa.insert(t.sessions), rows[chunk:chunk + 500])
        for chunk in range(0, len(kernels), 500):
            await conn.execute(sa.insert(t.kernels), kernels[chunk:chunk + 500])


async def clear(world: World) -> None:
    async with world.db.begin() as conn:
        await conn.execute(t.kernels.delete())
        await conn.execute(t.sessions.delete())


def _arch() -> str:
    import platform
    return platform.machine()


@contextlib.contextmanager
def count_statements(db: AsyncEngine) -> Iterator[list[int]]:
    """Statements sent while inside (an executemany counts once: one round of the protocol)."""
    counter = [0]

    def on_execute(*_: Any) -> None:
        counter[0] += 1

    event.listen(db.sync_engine, "before_cursor_execute", on_execute)
    try:
        yield counter
    finally:
        event.remove(db.sync_engine, "before_cursor_execute", on_execute)


@dataclass
class Result:
    scheduler: str
    strategy: str
    sessions: int
    placed: int
    passes: int
    seconds: float
    statements_first_pass: int
    over_allocations: list[str]
    utilisation: dict[str, float]

    @property
    def per_second(self) -> float:
        return self.placed / self.seconds if self.seconds else 0.0


async def over_allocations(db: AsyncEngine, agent_ids: list[str]) -> list[str]:
    """Agents whose SCHEDULED kernels ask for more than the agent has, in any slot (from the DB)."""
    bad = []
    async with db.connect() as conn:
        caps = {r.id: slots_from_json(r.available_slots) for r in await conn.execute(
            sa.select(t.agents.c.id, t.agents.c.available_slots).where(t.agents.c.id.in_(agent_ids)))}
        used: dict[str, dict[str, Decimal]] = {a: {} for a in agent_ids}
        for agent, slots in await conn.execute(sa.select(t.kernels.c.agent, t.kernels.c.requested_slots).where(
                t.kernels.c.agent.in_(agent_ids), t.kernels.c.status == "SCHEDULED")):
            for k, v in slots_from_json(slots).items():
                used[agent][k] = used[agent].get(k, Decimal(0)) + v
    for agent, slots in used.items():
        over = [f"{k}={v}>{caps[agent].get(k, Decimal(0))}" for k, v in slots.items() if v > caps[agent].get(k, Decimal(0))]
        if over:
            bad.append(f"{agent}: {' '.join(over)}")
    return bad


async def utilisation(db: AsyncEngine, fleet: Fleet) -> dict[str, float]:
    async with db.connect() as conn:
        rows = await conn.execute(sa.select(t.kernels.c.requested_slots).where(
            t.kernels.c.agent.in_([a.id for a in fleet.agents]), t.kernels.c.status == "SCHEDULED"))
        used: dict[str, Decimal] = {}
        for (slots,) in rows:
            for k, v in slots_from_json(slots).items():
                used[k] = used.get(k, Decimal(0)) + v
    cap = fleet.capacity()
    return {k: float(used.get(k, Decimal(0)) / cap[k]) for k in ("cpu", "mem", "cuda.device") if cap.get(k)}


async def run_one(world: World, ctx: ManagerContext, fleet: Fleet, sessions: list[Session], scheduler: str,
                  strategy: str, max_passes: int = 20) -> Result:
    await clear(world)
    await register(world.db, fleet, scheduler, strategy)
    await world.etcd.delete_prefix("roundrobin_states/")  # each run's rotation starts at the first agent
    await enqueue(world, sessions)
    sched = Scheduler(ctx)
    placed, passes, seconds, first_statements = 0, 0, 0.0, 0
    while passes < max_passes:
        with count_statements(world.db) as counter:
            began = time.perf_counter()
            result = await sched.decide()
            seconds += time.perf_counter() - began
        if passes == 0:
            first_statements = counter[0]
        passes += 1
        placed += len(result.scheduled)
        if not result.scheduled or placed == len(sessions):
            break
    ids = [a.id for a in fleet.agents]
    return Result(scheduler, strategy, len(sessions), placed, passes, seconds, first_statements,
                  await over_allocations(world.db, ids), await utilisation(world.db, fleet))


async def statements_per_pass(world: World, ctx: ManagerContext, agents: int, sessions: int,
                              groups: list[str]) -> int:
    """Statements of one first pass over ``sessions`` pending with ``agents`` agents (fifo, dispersed)."""
    fleet = make_fleet(agents, groups, seed=3)
    result = await run_one(world, ctx, fleet, make_sessions(sessions, groups, seed=4), "fifo", "dispersed",
                           max_passes=1)
    await _forget(world, fleet)
    return result.statements_first_pass


async def _forget(world: World, fleet: Fleet) -> None:
    await clear(world)
    async with world.db.begin() as conn:
        await conn.execute(t.agents.delete().where(t.agents.c.id.in_([a.id for a in fleet.agents])))


@contextlib.asynccontextmanager
async def throwaway_world(pg_dsn_of: Any, make_db: Any, etcd_addr: str) -> AsyncIterator[tuple[World, ManagerContext]]:
    name = f"bench_sched_{secrets.token_hex(4)}"
    await make_db(name)
    db = create_async_engine(pg_dsn_of(name))
    try:
        async with db.begin() as conn:
            await fixtures.populate(conn)
        async with etcd_mod.connect(etcd_addr, f"bench-{name}") as etcd:
            world = await setup_world(db, etcd)
            ctx = ManagerContext(config=ManagerConfig(), db=db, etcd=etcd,  # type: ignore[arg-type]
                                 redis_stream=None, redis_ratelimit=None, agents=None, events=None)
            yield world, ctx
    finally:
        await db.dispose()


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from tests.fixtures.halfstack import halfstack

    groups = [f"bench-rg{i}" for i in range(args.groups)]
    with contextlib.contextmanager(halfstack.__wrapped__)() as stack:  # throwaway PostgreSQL/Redis/etcd
        async with throwaway_world(stack.pg_dsn, stack.migrated_database, stack.etcd_addr) as (world, ctx):
            fleet = make_fleet(args.agents, groups)
            sessions = make_sessions(args.sessions, groups)
            results = []
            for scheduler, strategy in COMBINATIONS:
                res = await run_one(world, ctx, fleet, sessions, scheduler, strategy)
                results.append(res)
                if not args.json:
                    util = " ".join(f"{k}={v:.0%}" for k, v in res.utilisation.items())
                    print(f"{scheduler:5} {strategy:12} placed {res.placed}/{res.sessions} in {res.passes} pass(es), "
                          f"{res.seconds:.2f} s ({res.per_second:,.0f}/s), {res.statements_first_pass} statements "
                          f"in pass 1, over-allocations {len(res.over_allocations)}, utilisation {util}", flush=True)
            await _forget(world, fleet)
            small = await statements_per_pass(world, ctx, 50, 500, groups)
            large = await statements_per_pass(world, ctx, 200, 500, groups)
    ok = all(r.placed == r.sessions and r.seconds < 5.0 and not r.over_allocations for r in results) \
        and large <= small
    report = {
        "agents": args.agents, "sessions": args.sessions, "groups": args.groups,
        "results": [{"scheduler": r.scheduler, "strategy": r.strategy, "placed": r.placed, "passes": r.passes,
                     "seconds": round(r.seconds, 3), "placements_per_second": round(r.per_second),
                     "statements_first_pass": r.statements_first_pass, "over_allocations": r.over_allocations,
                     "utilisation": {k: round(v, 3) for k, v in r.utilisation.items()}} for r in results],
        "statements_per_pass": {"50_agents": small, "200_agents": large},
        "targets_met": ok,
    }
    if not args.json:
        print(f"statements per pass (500 pending): 50 agents {small}, 200 agents {large}")
        print("targets met" if ok else "TARGETS MISSED")
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--sessions", type=int, default=2000)
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    report = asyncio.run(bench(args))
    if args.json:
        print(json.dumps(report, indent=2))
    sys.exit(0 if report["targets_met"] else 1)


if __name__ == "__main__":
    main()
