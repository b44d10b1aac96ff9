"""Images no registry serves run only where they are: sessions created through the real
``POST /session`` (enqueue-only) and placed by the real scheduler pass, over a real database and
etcd, with agents registered directly (as the many-agents tests do). A session of an image that
one agent holds lands on that agent under every selection strategy, waits PENDING saying so when
the holder is full (the others stay empty), and is refused at create (400 naming the image) when
no ALIVE agent of its resource group holds it or its assigned agent does not; an image of a
configured registry is placed anywhere, as before."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web

from bai.common import etcd as etcd_mod
from bai.common.events import EventProducer
from bai.manager.api import session
from bai.manager.api.keys import CTX, SESSIONS
from bai.manager.services.context import ManagerContext
from bai.manager.services.scheduler import Scheduler
from bai.manager.services.scheduling.images import configured_among, not_held_message, pullable
from bai.manager.services.sessions import SessionService
from bai.manager.store import registries as registry_store
from bai.manager.store import tables as t
from bench import scheduler as bench
from tests.fixtures.halfstack import free_port

from . import test_many_agents as many
from .conftest import ApiClient, ManagerDB

# the fixtures of the many-agents tests (a bench world; agents and sessions cleared after each test)
world, clean, _placements = many.world, many.clean, many._placements

GiB = 2**30
PROBS = "https://api.backend.ai/probs/"
World = tuple[bench.World, ManagerContext]


@pytest.fixture(scope="module")
async def api(world: World, make_client: Any, manager_db: ManagerDB) -> ApiClient:
    """``POST /session`` with the world's etcd (registries) and the half-stack's Redis (events)."""
    async with manager_db.engine.begin() as conn:  # this module's own database
        await conn.execute(t.keypair_resource_policies.update().where(t.keypair_resource_policies.c.name == "default")
                           .values(max_containers_per_session=4, max_concurrent_sessions=0))

    def routes(app: web.Application) -> None:
        ctx = app[CTX]
        ctx.etcd = world[1].etcd
        ctx.events = EventProducer(ctx.redis_stream)
        app[SESSIONS] = SessionService(ctx)
        session.routes(app)

    client: ApiClient = await make_client(routes)
    return client


@pytest.fixture
async def registry_host(world: World) -> AsyncIterator[str]:
    """A registry configured in etcd and allowed to the default domain (never contacted: these
    agents pull nothing)."""
    host = f"reg-{secrets.token_hex(3)}.example:5000"
    assert await registry_store.create(world[1].etcd, host, f"http://{host}", {"type": "docker"})
    domain = t.domains.update().where(t.domains.c.name == "default")
    async with world[0].db.begin() as conn:
        await conn.execute(domain.values(allowed_docker_registries=[host]))
    try:
        yield host
    finally:
        async with world[0].db.begin() as conn:
            await conn.execute(domain.values(allowed_docker_registries=[]))
        await registry_store.delete(world[1].etcd, host)


async def _group(w: bench.World, agents: list[str], strategy: str = "dispersed", cpu: str = "8",
                 plugins: dict[str, Any] | None = None) -> str:
    """A resource group the default domain may use, with ALIVE agents of ``cpu`` cores each."""
    group = f"loc-{secrets.token_hex(3)}"
    async with w.db.begin() as conn:
        await conn.execute(sa.insert(t.scaling_groups).values(
            name=group, scheduler="fifo", scheduler_opts={"agent_selection_strategy": strategy}))
        await conn.execute(sa.insert(t.sgroups_for_domains).values(scaling_group=group, domain="default"))
        for agent_id in agents:
            await conn.execute(sa.insert(t.agents).values(
                id=agent_id, status="ALIVE", scaling_group=group, addr=f"http://127.0.0.1:1/{agent_id}",
                available_slots={"cpu": cpu, "mem": str(32 * GiB)}, architecture=bench._arch(),
                compute_plugins=plugins or {}))
    return group


async def _image(w: bench.World, holders: list[str], registry: str = "bai.local") -> str:
    name = f"{registry}/test/local-only-{secrets.token_hex(3)}:1"
    async with w.db.begin() as conn:
        await conn.execute(sa.insert(t.images).values(
            id=uuid.uuid4(), name=name, architecture=bench._arch(), registry=registry, tag="1",
            labels={"ai.backend.kernelspec": "1"}, is_local=registry == "bai.local", installed_agents=holders))
    return name


async def _create(api: ApiClient, db: ManagerDB, image: str, group: str, *, cpu: str = "2",
                  **extra: Any) -> Any:
    body = {"name": f"s-{secrets.token_hex(4)}", "image": image, "enqueueOnly": True,
            "config": {"scalingGroup": group, "resources": {"cpu": cpu, "mem": "1g"}, **extra.pop("config", {})},
            **extra}
    return await api.post("/session", body, db.admin)


async def _agents_of(w: bench.World, session_id: str) -> list[str | None]:
    async with w.db.connect() as conn:
        return list((await conn.execute(sa.select(t.kernels.c.agent).where(t.kernels.c.session_id == session_id)
                                        .order_by(t.kernels.c.local_rank))).scalars())


async def _session(w: bench.World, session_id: str) -> Any:
    async with w.db.connect() as conn:
        return (await conn.execute(sa.select(t.sessions).where(t.sessions.c.id == session_id))).one()


def test_pullable_means_a_configured_registry_other_than_the_local_one() -> None:
    assert pullable("reg.example:5000", {"reg.example:5000"})
    assert not pullable("reg.example:5000", set())  # not configured: nothing to pull it from
    assert not pullable("bai.local", {"bai.local"})  # built on an agent host: nothing serves it
    assert not pullable("", {""})


async def test_when_etcd_cannot_say_registry_images_count_as_pullable(world: World) -> None:
    """As before this rule: agents try to pull; local images stay where they are."""
    etcd = world[1].etcd
    host = f"reg-{secrets.token_hex(3)}.example:5000"
    assert await configured_among(etcd, [host, "bai.local", "other.example"]) == set()
    assert await registry_store.create(etcd, host, f"http://{host}", {"type": "docker"})
    try:
        assert await configured_among(etcd, [host, "bai.local", "other.example"]) == {host}
    finally:
        await registry_store.delete(etcd, host)
    async with etcd_mod.connect(f"127.0.0.1:{free_port()}", "nobody", call_deadline=1) as away:
        assert await configured_among(away, [host, "bai.local"]) == {host}


@pytest.mark.parametrize("strategy", ["dispersed", "concentrated", "roundrobin"])
async def test_sessions_land_on_the_holder_and_wait_when_it_is_full(
        world: World, api: ApiClient, manager_db: ManagerDB, strategy: str) -> None:
    """Three agents, the image on the middle one only (ties would go to the first): two
    3-core sessions fill it, the third waits PENDING naming the image; the others stay empty."""
    w, ctx = world
    tag = secrets.token_hex(2)
    a, holder, c = f"la-{tag}", f"lb-{tag}", f"lc-{tag}"
    group = await _group(w, [a, holder, c], strategy)
    image = await _image(w, [holder])
    created = [await _create(api, manager_db, image, group, cpu="3") for _ in range(3)]
    assert [r.status for r in created] == [201] * 3, [r.body for r in created]
    result = await Scheduler(ctx).decide()
    assert len(result.scheduled) == 2
    ids = [r.body["sessionId"] for r in created]
    assert [await _agents_of(w, sid) for sid in ids[:2]] == [[holder], [holder]]
    waiting = await _session(w, ids[2])
    assert (waiting.status, waiting.status_info) == ("PENDING", "no-available-instances")
    assert waiting.status_data["scheduler"]["msg"] == not_held_message(image, group)
    assert "held by no agent with free slots" in waiting.status_data["scheduler"]["msg"]
    assert await _agents_of(w, ids[2]) == [None]
    async with w.db.connect() as conn:
        occupied = dict((await conn.execute(sa.select(t.agents.c.id, t.agents.c.occupied_slots)
                                             .where(t.agents.c.scaling_group == group))).all())
    assert occupied[holder]["cpu"] == "6"
    assert not any(Decimal(v) for agent in (a, c) for v in (occupied[agent] or {}).values()), occupied


async def test_every_kernel_of_a_multi_node_session_is_on_a_holder(
        world: World, api: ApiClient, manager_db: ManagerDB) -> None:
    """Two kernels of 8 cores (one per agent): on the two holders, never on the third agent."""
    w, ctx = world
    tag = secrets.token_hex(2)
    group = await _group(w, [f"ma-{tag}", f"mb-{tag}", f"mc-{tag}"])
    image = await _image(w, [f"ma-{tag}", f"mc-{tag}"])
    created = await _create(api, manager_db, image, group, cpu="8", clusterMode="multi-node", clusterSize=2)
    assert created.status == 201, created.body
    assert len((await Scheduler(ctx).decide()).scheduled) == 1
    assert sorted(a or "" for a in await _agents_of(w, created.body["sessionId"])) == [f"ma-{tag}", f"mc-{tag}"]


async def test_an_image_no_alive_agent_of_the_group_holds_is_refused_at_create(
        world: World, api: ApiClient, manager_db: ManagerDB) -> None:
    w, _ = world
    tag = secrets.token_hex(2)
    group = await _group(w, [f"ra-{tag}", f"rb-{tag}"])
    elsewhere = await _group(w, [f"rx-{tag}"])  # the holder is in another resource group
    for holders in ([f"rx-{tag}"], []):
        image = await _image(w, holders)
        refused = await _create(api, manager_db, image, group)
        assert (refused.status, refused.content_type, refused.body["type"]) == (
            400, "application/problem+json", PROBS + "invalid-api-params"), refused.body
        assert image in refused.body["msg"] and group in refused.body["msg"], refused.body
    # a holder that is not ALIVE does not count either
    async with w.db.begin() as conn:
        await conn.execute(t.agents.update().where(t.agents.c.id == f"ra-{tag}").values(status="LOST"))
    image = await _image(w, [f"ra-{tag}"])
    assert (await _create(api, manager_db, image, group)).status == 400
    async with w.db.connect() as conn:
        written = await conn.scalar(sa.select(sa.func.count()).select_from(t.sessions).where(
            t.sessions.c.scaling_group_name.in_([group, elsewhere])))
    assert written == 0  # nothing of the refused requests was kept


async def test_a_request_no_holder_could_ever_take_is_refused_at_create(
        world: World, api: ApiClient, manager_db: ManagerDB) -> None:
    """The holder has 2 cores, the other agent 16: a 4-core session could never start (400), a
    2-core one waits for the holder."""
    w, _ = world
    tag = secrets.token_hex(2)
    group = await _group(w, [f"ea-{tag}"], cpu="16")
    async with w.db.begin() as conn:
        await conn.execute(sa.insert(t.agents).values(
            id=f"eb-{tag}", status="ALIVE", scaling_group=group, addr=f"http://127.0.0.1:1/eb-{tag}",
            available_slots={"cpu": "2", "mem": str(32 * GiB)}, architecture=bench._arch(), compute_plugins={}))
    image = await _image(w, [f"eb-{tag}"])
    refused = await _create(api, manager_db, image, group, cpu="4")
    assert refused.status == 400, refused.body
    assert refused.body["msg"] == (f"No agent of resource group {group!r} holding the image {image} could ever "
                                   "hold this request (cpu: 4 > 2).")
    assert (await _create(api, manager_db, image, group, cpu="2")).status == 201


async def test_an_assigned_agent_must_hold_the_image(world: World, api: ApiClient, manager_db: ManagerDB) -> None:
    w, ctx = world
    tag = secrets.token_hex(2)
    group = await _group(w, [f"aa-{tag}", f"ab-{tag}"])
    image = await _image(w, [f"ab-{tag}"])
    refused = await _create(api, manager_db, image, group, config={"agentList": [f"aa-{tag}"]})
    assert refused.status == 400, refused.body
    assert refused.body["msg"] == (f"The assigned agent aa-{tag} does not hold the image {image} (no configured "
                                     "registry serves it, so agents that lack it cannot pull it)")
    assert refused.body["data"]["config.agentList"] == refused.body["msg"]
    placed = await _create(api, manager_db, image, group, config={"agentList": [f"ab-{tag}"]})
    assert placed.status == 201, placed.body
    assert len((await Scheduler(ctx).decide()).scheduled) == 1
    assert await _agents_of(w, placed.body["sessionId"]) == [f"ab-{tag}"]


async def test_an_image_of_a_configured_registry_goes_anywhere(
        world: World, api: ApiClient, manager_db: ManagerDB, registry_host: str) -> None:
    """Held by no agent, but its registry is configured: agents pull it, so it is placed as
    before (dispersed: one session on each agent). Once the registry is gone it is not."""
    w, ctx = world
    tag = secrets.token_hex(2)
    agents = [f"pa-{tag}", f"pb-{tag}", f"pc-{tag}"]
    group = await _group(w, agents)
    image = await _image(w, [], registry=registry_host)
    created = [await _create(api, manager_db, image, group) for _ in range(3)]
    assert [r.status for r in created] == [201] * 3, [r.body for r in created]
    assert len((await Scheduler(ctx).decide()).scheduled) == 3
    assert sorted([a for r in created for a in await _agents_of(w, r.body["sessionId"])]) == agents
    await registry_store.delete(ctx.etcd, registry_host)
    refused = await _create(api, manager_db, image, group)
    assert refused.status == 400 and image in refused.body["msg"], refused.body


async def test_agents_that_run_no_images_take_any(world: World, api: ApiClient, manager_db: ManagerDB) -> None:
    """Dummy-backend agents (benchmarks, scheduler tests) start no containers: no image is missing there."""
    w, ctx = world
    tag = secrets.token_hex(2)
    group = await _group(w, [f"da-{tag}"], plugins={"dummy": {"note": "dummy backend: runs nothing"}})
    image = await _image(w, [])
    created = await _create(api, manager_db, image, group)
    assert created.status == 201, created.body
    assert len((await Scheduler(ctx).decide()).scheduled) == 1
    assert await _agents_of(w, created.body["sessionId"]) == [f"da-{tag}"]


async def _statements_of_one_pass(w: bench.World, ctx: ManagerContext, agents: int) -> int:
    """One pass over 30 pending sessions, two thirds of them of an image half the agents hold."""
    tag = secrets.token_hex(2)
    ids = [f"st{agents}-{i:03d}-{tag}" for i in range(agents)]
    group = await _group(w, ids, cpu="64")
    held = await _image(w, ids[::2])
    await bench.enqueue(w, [bench.Session(group, {"cpu": Decimal(1), "mem": Decimal(GiB)}) for _ in range(30)])
    async with w.db.begin() as conn:
        names = [f"b{i}" for i in range(30) if i % 3]
        await conn.execute(t.sessions.update().where(t.sessions.c.name.in_(names)).values(image=held))
    with bench.count_statements(w.db) as counter:
        assert len((await Scheduler(ctx).decide()).scheduled) == 30
    placed = await _placements(w)
    assert all(placed[name][0] in ids[::2] for name in names), placed  # on holders only
    await bench.clear(w)
    return counter[0]


async def test_statements_per_pass_do_not_grow_with_agents_holding_images(world: World) -> None:
    w, ctx = world
    few = await _statements_of_one_pass(w, ctx, 4)
    many_ = await _statements_of_one_pass(w, ctx, 40)
    assert many_ <= few, (few, many_)
