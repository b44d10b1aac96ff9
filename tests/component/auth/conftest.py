"""Fixtures for the /auth endpoints: a fresh migrated database per test module on the half-stack's
PostgreSQL, and an app with the real middlewares, a real ManagerContext and only the /auth routes.

A test module may set ``AUTH_CONFIG`` (an ``AuthConfig``); by default sign-up is enabled and the
failed-attempt throttle is set high enough not to interfere with tests of other behaviour."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from bai.common.auth import API_VERSION, sign_request
from bai.common.events import REDIS_DB_RATELIMIT
from bai.manager.api import auth
from bai.manager.api.keys import CTX
from bai.manager.api.middlewares import auth_middleware, on_prepare, problem_middleware
from bai.manager.config import AuthConfig, DBConfig, ManagerConfig
from bai.manager.services.context import ManagerContext
from bai.manager.store import fixtures
from bai.manager.store import tables as t
from bai.manager.store.db import create_engine
from tests.fixtures.halfstack import HalfStack

PROBS = "https://api.backend.ai/probs/"
ADMIN_PASSWORD = "admin-pass-" + secrets.token_hex(4)
DEFAULT_AUTH_CONFIG = AuthConfig(signup_enabled=True, max_failed_attempts=10_000)


@dataclass(frozen=True)
class Creds:
    access_key: str
    secret_key: str


@dataclass
class Reply:
    status: int
    content_type: str
    body: Any


class AuthClient:
    """Requests as the official SDK sends them: JSON bodies (text/plain when empty), HMAC-signed
    when ``creds`` is given, anonymous otherwise."""

    def __init__(self, client: TestClient, ctx: ManagerContext) -> None:  # type: ignore[type-arg]
        self.client = client
        self.ctx = ctx
        self.host = f"127.0.0.1:{client.port}"

    async def call(self, method: str, path: str, body: Any = None, creds: Creds | None = None,
                   headers: dict[str, str] | None = None) -> Reply:
        reply, _ = await self.call_with_headers(method, path, body, creds, headers)
        return reply

    async def call_with_headers(self, method: str, path: str, body: Any = None, creds: Creds | None = None,
                                extra: dict[str, str] | None = None) -> tuple[Reply, dict[str, str]]:
        ctype = "text/plain" if body is None else "application/json"
        headers = {"Host": self.host, "Content-Type": ctype, "X-BackendAI-Version": API_VERSION, **(extra or {})}
        if creds is not None:
            signed = sign_request(creds.access_key, creds.secret_key, method, path, self.host, ctype)
            headers.update({"Date": signed.date, "Authorization": signed.authorization})
        data = None if body is None else json.dumps(body).encode()
        async with self.client.request(method, path, data=data, headers=headers) as resp:
            return Reply(resp.status, resp.content_type, await resp.json(content_type=None)), dict(resp.headers)


@dataclass
class AuthEnv:
    engine: AsyncEngine
    admin: Creds
    api: AuthClient

    async def count(self, table: sa.Table) -> int:
        async with self.engine.connect() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)

    async def counts(self) -> tuple[int, int, int]:
        return (await self.count(t.users), await self.count(t.keypairs),
                await self.count(t.association_groups_users))

    async def user(self, email: str) -> Any:
        async with self.engine.connect() as conn:
            return (await conn.execute(sa.select(t.users).where(t.users.c.email == email))).first()

    async def keypairs_of(self, email: str) -> list[Any]:
        q = (sa.select(t.keypairs).join(t.users, t.users.c.uuid == t.keypairs.c.user)
             .where(t.users.c.email == email).order_by(t.keypairs.c.access_key))
        async with self.engine.connect() as conn:
            return list((await conn.execute(q)).all())

    async def execute(self, stmt: Any) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(stmt)

    async def signup(self, **extra: Any) -> tuple[str, str, Creds]:
        """A fresh user through the API: (email, password, its keypair)."""
        email = f"u{secrets.token_hex(4)}@example.com"
        password = "pw-" + secrets.token_hex(6)
        # A fresh client address each time, for modules that trust the test client as a proxy
        # (and so throttle sign-ups per X-Forwarded-For); ignored elsewhere.
        address = f"192.0.2.{secrets.randbelow(250) + 1}"
        reply = await self.api.call("POST", "/auth/signup",
                                    {"domain": "default", "email": email, "password": password, **extra},
                                    headers={"X-Forwarded-For": address})
        assert reply.status == 201, reply.body
        return email, password, Creds(reply.body["access_key"], reply.body["secret_key"])


@pytest.fixture(scope="module")
async def env(halfstack: HalfStack, request: pytest.FixtureRequest) -> AsyncIterator[AuthEnv]:
    module = request.module.__name__.rsplit(".", 1)[-1]
    name = f"t_auth_{re.sub(r'[^a-z0-9_]', '_', module.lower())}_{secrets.token_hex(3)}"
    await halfstack.migrated_database(name)
    engine = create_engine(DBConfig(addr=f"127.0.0.1:{halfstack.pg_port}", name=name, user="postgres"))
    rate_redis = aioredis.Redis(host="127.0.0.1", port=halfstack.redis_port, db=REDIS_DB_RATELIMIT)
    client: TestClient | None = None  # type: ignore[type-arg]
    try:
        async with engine.begin() as conn:
            admin = await fixtures.populate(conn, admin_password=ADMIN_PASSWORD)
        app = web.Application(middlewares=[problem_middleware, auth_middleware])
        app.on_response_prepare.append(on_prepare)
        auth_config = getattr(request.module, "AUTH_CONFIG", DEFAULT_AUTH_CONFIG)
        ctx = ManagerContext(
            config=ManagerConfig(auth=auth_config), db=engine, redis_stream=rate_redis, redis_ratelimit=rate_redis,
            etcd=None, agents=None, events=None,  # type: ignore[arg-type]  # unused by /auth
        )
        app[CTX] = ctx
        auth.routes(app)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        yield AuthEnv(engine, Creds(admin.access_key, admin.secret_key), AuthClient(client, ctx))
    finally:
        if client is not None:
            await client.close()
        await rate_redis.aclose()
        await engine.dispose()
        await asyncio.to_thread(halfstack.psql, f"drop database if exists {name} with (force)")
