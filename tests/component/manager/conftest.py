"""Manager component fixtures: a migrated throwaway database per test module on the half-stack's
PostgreSQL, and a signing HTTP client for an aiohttp app that runs the real middlewares."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from bai.common.auth import API_VERSION, sign_request
from bai.common.events import REDIS_DB_RATELIMIT
from bai.manager.api.keys import CTX
from bai.manager.api.middlewares import auth_middleware, on_prepare, problem_middleware
from bai.manager.config import DBConfig, ManagerConfig
from bai.manager.services.context import ManagerContext
from bai.manager.store import fixtures
from bai.manager.store.db import create_engine
from tests.fixtures.halfstack import HalfStack


@dataclass(frozen=True)
class Creds:
    access_key: str
    secret_key: str


@dataclass
class ManagerDB:
    name: str
    engine: AsyncEngine
    admin: Creds


@pytest.fixture(scope="module")
async def manager_db(halfstack: HalfStack, request: pytest.FixtureRequest) -> AsyncIterator[ManagerDB]:
    """A fresh database for this test module: migrated to head and holding the initial fixtures."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    name = f"t_{re.sub(r'[^a-z0-9_]', '_', module.lower())}_{secrets.token_hex(3)}"
    await halfstack.migrated_database(name)
    engine = create_engine(DBConfig(addr=f"127.0.0.1:{halfstack.pg_port}", name=name, user="postgres"))
    try:
        async with engine.begin() as conn:
            admin = await fixtures.populate(conn)
        yield ManagerDB(name, engine, Creds(admin.access_key, admin.secret_key))
    finally:
        await engine.dispose()
        await asyncio.to_thread(halfstack.psql, f"drop database if exists {name} with (force)")


@dataclass
class Reply:
    status: int
    content_type: str
    body: Any


class ApiClient:
    """Sends requests the way the official SDK does: JSON bodies, HMAC-signed headers."""

    def __init__(self, client: TestClient) -> None:  # type: ignore[type-arg]
        self.client = client
        self.host = f"127.0.0.1:{client.port}"

    async def post(self, path: str, body: Any = None, creds: Creds | None = None, *,
                   raw: bytes | None = None) -> Reply:
        data = raw if raw is not None else json.dumps(body).encode()
        headers = {"Host": self.host, "Content-Type": "application/json",
                   "X-BackendAI-Version": API_VERSION, "X-BackendAI-Domain": "default"}
        if creds is not None:
            signed = sign_request(creds.access_key, creds.secret_key, "POST", path, self.host, "application/json")
            headers.update({"Date": signed.date, "Authorization": signed.authorization})
        async with self.client.post(path, data=data, headers=headers) as resp:
            return Reply(resp.status, resp.content_type, await resp.json(content_type=None))


@pytest.fixture(scope="module")
async def make_client(halfstack: HalfStack, manager_db: ManagerDB
                      ) -> AsyncIterator[Callable[[Callable[[web.Application], None]], Any]]:
    """``await make_client(routes)``: an ApiClient for an app with the real middlewares, a real
    ManagerContext over this module's database and the half-stack's Redis, and ``routes`` mounted."""
    rate_redis = aioredis.Redis(host="127.0.0.1", port=halfstack.redis_port, db=REDIS_DB_RATELIMIT)
    opened: list[TestClient] = []  # type: ignore[type-arg]

    async def make(routes: Callable[[web.Application], None]) -> ApiClient:
        app = web.Application(middlewares=[problem_middleware, auth_middleware])
        app.on_response_prepare.append(on_prepare)
        app[CTX] = ManagerContext(
            config=ManagerConfig(), db=manager_db.engine, redis_stream=rate_redis, redis_ratelimit=rate_redis,
            etcd=None, agents=None, events=None,  # type: ignore[arg-type]  # unused by these handlers
        )
        routes(app)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        opened.append(client)
        return ApiClient(client)

    try:
        yield make
    finally:
        for client in opened:
            await client.close()
        await rate_redis.aclose()
