"""The audit log against a real database: GraphQL mutations (one entry per field, secrets
redacted, ok / failed / denied), admin REST calls, password logins and refused signatures;
reading it through GraphQL (superadmins and monitors only); the retention purge; and the writer
riding out a real PostgreSQL outage (its own cluster, stopped and started) while requests keep
being answered without waiting for it."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from bai.common.auth import API_VERSION, sign_request
from bai.common.events import REDIS_DB_RATELIMIT
from bai.manager.api import auth, gql
from bai.manager.api.audit import audit_middleware
from bai.manager.api.keys import CTX
from bai.manager.api.middlewares import auth_middleware, on_prepare, problem_middleware
from bai.manager.config import AuditConfig, AuthConfig, DBConfig, ManagerConfig
from bai.manager.server import build_app
from bai.manager.services import audit
from bai.manager.services.context import ManagerContext, RequesterCache
from bai.manager.store import audit as audit_store
from bai.manager.store import fixtures, migrate
from bai.manager.store import tables as t
from bai.manager.store.db import create_engine
from tests.fixtures.halfstack import PG_BIN, HalfStack, free_port, wait_for
from tests.fixtures.node_parts import node_parts

from .conftest import Creds, ManagerDB
from .test_gql import Owner, _add_user

PASSWORD = "pw-" + secrets.token_hex(8)
LIST_Q = ("query($limit: Int!, $offset: Int!, $filter: String, $order: String) {"
          " audit_log_list(limit: $limit, offset: $offset, filter: $filter, order: $order) {"
          " total_count items { id created_at access_key user_id email role client_ip kind operation target"
          " args outcome message duration_ms } } }")
CREATE_USER = ("mutation($email: String!, $props: UserInput!) { create_user(email: $email, props: $props) {"
               " ok msg user { email } } }")


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any


class Client:
    def __init__(self, client: TestClient) -> None:  # type: ignore[type-arg]
        self.client = client
        self.host = f"127.0.0.1:{client.port}"

    async def call(self, method: str, path: str, body: Any = None, creds: Creds | None = None) -> Reply:
        ctype = "application/json"
        headers = {"Host": self.host, "Content-Type": ctype, "X-BackendAI-Version": API_VERSION}
        if creds is not None:
            signed = sign_request(creds.access_key, creds.secret_key, method, path, self.host, ctype)
            headers.update({"Date": signed.date, "Authorization": signed.authorization})
        data = None if body is None else json.dumps(body).encode()
        async with self.client.request(method, path, data=data, headers=headers) as resp:
            return Reply(resp.status, await resp.json(content_type=None))

    async def gql(self, creds: Creds, query: str, variables: dict[str, Any] | None = None) -> Any:
        reply = await self.call("POST", "/admin/gql", {"query": query, "variables": variables or {}}, creds)
        assert reply.status == 200, reply.body
        return reply.body


@asynccontextmanager
async def open_app(ctx: ManagerContext) -> AsyncIterator[Client]:
    """The real middlewares (audit included), /auth and GraphQL over ``ctx``, with the audit log
    and its writer running as in the manager."""
    app = web.Application(middlewares=[problem_middleware, audit_middleware, auth_middleware])
    app.on_response_prepare.append(on_prepare)
    app[CTX] = ctx
    auth.routes(app)
    gql.routes(app)
    async with audit.running(ctx):
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        try:
            yield Client(client)
        finally:
            await client.close()


def make_ctx(engine: AsyncEngine, redis: aioredis.Redis, config: ManagerConfig) -> ManagerContext:
    return ManagerContext(config=config, db=engine, redis_stream=redis, redis_ratelimit=redis,
                          etcd=None, agents=None, events=None)  # type: ignore[arg-type]  # unused here


@dataclass
class World:
    db: ManagerDB
    ctx: ManagerContext
    api: Client
    admin: Creds
    domain_admin: Owner
    user: Owner
    user_email: str
    monitor: Owner

    async def rows(self, *conds: Any) -> list[Any]:
        async with self.db.engine.connect() as conn:
            q = sa.select(t.audit_logs).where(*conds).order_by(t.audit_logs.c.id)
            return list((await conn.execute(q)).all())

    async def wait_rows(self, *conds: Any, count: int = 1, deadline: float = 10.0) -> list[Any]:
        """The entries matching ``conds`` once there are ``count`` of them (polled, bounded)."""
        end = time.monotonic() + deadline
        while True:
            rows = await self.rows(*conds)
            if len(rows) >= count or time.monotonic() > end:
                assert len(rows) >= count, f"{len(rows)} audit entries after {deadline} s, wanted {count}"
                return rows
            await asyncio.sleep(0.02)


@pytest.fixture(scope="module")
async def world(halfstack: HalfStack, manager_db: ManagerDB) -> AsyncIterator[World]:
    async with manager_db.engine.begin() as conn:
        group = await conn.scalar(sa.select(t.groups.c.id).where(t.groups.c.domain_name == "default"))
        domain_admin = await _add_user(conn, "dadmin@example.com", "default", "admin", group)
        user = await _add_user(conn, "plain@example.com", "default", "user", group)
        monitor = await _add_user(conn, "watch@example.com", "default", "monitor", group)
        await conn.execute(sa.update(t.users).where(t.users.c.uuid == user.uuid)
                           .values(password=fixtures.hash_password(PASSWORD)))
    redis = aioredis.Redis(host="127.0.0.1", port=halfstack.redis_port, db=REDIS_DB_RATELIMIT)
    ctx = make_ctx(manager_db.engine, redis, ManagerConfig(auth=AuthConfig(max_failed_attempts=10_000)))
    try:
        async with open_app(ctx) as api:
            yield World(manager_db, ctx, api, manager_db.admin, domain_admin, user, "plain@example.com", monitor)
    finally:
        await redis.aclose()


def _entry(world: World, operation: str, **cond: Any) -> list[Any]:
    a = t.audit_logs.c
    return [a.operation == operation, *(getattr(a, k) == v for k, v in cond.items())]


# ------------------------------------------------------------------ GraphQL mutations

async def test_a_mutation_is_recorded_with_its_secrets_redacted(world: World) -> None:
    email = f"new-{secrets.token_hex(3)}@example.com"
    secret = "s3cret-" + secrets.token_hex(6)
    body = await world.api.gql(world.admin, CREATE_USER, {"email": email, "props": {
        "username": email.split("@")[0], "password": secret, "domain_name": "default", "role": "user"}})
    assert body["data"]["create_user"]["ok"] is True, body
    [row] = await world.wait_rows(*_entry(world, "create_user", target=f"email={email}"))
    assert (row.kind, row.outcome, row.access_key, row.role) == ("graphql", "ok", world.admin.access_key, "superadmin")
    assert row.email == fixtures.ADMIN_EMAIL and row.user_id is not None and row.client_ip == "127.0.0.1"
    assert row.args["email"] == email and row.args["props"]["password"] == audit.REDACTED
    assert row.args["props"]["role"] == "user" and row.duration_ms >= 0
    assert secret not in json.dumps(row._asdict(), default=str)


async def test_a_privilege_failure_is_denied_and_changes_nothing(world: World) -> None:
    email = f"sneaky-{secrets.token_hex(3)}@example.com"
    body = await world.api.gql(world.user.creds, CREATE_USER, {"email": email, "props": {
        "password": "whatever-123", "domain_name": "default", "role": "superadmin"}})
    assert body["data"] == {"create_user": None} and body["errors"][0]["path"] == ["create_user"]
    [row] = await world.wait_rows(*_entry(world, "create_user", target=f"email={email}"))
    assert (row.outcome, row.access_key, row.role) == ("denied", world.user.creds.access_key, "user")
    assert "403" in row.message and row.args["props"]["password"] == audit.REDACTED
    async with world.db.engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(t.users).where(t.users.c.email == email)) == 0


async def test_a_mutation_answering_ok_false_is_failed(world: World) -> None:
    """create_domain of a name that exists: the payload says ok=false and why."""
    q = "mutation($name: String!, $props: DomainInput!) { create_domain(name: $name, props: $props) { ok msg } }"
    body = await world.api.gql(world.admin, q, {"name": "default", "props": {}})
    assert body["data"]["create_domain"]["ok"] is False, body
    [row] = await world.wait_rows(*_entry(world, "create_domain", target="name=default"))
    assert row.outcome == "failed" and row.message == body["data"]["create_domain"]["msg"]


async def test_each_field_of_a_mutation_document_is_one_entry_and_queries_none(world: World) -> None:
    tag = secrets.token_hex(3)
    q = ("mutation($p: DomainInput!) { a: create_domain(name: \"da-TAG\", props: $p) { ok }"
         " b: create_domain(name: \"db-TAG\", props: $p) { ok } }").replace("TAG", tag)
    body = await world.api.gql(world.admin, q, {"p": {"description": "x"}})
    assert body["data"] == {"a": {"ok": True}, "b": {"ok": True}}, body
    rows = await world.wait_rows(t.audit_logs.c.target.in_([f"name=da-{tag}", f"name=db-{tag}"]), count=2)
    assert [r.outcome for r in rows] == ["ok", "ok"]
    await _settled(world)
    before = len(await world.rows())
    assert (await world.api.gql(world.admin, "{ domains { name } }"))["data"]["domains"]
    assert (await world.api.call("POST", "/admin/graphql", {"query": "{ domain(name: \"default\") { name } }"},
                                 world.admin)).status == 200
    await _settled(world)
    assert len(await world.rows()) == before


async def _settled(world: World) -> None:
    log = audit.audit_of(world.ctx)
    assert log is not None and await log.drain(10)


# ------------------------------------------------------------------ REST

async def test_an_admin_rest_call_is_recorded(world: World) -> None:
    got = await world.api.call("POST", "/auth/update-full-name",
                               {"email": world.user_email, "full_name": "Renamed"}, world.user.creds)
    assert got.status == 200
    [row] = await world.wait_rows(*_entry(world, "POST /auth/update-full-name",
                                          access_key=world.user.creds.access_key))
    assert (row.kind, row.outcome, row.email, row.target) == ("rest", "ok", world.user_email,
                                                              f"email={world.user_email}")
    assert row.args == {"email": world.user_email, "full_name": "Renamed"}


async def test_password_logins_are_recorded_and_failures_denied(world: World) -> None:
    login = {"type": "keypair", "domain": "default", "username": world.user_email}
    ok = await world.api.call("POST", "/auth/authorize", {**login, "password": PASSWORD})
    assert ok.status == 200
    bad = await world.api.call("POST", "/auth/authorize", {**login, "password": "not-it"})
    assert bad.status == 401
    rows = await world.wait_rows(*_entry(world, "POST /auth/authorize"), count=2)
    good_row, bad_row = rows[-2:]
    assert (good_row.outcome, good_row.access_key, good_row.email) == ("ok", ok.body["data"]["access_key"],
                                                                       world.user_email)
    assert (bad_row.outcome, bad_row.access_key, bad_row.user_id) == ("denied", None, None)
    assert "auth-failed" in bad_row.message
    for row in rows:
        assert row.args["password"] == audit.REDACTED and f"username={world.user_email}" in row.target
        assert PASSWORD not in json.dumps(row._asdict(), default=str)


async def test_a_refused_signature_is_recorded_on_any_route(world: World) -> None:
    forged = Creds(world.user.creds.access_key, "x" * 40)
    got = await world.api.call("GET", "/auth/test?echo=1", creds=forged)
    assert got.status == 401
    [row] = await world.wait_rows(*_entry(world, "GET /auth/test"))
    assert (row.outcome, row.access_key, row.target) == ("denied", None, f"access_key={forged.access_key}")
    assert "Signature mismatch" in row.message


# ------------------------------------------------------------------ reading

async def test_superadmins_and_monitors_read_the_log_no_one_else(world: World) -> None:
    await world.api.call("POST", "/auth/update-full-name", {"email": world.user_email, "full_name": "R2"},
                         world.user.creds)
    await _settled(world)
    total = len(await world.rows())
    for creds in (world.admin, world.monitor.creds):
        page = (await world.api.gql(creds, LIST_Q, {"limit": 5, "offset": 0}))["data"]["audit_log_list"]
        assert page["total_count"] >= total and len(page["items"]) == 5
        ids = [int(i["id"]) for i in page["items"]]
        assert ids == sorted(ids, reverse=True)  # newest first
    for creds in (world.user.creds, world.domain_admin.creds):
        body = await world.api.gql(creds, LIST_Q, {"limit": 5, "offset": 0})
        assert body["data"] == {"audit_log_list": None} and body["errors"][0]["path"] == ["audit_log_list"]


async def test_the_log_is_filtered_and_ordered_with_the_list_language(world: World) -> None:
    flt = f'operation == "POST /auth/update-full-name" & access_key == "{world.user.creds.access_key}"'
    page = (await world.api.gql(world.admin, LIST_Q, {"limit": 100, "offset": 0, "filter": flt,
                                                      "order": "+created_at"}))["data"]["audit_log_list"]
    assert page["total_count"] == len(page["items"]) >= 1
    assert {i["operation"] for i in page["items"]} == {"POST /auth/update-full-name"}
    stamps = [i["created_at"] for i in page["items"]]
    assert stamps == sorted(stamps)
    assert json.loads(page["items"][0]["args"])["email"] == world.user_email
    body = await world.api.gql(world.admin, LIST_Q, {"limit": 5, "offset": 0, "filter": 'outcome == "maybe"'})
    assert body["data"] == {"audit_log_list": None} and "outcome" in body["errors"][0]["message"]


async def test_retention_purges_only_what_is_older(world: World) -> None:
    old = datetime.now(UTC) - timedelta(days=91)
    marker = f"old-{secrets.token_hex(3)}"
    async with world.db.engine.begin() as conn:
        await audit_store.insert_entries(conn, [
            audit.AuditEntry(kind="rest", operation=marker, outcome="ok", created_at=old).row(),
            audit.AuditEntry(kind="rest", operation=marker, outcome="ok").row(),
        ])
    assert await audit.purge_expired(world.ctx) >= 1
    [kept] = await world.rows(t.audit_logs.c.operation == marker)
    assert kept.created_at > old + timedelta(days=1)


# ------------------------------------------------------------------ a database outage

@contextmanager
def own_postgres() -> Iterator[Callable[[bool], None]]:
    """A PostgreSQL cluster of this test's own, and ``switch(up)`` to stop (fast shutdown) and
    start it again on the same port."""
    root = Path(tempfile.mkdtemp(prefix="bai-audit-pg-"))
    os.chmod(root, 0o755)
    data, port = root / "pg", free_port()
    data.mkdir()
    shutil.chown(data, "postgres", "postgres")
    subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust",
                    "-U", "postgres", "--no-sync"], check=True, capture_output=True)
    proc: subprocess.Popen[bytes] | None = None

    def ready() -> bool:
        return subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-Atqc", "select 1"],
                              capture_output=True, text=True).stdout.strip() == "1"

    def switch(up: bool) -> None:
        nonlocal proc
        if up:
            proc = subprocess.Popen(
                ["runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port),
                 "-k", str(data), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                stdout=subprocess.DEVNULL, stderr=open(root / "pg.log", "ab"))
            wait_for(ready, "postgres", proc=proc)
        elif proc is not None:
            # fast shutdown: connections are cut at once (runuser does not pass SIGINT on)
            subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "stop", "-D", str(data),
                            "-m", "fast", "-w", "-t", "30"], check=True, capture_output=True)
            proc.wait(timeout=30)
            proc = None

    switch.port = port  # type: ignore[attr-defined]
    try:
        switch(True)
        yield switch
    finally:
        switch(False)
        shutil.rmtree(root, ignore_errors=True)


async def test_the_writer_rides_out_a_database_outage_without_holding_requests(halfstack: HalfStack) -> None:
    with own_postgres() as switch:
        port = switch.port  # type: ignore[attr-defined]
        dsn = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/audit"
        await asyncio.to_thread(subprocess.run, ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                                                 "-qc", "create database audit"], check=True)
        await asyncio.to_thread(migrate.upgrade, dsn)
        engine = create_engine(DBConfig(addr=f"127.0.0.1:{port}", name="audit", user="postgres"))
        redis = aioredis.Redis(host="127.0.0.1", port=halfstack.redis_port, db=REDIS_DB_RATELIMIT)
        try:
            async with engine.begin() as conn:
                admin = await fixtures.populate(conn)
            ctx = make_ctx(engine, redis, ManagerConfig(audit=AuditConfig(**{"queue-size": 5})))
            # Keep the admin's keypair cached through the outage: its requests then need no database.
            ctx.requesters = RequesterCache(engine, ttl=600)
            creds = Creds(admin.access_key, admin.secret_key)
            forged = Creds(admin.access_key, "y" * 40)
            async with open_app(ctx) as api:
                log = audit.audit_of(ctx)
                assert log is not None
                assert (await api.call("GET", "/auth/test", creds=creds)).status == 200
                await asyncio.to_thread(switch, False)
                began = time.monotonic()
                for _ in range(8):  # audited refusals, while nothing can be written
                    assert (await api.call("GET", "/auth/test", creds=forged)).status == 401
                assert (await api.call("GET", "/auth/test", creds=creds)).status == 200
                assert time.monotonic() - began < 3.0, "requests waited for the audit log"
                assert log.pending <= 5 and log.dropped >= 3
                await asyncio.to_thread(switch, True)
                assert await log.drain(30), "the writer did not catch up after the outage"
                async with engine.connect() as conn:
                    rows = (await conn.execute(sa.select(t.audit_logs).order_by(t.audit_logs.c.id))).all()
                refused = [r for r in rows if r.operation == "GET /auth/test"]
                [dropped] = [r for r in rows if r.operation == "audit.dropped"]
                assert len(refused) == 8 - log.dropped and all(r.outcome == "denied" for r in refused)
                assert (dropped.kind, dropped.args["count"]) == ("system", log.dropped)
                # and it goes on writing as before
                assert (await api.call("GET", "/auth/test", creds=forged)).status == 401
                assert await log.drain(10)
                async with engine.connect() as conn:
                    assert await conn.scalar(sa.select(sa.func.count()).select_from(t.audit_logs)) == len(rows) + 1
        finally:
            await redis.aclose()
            await engine.dispose()


def test_the_log_never_holds_a_secret_or_a_byte_postgres_refuses() -> None:
    args = {"password": "p", "props": {"new_password2": "q", "SecretKey": "s", "nested": [{"api_token": "t"}],
                                        "name": "ok\x00\ud800", "n": float("nan")}, "registry": {"Passwd": 1}}
    clean = audit.compact(args)
    assert clean == {"password": "***", "props": {"new_password2": "***", "SecretKey": "***",
                                                   "nested": [{"api_token": "***"}], "name": "ok\\0?", "n": "nan"},
                     "registry": {"Passwd": "***"}}
    assert audit.compact({"blob": "x" * 10_000}) == {"_truncated": True, "_keys": ["blob"]}
    assert audit.describe_target({"email": "a@b", "props": {"x": 1}, "password": "p"}) == "email=a@b, password=***"


async def test_a_full_queue_drops_the_oldest_and_says_so(manager_db: ManagerDB) -> None:
    log = audit.AuditLog(manager_db.engine, queue_size=3)  # no writer yet: nothing leaves the queue
    tag = secrets.token_hex(3)
    for i in range(5):
        log.record(audit.AuditEntry(kind="rest", operation=f"{tag}-{i}", outcome="ok"))
    assert (log.pending, log.dropped) == (3, 2)
    writer = asyncio.create_task(log.run())
    try:
        assert await log.drain(10)
    finally:
        writer.cancel()
    async with manager_db.engine.connect() as conn:
        rows = (await conn.execute(sa.select(t.audit_logs).where(sa.or_(
            t.audit_logs.c.operation.startswith(tag), t.audit_logs.c.operation == "audit.dropped"))
            .order_by(t.audit_logs.c.id))).all()
    assert [r.operation for r in rows] == [f"{tag}-2", f"{tag}-3", f"{tag}-4", "audit.dropped"]
    assert rows[-1].args == {"count": 2} and "queue-size (3)" in rows[-1].message


# ------------------------------------------------------------------ the manager as it runs

async def test_the_manager_audits_from_start_up_and_drains_at_shutdown(halfstack: HalfStack) -> None:
    """build_app with its start-up list: the audit middleware and writer, the purge and the
    keypair retirement run while it serves, and an entry made just before shutdown is written."""
    tasks = {"audit-writer", "audit-purge", "keypair-retire"}
    async with node_parts(halfstack, "audit") as parts:
        before = asyncio.all_tasks()
        client = TestClient(TestServer(build_app(parts.manager_config), host="127.0.0.1"))
        await client.start_server()
        try:
            started = [t for t in asyncio.all_tasks() - before if t.get_name() in tasks]
            assert {t.get_name() for t in started} == tasks
            api = Client(client)
            creds = Creds(parts.access_key, parts.secret_key)
            body = await api.gql(creds, "mutation($n: String!, $p: DomainInput!) {"
                                        " create_domain(name: $n, props: $p) { ok } }",
                                 {"n": "audited", "p": {}})
            assert body["data"]["create_domain"]["ok"] is True, body
            got = await api.call("POST", "/auth/authorize", {"type": "keypair", "domain": "default",
                                                             "username": fixtures.ADMIN_EMAIL, "password": "no"})
            assert got.status == 401
        finally:
            await client.close()  # the last entry may still be queued: shutdown drains it
        assert all(t.done() for t in started)
        async with parts.db.connect() as conn:
            rows = (await conn.execute(sa.select(t.audit_logs).order_by(t.audit_logs.c.id))).all()
        assert [(r.operation, r.outcome) for r in rows] == [("create_domain", "ok"),
                                                            ("POST /auth/authorize", "denied")]
        assert rows[0].access_key == parts.access_key and rows[1].access_key is None
