"""The scheduler's decisions over a real database and etcd: agent rows and sessions are inserted
as the manager and agents would write them, one scheduling pass is run (``Scheduler.decide``:
the pass under the lock, without the agent RPC that follows), and the rows are read back. Each
test has a resource group of its own; its sessions are cancelled at the end."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from bai.common import etcd as etcd_mod
from bai.manager import errors
from bai.manager.config import ManagerConfig
from bai.manager.services import scaling_groups
from bai.manager.services.context import ManagerContext
from bai.manager.services.scheduler import SCHEDULER_LOCK_ID, Scheduler
from bai.manager.services.scheduling.admission import check_create_limits
from bai.manager.store import fixtures
from bai.manager.store import keypairs as keypair_store
from bai.manager.store import sessions as session_store
from bai.manager.store import tables as t
from tests.fixtures.halfstack import HalfStack

from .conftest import ManagerDB

GiB = 2**30


@dataclass
class World:
    db: AsyncEngine
    ctx: ManagerContext
    scheduler: Scheduler
    admin_key: str
    group_id: uuid.UUID
    clock: int = 0

    async def resource_group(self, scheduler: str = "fifo", opts: dict[str, Any] | None = None) -> str:
        name = f"sg-{secrets.token_hex(4)}"
        async with self.db.begin() as conn:
            await conn.execute(sa.insert(t.scaling_groups).values(
                name=name, scheduler=scheduler, scheduler_opts=opts or {}))
        return name

    async def agent(self, group: str, name: str, cpu: int, mem: int = 64 * GiB, **extra: Any) -> str:
        agent_id = f"{group}-{name}"
        async with self.db.begin() as conn:
            await conn.execute(sa.insert(t.agents).values(
                id=agent_id, status="ALIVE", scaling_group=group, addr=f"http://127.0.0.1:1/{agent_id}",
                available_slots={"cpu": str(cpu), "mem": str(mem), **extra}))
        return agent_id

    async def keypair(self, policy: dict[str, Any] | None = None, main_policy: dict[str, Any] | None = None,
                      ) -> tuple[str, uuid.UUID]:
        """A user in the default project with a keypair under ``policy``; with ``main_policy``
        the user's main keypair is another one, under that policy."""
        user = uuid.uuid4()
        tag = secrets.token_hex(4)
        keys = []
        async with self.db.begin() as conn:
            for pol in ([main_policy] if main_policy is not None else []) + [policy or {}]:
                name = f"pol-{secrets.token_hex(4)}"
                await conn.execute(sa.insert(t.keypair_resource_policies).values(name=name, **pol))
                keys.append((fixtures.generate_keypair()[0], name))
            await conn.execute(sa.insert(t.users).values(
                uuid=user, email=f"{tag}@example.com", username=tag, domain_name="default", role="user",
                main_access_key=keys[0][0]))
            for ak, pol_name in keys:
                await conn.execute(sa.insert(t.keypairs).values(
                    access_key=ak, secret_key=secrets.token_hex(20), user_id=f"{tag}@example.com", user=user,
                    resource_policy=pol_name))
            await conn.execute(sa.insert(t.association_groups_users).values(user_id=user, group_id=self.group_id))
        return keys[-1][0], user

    async def session(self, group: str, owner: tuple[str, uuid.UUID], cpu: float, mem: int = GiB, *,
                      status: str = "PENDING", agent: str | None = None, starts_at: datetime | None = None,
                      session_type: str = "interactive", project: uuid.UUID | None = None, domain: str = "default",
                      status_data: dict[str, Any] | None = None) -> uuid.UUID:
        """A one-kernel session; creation times increase with each call (FIFO order)."""
        self.clock += 1
        sid = uuid.uuid4()
        slots = {"cpu": str(cpu), "mem": str(mem)}
        created = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.clock)
        ak, user = owner
        common = dict(domain_name=domain, group_id=project or self.group_id, user_uuid=user, access_key=ak,
                      image="python", architecture="x86_64", requested_slots=slots, session_type=session_type)
        async with self.db.begin() as conn:
            await session_store.insert_session(conn, {
                "id": sid, "name": f"s-{secrets.token_hex(4)}", "scaling_group_name": group, "created_at": created,
                "starts_at": starts_at, "status_data": status_data, **common}, [
                {"id": uuid.uuid4(), "session_id": sid, "scaling_group": group, **common}])
            if status != "PENDING":
                await conn.execute(t.sessions.update().where(t.sessions.c.id == sid).values(status=status))
                await conn.execute(t.kernels.update().where(t.kernels.c.session_id == sid)
                                   .values(status=status, agent=agent))
        return sid

    async def state(self, sid: uuid.UUID) -> tuple[str, str | None, dict[str, Any], str | None]:
        """(status, status_info, status_data, the kernel's agent)."""
        async with self.db.connect() as conn:
            row = (await conn.execute(
                sa.select(t.sessions.c.status, t.sessions.c.status_info, t.sessions.c.status_data, t.kernels.c.agent)
                .select_from(t.sessions.join(t.kernels, t.kernels.c.session_id == t.sessions.c.id))
                .where(t.sessions.c.id == sid))).one()
        return row.status, row.status_info, row.status_data or {}, row.agent

    async def placed(self, sid: uuid.UUID) -> str | None:
        status, _, _, agent = await self.state(sid)
        return agent if status == "SCHEDULED" else None

    async def failed(self, sid: uuid.UUID) -> list[dict[str, str]]:
        status, info, data, _ = await self.state(sid)
        assert (status, info) == ("PENDING", "predicate-checks-failed"), (status, info, data)
        return list(data["scheduler"]["failed_predicates"])


@pytest.fixture(scope="module")
async def world(halfstack: HalfStack, manager_db: ManagerDB) -> AsyncIterator[World]:
    async with etcd_mod.connect(halfstack.etcd_addr, f"sched-{secrets.token_hex(4)}") as etcd:
        # decide() uses the database and etcd only (no Redis, agent RPC or events)
        ctx = ManagerContext(config=ManagerConfig(), db=manager_db.engine, etcd=etcd,  # type: ignore[arg-type]
                             redis_stream=None, redis_ratelimit=None, agents=None, events=None)
        async with manager_db.engine.connect() as conn:
            gid = await conn.scalar(sa.select(t.groups.c.id).where(t.groups.c.name == "default"))
        assert gid is not None
        yield World(manager_db.engine, ctx, Scheduler(ctx), manager_db.admin.access_key, gid)


@pytest.fixture
async def cleanup(world: World) -> AsyncIterator[None]:
    """Sessions left PENDING by a test would be looked at by later passes: cancel them."""
    yield
    async with world.db.begin() as conn:
        await conn.execute(t.sessions.update().where(t.sessions.c.status.not_in(["TERMINATED", "CANCELLED"]))
                           .values(status="CANCELLED"))
        await conn.execute(t.kernels.update().where(t.kernels.c.status.not_in(["TERMINATED", "CANCELLED"]))
                           .values(status="CANCELLED"))


pytestmark = pytest.mark.usefixtures("cleanup")


# ------------------------------------------------------------------ session order per scheduler

async def three_in_line(world: World, scheduler: str, opts: dict[str, Any] | None = None,
                        first_retries: int = 0) -> list[str | None]:
    group = await world.resource_group(scheduler, opts)
    await world.agent(group, "only", cpu=2)
    owner = await world.keypair()
    data = {"scheduler": {"retries": first_retries}} if first_retries else None
    sids = [await world.session(group, owner, 2, status_data=data if i == 0 else None) for i in range(3)]
    result = await world.scheduler.decide()
    assert len(result.scheduled) == 1
    return [await world.placed(s) for s in sids]


async def test_fifo_schedules_the_oldest_first(world: World) -> None:
    placed = await three_in_line(world, "fifo")
    assert placed[0] is not None and placed[1:] == [None, None]


async def test_lifo_schedules_the_newest_first(world: World) -> None:
    placed = await three_in_line(world, "lifo")
    assert placed[2] is not None and placed[:2] == [None, None]


async def test_heuristic_fifo_puts_often_retried_sessions_behind(world: World) -> None:
    placed = await three_in_line(world, "fifo", {"config": {"num_retries_to_skip": 2}}, first_retries=2)
    assert placed[0] is None and placed[1] is not None
    placed = await three_in_line(world, "fifo", {"config": {"num_retries_to_skip": 3}}, first_retries=2)
    assert placed[0] is not None  # below the threshold: strict FIFO


async def test_heuristic_fifo_default_from_etcd(world: World) -> None:
    await world.ctx.etcd.put("config/plugins/scheduler/fifo/num_retries_to_skip", "1")
    try:
        fresh = Scheduler(world.ctx)  # its etcd cache is empty
        world.scheduler, saved = fresh, world.scheduler
        try:
            placed = await three_in_line(world, "fifo", first_retries=1)
        finally:
            world.scheduler = saved
        assert placed[0] is None and placed[1] is not None
    finally:
        await world.ctx.etcd.delete("config/plugins/scheduler/fifo/num_retries_to_skip")


async def test_drf_prefers_the_keypair_with_the_smallest_dominant_share(world: World) -> None:
    group = await world.resource_group("drf")
    busy = await world.agent(group, "busy", cpu=4)
    await world.agent(group, "free", cpu=4)
    heavy, light = await world.keypair(), await world.keypair()
    await world.session(group, heavy, 4, status="RUNNING", agent=busy)
    older = await world.session(group, heavy, 4)
    newer = await world.session(group, light, 4)
    await world.scheduler.decide()
    assert await world.placed(newer) is not None and await world.placed(older) is None


async def test_no_fit_does_not_block_later_sessions(world: World) -> None:
    group = await world.resource_group("fifo")
    await world.agent(group, "small", cpu=2)
    owner = await world.keypair()
    big = await world.session(group, owner, 8)
    small = await world.session(group, owner, 1)
    await world.scheduler.decide()
    status, info, data, _ = await world.state(big)
    assert (status, info) == ("PENDING", "no-available-instances")
    assert data["scheduler"]["retries"] == 1 and "big enough" in data["scheduler"]["msg"]
    assert {"name": "concurrency"} in data["scheduler"]["passed_predicates"]
    assert await world.placed(small) == f"{group}-small"
    await world.scheduler.decide()
    assert (await world.state(big))[2]["scheduler"]["retries"] == 2


# ------------------------------------------------------------------ agent selection

async def three_agents(world: World, scheduler: str = "fifo", opts: dict[str, Any] | None = None
                       ) -> tuple[str, tuple[str, uuid.UUID]]:
    """Agents a (8 cores, 6 free), b (8 cores, 2 free), c (16 cores, 3 free)."""
    group = await world.resource_group(scheduler, opts)
    owner = await world.keypair()
    for name, cpu, used in (("a", 8, 2), ("b", 8, 6), ("c", 16, 13)):
        agent = await world.agent(group, name, cpu=cpu)
        await world.session(group, owner, used, mem=0, status="RUNNING", agent=agent)
    return group, owner


@pytest.mark.parametrize(("strategy", "expected"), [
    ("dispersed", "a"), ("concentrated", "b"), ("legacy", "c"), (None, "a")])
async def test_selection_strategy(world: World, strategy: str | None, expected: str) -> None:
    opts = {"agent_selection_strategy": strategy} if strategy else {}
    group, owner = await three_agents(world, opts=opts)
    sid = await world.session(group, owner, 1)
    await world.scheduler.decide()
    assert await world.placed(sid) == f"{group}-{expected}"


async def test_mof_takes_the_least_occupied_agent(world: World) -> None:
    group, owner = await three_agents(world, "mof", {"agent_selection_strategy": "concentrated"})
    sid = await world.session(group, owner, 1)
    await world.scheduler.decide()
    assert await world.placed(sid) == f"{group}-a"  # 2 cores used, fewer than b's 6 and c's 13


async def test_round_robin_rotates_across_passes(world: World) -> None:
    group = await world.resource_group("fifo", {"agent_selection_strategy": "roundrobin"})
    for name in ("x", "y", "z"):
        await world.agent(group, name, cpu=8)
    owner = await world.keypair()
    first = [await world.session(group, owner, 1) for _ in range(4)]
    await world.scheduler.decide()
    assert [await world.placed(s) for s in first] == [f"{group}-{n}" for n in "xyzx"]
    saved = json.loads(await world.ctx.etcd.get(f"roundrobin_states/{group}/x86_64") or "{}")
    assert saved["next_index"] == 1
    later = await world.session(group, owner, 1)
    await world.scheduler.decide()
    assert await world.placed(later) == f"{group}-y"


async def test_strategy_change_takes_effect_on_the_next_pass(world: World) -> None:
    group, owner = await three_agents(world, opts={"agent_selection_strategy": "concentrated"})
    one = await world.session(group, owner, 1)
    await world.scheduler.decide()
    assert await world.placed(one) == f"{group}-b"
    async with world.db.connect() as conn:
        admin = await keypair_store.get_requester(conn, world.admin_key)
    assert admin is not None
    outcome = await scaling_groups.modify(world.ctx, admin, group, {
        "scheduler": "lifo", "scheduler_opts": {"agent_selection_strategy": "dispersed", "roundrobin": False}})
    assert outcome.ok, outcome
    two = await world.session(group, owner, 1)
    await world.scheduler.decide()
    assert await world.placed(two) == f"{group}-a"


@pytest.mark.parametrize(("props", "field"), [
    ({"scheduler": "heuristic"}, "scheduler"),
    ({"scheduler_opts": {"agent_selection_strategy": "random"}}, "agent_selection_strategy"),
    ({"scheduler_opts": {"roundrobin": "yes"}}, "roundrobin"),
    ({"scheduler_opts": {"config": {"num_retries_to_skip": -1}}}, "num_retries_to_skip"),
])
async def test_bad_scheduler_settings_are_refused(world: World, props: dict[str, Any], field: str) -> None:
    group = await world.resource_group()
    async with world.db.connect() as conn:
        admin = await keypair_store.get_requester(conn, world.admin_key)
    assert admin is not None
    with pytest.raises(errors.InvalidAPIParameters, match=field):
        await scaling_groups.modify(world.ctx, admin, group, props)
    async with world.db.connect() as conn:
        row = (await conn.execute(sa.select(t.scaling_groups.c.scheduler, t.scaling_groups.c.scheduler_opts)
                                  .where(t.scaling_groups.c.name == group))).one()
    assert tuple(row) == ("fifo", {})


# ------------------------------------------------------------------ predicates

async def test_concurrency(world: World) -> None:
    group = await world.resource_group()
    agent = await world.agent(group, "a", cpu=8)
    owner = await world.keypair({"max_concurrent_sessions": 1})
    await world.session(group, owner, 1, status="RUNNING", agent=agent)
    sid = await world.session(group, owner, 1)
    await world.scheduler.decide()
    assert await world.failed(sid) == [
        {"name": "concurrency", "msg": "You cannot run more than 1 concurrent sessions"}]


async def test_a_system_session_that_fails_a_check_is_cancelled(world: World) -> None:
    group = await world.resource_group()
    agent = await world.agent(group, "a", cpu=8)
    owner = await world.keypair({"max_concurrent_sftp_sessions": 1})
    await world.session(group, owner, 1, status="RUNNING", agent=agent, session_type="system")
    sid = await world.session(group, owner, 1, session_type="system")
    result = await world.scheduler.decide()
    assert result.cancelled == [(sid, "predicate-checks-failed")]


async def test_keypair_limit_and_limited_default(world: World) -> None:
    group = await world.resource_group()
    agent = await world.agent(group, "a", cpu=8)
    owner = await world.keypair({"total_resource_slots": {"cpu": "2"}})
    await world.session(group, owner, 2, status="RUNNING", agent=agent)
    sid = await world.session(group, owner, 1)
    limited = await world.keypair({"total_resource_slots": {"cpu": "4"}, "default_for_unspecified": "LIMITED"})
    no_mem = await world.session(group, limited, 1)
    await world.scheduler.decide()
    # the keypair is its user's main keypair: the user's limit is the same, and every failure is told
    assert await world.failed(sid) == [
        {"name": "keypair_resource_limit", "msg": "Your keypair resource quota is exceeded. (cpu=2 mem=Infinity)"},
        {"name": "user_resource_limit", "msg": "Your main-keypair resource quota is exceeded. (cpu=2 mem=Infinity)"}]
    failed = await world.failed(no_mem)
    assert {"name": "keypair_resource_limit",
            "msg": "Your keypair resource quota is exceeded. (cpu=4 mem=0)"} in failed


async def test_user_limit_follows_the_main_keypair(world: World) -> None:
    group = await world.resource_group()
    await world.agent(group, "a", cpu=8)
    owner = await world.keypair({}, main_policy={"total_resource_slots": {"cpu": "1"}})
    sid = await world.session(group, owner, 2)
    await world.scheduler.decide()
    assert await world.failed(sid) == [{"name": "user_resource_limit",
                                        "msg": "Your main-keypair resource quota is exceeded. (cpu=1 mem=Infinity)"}]


async def test_project_and_domain_limits(world: World) -> None:
    group = await world.resource_group()
    await world.agent(group, "a", cpu=8)
    owner = await world.keypair()
    domain = f"dom-{secrets.token_hex(3)}"
    project, domain_project = uuid.uuid4(), uuid.uuid4()
    async with world.db.begin() as conn:
        await conn.execute(sa.insert(t.domains).values(name=domain, total_resource_slots={"mem": str(2 * GiB)}))
        await conn.execute(sa.insert(t.groups).values(id=project, name=f"p-{domain}", domain_name="default",
                                                      total_resource_slots={"cpu": "1"}))
        await conn.execute(sa.insert(t.groups).values(id=domain_project, name=f"p-{domain}", domain_name=domain))
    in_project = await world.session(group, owner, 2, project=project)
    in_domain = await world.session(group, owner, 1, mem=4 * GiB, project=domain_project, domain=domain)
    await world.scheduler.decide()
    assert await world.failed(in_project) == [{"name": "user_group_resource_limit",
                                               "msg": "Your group resource quota is exceeded. (cpu=1 mem=Infinity)"}]
    assert await world.failed(in_domain) == [{"name": "domain_resource_limit",
                                              "msg": "Your domain resource quota is exceeded. (cpu=Infinity mem=2g)"}]


async def test_pending_session_limits_hold_back_the_newest(world: World) -> None:
    group = await world.resource_group()
    await world.agent(group, "a", cpu=1)  # too small: pending sessions stay pending
    counted = await world.keypair({"max_pending_session_count": 1})
    first, second = await world.session(group, counted, 2), await world.session(group, counted, 2)
    summed = await world.keypair({"max_pending_session_resource_slots": {"cpu": "3"}})
    third, fourth = await world.session(group, summed, 2), await world.session(group, summed, 2)
    await world.scheduler.decide()
    assert (await world.state(first))[1] == "no-available-instances"
    assert await world.failed(second) == [{"name": "pending_session_count_limit",
                                           "msg": "You cannot create more than 1 pending session(s)."}]
    assert (await world.state(third))[1] == "no-available-instances"
    assert await world.failed(fourth) == [{"name": "pending_session_resource_limit",
                                           "msg": "Your pending session quota is exceeded. (cpu=4 mem=2g)"}]


async def test_starts_at_holds_the_session_until_its_time(world: World) -> None:
    group = await world.resource_group()
    await world.agent(group, "a", cpu=8)
    owner = await world.keypair()
    starts_at = datetime.now(UTC) + timedelta(seconds=1.5)
    sid = await world.session(group, owner, 1, starts_at=starts_at, session_type="batch")
    await world.scheduler.decide()
    failed = await world.failed(sid)
    assert failed == [{"name": "reserved_time", "msg": "Before start time"}]
    deadline = time.monotonic() + 15
    while await world.placed(sid) is None:
        assert time.monotonic() < deadline, "the reserved session never started"
        await world.scheduler.decide()
        await asyncio.sleep(0.1)
    assert datetime.now(UTC) >= starts_at


async def test_pending_timeout_cancels(world: World) -> None:
    group = await world.resource_group("fifo", {"pending_timeout": 60})
    owner = await world.keypair()
    sid = await world.session(group, owner, 1)  # created in 2026-01-01, long ago
    result = await world.scheduler.decide()
    assert result.cancelled == [(sid, "pending-timeout")]


async def test_a_deactivated_owner_s_session_is_cancelled(world: World) -> None:
    group = await world.resource_group()
    await world.agent(group, "a", cpu=8)
    owner = await world.keypair()
    sid = await world.session(group, owner, 1)
    async with world.db.begin() as conn:
        await conn.execute(t.keypairs.update().where(t.keypairs.c.access_key == owner[0]).values(is_active=False))
    result = await world.scheduler.decide()
    assert result.cancelled == [(sid, "owner-keypair-inactive")] and result.scheduled == []


async def test_create_time_limits(world: World) -> None:
    async def requester(policy: dict[str, Any]) -> Any:
        ak, _ = await world.keypair(policy)
        async with world.db.connect() as conn:
            return await keypair_store.get_requester(conn, ak)
    group = await world.resource_group()
    from decimal import Decimal
    req = {"cpu": Decimal(1), "mem": Decimal(GiB)}
    limited = await requester({"default_for_unspecified": "LIMITED", "total_resource_slots": {"cpu": "4"}})
    async with world.db.connect() as conn:
        with pytest.raises(errors.QuotaExceeded, match="allows none of: mem"):
            await check_create_limits(conn, limited, req)
    counted = await requester({"max_pending_session_count": 1})
    async with world.db.connect() as conn:
        await check_create_limits(conn, counted, req)
    await world.session(group, (counted.access_key, counted.user_uuid), 1)
    async with world.db.connect() as conn:
        with pytest.raises(errors.QuotaExceeded, match="more than 1 pending session"):
            await check_create_limits(conn, counted, req)
    summed = await requester({"max_pending_session_resource_slots": {"mem": str(GiB)}})
    await world.session(group, (summed.access_key, summed.user_uuid), 1, mem=GiB // 2)
    async with world.db.connect() as conn:
        with pytest.raises(errors.QuotaExceeded, match=r"pending session quota is exceeded. \(mem=1g\)"):
            await check_create_limits(conn, summed, req)


# ------------------------------------------------------------------ the lock and the pace

async def test_a_held_lock_is_waited_on_not_spun_on(world: World) -> None:
    group = await world.resource_group()
    await world.agent(group, "a", cpu=8)
    sid = await world.session(group, await world.keypair(), 1)
    passes = 0

    class Counting(Scheduler):
        async def decide(self) -> Any:
            nonlocal passes
            passes += 1
            return await super().decide()

    other = Counting(world.ctx)
    async with world.db.connect() as holder:
        await holder.execute(sa.select(sa.func.pg_advisory_lock(SCHEDULER_LOCK_ID)))
        try:
            task = asyncio.create_task(other.run())
            window = time.monotonic() + 1.2
            while time.monotonic() < window:  # wake-ups keep coming while another manager schedules
                world.ctx.request_schedule()
                await asyncio.sleep(0.01)
            assert other.locked_out and await world.placed(sid) is None
            assert passes <= 5, passes  # one try per LOCK_RETRY_SECONDS, not a busy loop
        finally:
            await holder.execute(sa.select(sa.func.pg_advisory_unlock(SCHEDULER_LOCK_ID)))
            await holder.commit()
    deadline = time.monotonic() + 10
    try:
        while await world.placed(sid) is None:
            assert time.monotonic() < deadline, "no pass after the lock was released"
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_pass_over_1000_sessions_and_100_agents_is_fast(world: World) -> None:
    group = await world.resource_group()
    now = datetime.now(UTC)
    owners = [await world.keypair({"max_concurrent_sessions": 0}) for _ in range(10)]  # 0: no limit
    async with world.db.begin() as conn:
        await conn.execute(sa.insert(t.agents), [
            {"id": f"{group}-{i:03d}", "status": "ALIVE", "scaling_group": group, "addr": f"http://x/{i}",
             "available_slots": {"cpu": "4", "mem": str(16 * GiB)}} for i in range(100)])
        sessions, kernels = [], []
        for i in range(1000):
            sid, (ak, user) = uuid.uuid4(), owners[i % 10]
            common = dict(domain_name="default", group_id=world.group_id, user_uuid=user, access_key=ak,
                          image="python", architecture="x86_64", requested_slots={"cpu": "1", "mem": str(GiB)},
                          status="PENDING")
            sessions.append({"id": sid, "name": f"p{i}", "scaling_group_name": group,
                             "created_at": now + timedelta(microseconds=i), **common})
            kernels.append({"id": uuid.uuid4(), "session_id": sid, "scaling_group": group, **common})
        await conn.execute(sa.insert(t.sessions), sessions)
        await conn.execute(sa.insert(t.kernels), kernels)
    started = time.perf_counter()
    result = await world.scheduler.decide()
    first = time.perf_counter() - started
    assert len(result.scheduled) == 400  # 100 agents x 4 cores
    started = time.perf_counter()
    await world.scheduler.decide()  # 600 left, none fits: every one gets its reason written
    second = time.perf_counter() - started
    print(f"\npass over 1000 pending / 100 agents: {first:.3f} s; 600 unplaceable: {second:.3f} s")
    assert first < 2.0 and second < 2.0  # generous on a shared 2-core box; measured far lower
