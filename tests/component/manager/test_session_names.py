"""Live session names are unique per owner, enforced by the database (migration 0003's partial
unique index): concurrent creates with one name leave exactly one session, the others get the
existing-name answer; upgrading a database that already holds duplicates does not fail."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import create_async_engine

from bai.common.events import EventProducer
from bai.manager.api import session
from bai.manager.api.keys import CTX, SESSIONS
from bai.manager.services.sessions import SessionService
from bai.manager.store import fixtures, migrate
from bai.manager.store import sessions as store
from bai.manager.store import tables as t
from tests.fixtures.halfstack import HalfStack

from .conftest import ApiClient, ManagerDB

PROBS = "https://api.backend.ai/probs/"
IMAGE = fixtures.DEFAULT_IMAGE_ALIASES["python"]


def _session_routes(app: web.Application) -> None:
    ctx = app[CTX]
    ctx.events = EventProducer(ctx.redis_stream)  # session_enqueued goes to the half-stack's Redis
    app[SESSIONS] = SessionService(ctx)
    session.routes(app)


@pytest.fixture(scope="module")
async def api(make_client: Any, manager_db: ManagerDB) -> ApiClient:
    async with manager_db.engine.begin() as conn:
        await conn.execute(sa.insert(t.images).values(
            id=uuid.uuid4(), name=IMAGE, architecture="x86_64", registry="bai.local", labels={}))
    client: ApiClient = await make_client(_session_routes)
    return client


async def _rows(db: ManagerDB, name: str) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(sa.select(t.sessions.c.id, t.sessions.c.status)
                                        .where(t.sessions.c.name == name))).all())


def _create(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "python", "enqueueOnly": True, **extra}


async def test_concurrent_creates_leave_one_session(api: ApiClient, manager_db: ManagerDB) -> None:
    name = "race-" + secrets.token_hex(4)
    replies = await asyncio.gather(*(api.post("/session", _create(name, reuseIfExists=False), manager_db.admin)
                                     for _ in range(8)))
    assert all(r.status < 500 for r in replies), [(r.status, r.body) for r in replies]
    created = [r for r in replies if r.status == 201]
    refused = [r for r in replies if r.status != 201]
    assert len(created) == 1 and len(refused) == 7
    winner = created[0].body["sessionId"]
    for r in refused:
        assert (r.status, r.content_type, r.body["type"]) == (
            400, "application/problem+json", PROBS + "session-already-exists")
        assert r.body["data"]["existingSessionId"] == winner
    assert [str(row.id) for row in await _rows(manager_db, name)] == [winner]


async def test_concurrent_creates_with_reuse_share_one_session(api: ApiClient, manager_db: ManagerDB) -> None:
    name = "reuse-" + secrets.token_hex(4)
    replies = await asyncio.gather(*(api.post("/session", _create(name), manager_db.admin) for _ in range(8)))
    assert [r.status for r in replies] == [201] * 8, [r.body for r in replies]
    assert len({r.body["sessionId"] for r in replies}) == 1
    assert sorted(r.body["created"] for r in replies) == [False] * 7 + [True]
    assert len(await _rows(manager_db, name)) == 1


async def test_the_index_itself_refuses_a_second_live_name(api: ApiClient, manager_db: ManagerDB) -> None:
    """The check-then-insert in the service is not what holds: the database refuses the row."""
    name = "direct-" + secrets.token_hex(4)
    assert (await api.post("/session", _create(name), manager_db.admin)).status == 201
    [row] = await _rows(manager_db, name)
    async with manager_db.engine.connect() as conn:
        template = (await conn.execute(sa.select(t.sessions).where(t.sessions.c.id == row.id))).one()._asdict()
    copy = {k: v for k, v in template.items() if k not in ("status", "status_history", "created_at")}
    copy.update(id=uuid.uuid4(), creation_id=secrets.token_hex(16))
    with pytest.raises(store.DuplicateSessionName):
        async with manager_db.engine.begin() as conn:
            await store.insert_session(conn, copy, [])
    # Once the first is terminated, the name is free again.
    async with manager_db.engine.begin() as conn:
        await conn.execute(sa.update(t.sessions).where(t.sessions.c.id == row.id).values(status="TERMINATED"))
    again = await api.post("/session", _create(name, reuseIfExists=False), manager_db.admin)
    assert again.status == 201 and again.body["sessionId"] != str(row.id)
    assert sorted(r.status for r in await _rows(manager_db, name)) == ["PENDING", "TERMINATED"]


async def test_upgrade_renames_existing_duplicates(halfstack: HalfStack) -> None:
    dbname = f"t_names_upgrade_{secrets.token_hex(3)}"
    await asyncio.to_thread(halfstack.psql, f"create database {dbname}")
    engine = create_async_engine(halfstack.pg_dsn(dbname))
    try:
        await asyncio.to_thread(migrate.upgrade, halfstack.pg_dsn(dbname), "0002")
        async with engine.begin() as conn:
            admin = await fixtures.populate(conn)
            user_uuid, group_id = (await conn.execute(sa.text(
                "select u.uuid, g.id from users u, groups g where u.email = :e and g.name = 'default'"),
                {"e": fixtures.ADMIN_EMAIL})).one()
            ids = [uuid.uuid4() for _ in range(4)]
            for i, (sid, status) in enumerate(zip(ids, ["RUNNING", "PENDING", "ERROR", "TERMINATED"],
                                                  strict=True)):
                await conn.execute(sa.text(
                    "insert into sessions (id, name, domain_name, group_id, user_uuid, access_key, status,"
                    " created_at) values (:id, 'dup-name', 'default', :g, :u, :ak, :st,"
                    " now() - make_interval(mins => :age))"),
                    {"id": sid, "g": group_id, "u": user_uuid, "ak": admin.access_key, "st": status, "age": 10 - i})
                await conn.execute(sa.text(
                    "insert into kernels (id, session_id, session_name, domain_name, group_id, user_uuid)"
                    " values (:k, :id, 'dup-name', 'default', :g, :u)"),
                    {"k": uuid.uuid4(), "id": sid, "g": group_id, "u": user_uuid})
        await asyncio.to_thread(migrate.upgrade, halfstack.pg_dsn(dbname))
        async with engine.connect() as conn:
            names = dict((await conn.execute(sa.text("select id, name from sessions"))).all())
            kernel_names = dict((await conn.execute(sa.text("select session_id, session_name from kernels"))).all())
            policy = await conn.scalar(sa.text(
                "select total_resource_slots from keypair_resource_policies where name = 'signup-default'"))
        # The oldest live session keeps the name, the younger live ones are renamed, the
        # terminated one is left alone; kernels follow their session.
        assert names[ids[0]] == "dup-name" and names[ids[3]] == "dup-name"
        for sid in ids[1:3]:
            assert names[sid] == "dup-name-" + sid.hex and len(names[sid]) <= 64
        assert kernel_names == names
        assert policy == {"cpu": "2", "mem": str(4 * 2**30)}
    finally:
        await engine.dispose()
        await asyncio.to_thread(halfstack.psql, f"drop database if exists {dbname} with (force)")
