"""A whole node in one process: the real manager app and the real agent, over throwaway
PostgreSQL/etcd (shared ``halfstack``), a Redis of its own, the real Docker engine and the real
kernel image. Tests talk to the manager over HTTP with signed requests, as clients do."""

from __future__ import annotations

import asyncio
import json
import secrets
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bai.agent.config import AgentConfig
from bai.agent.server import AgentServer
from bai.common import etcd as etcd_mod
from bai.common.auth import API_VERSION, sign_request
from bai.manager.config import ManagerConfig
from bai.manager.server import build_app
from bai.manager.store import fixtures
from bai.manager.store import tables as t
from tests.fixtures.halfstack import HalfStack, dedicated_redis


@dataclass
class Node:
    client: TestClient
    db: AsyncEngine
    access_key: str
    secret_key: str
    agent: AgentServer
    redis_addr: str
    last_headers: Any = None

    async def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                   keys: tuple[str, str] | None = None, headers: dict[str, str] | None = None,
                   sign: bool = True) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        ctype = "application/json" if data is not None else "text/plain"
        host = f"{self.client.host}:{self.client.port}"
        hdrs = {"Content-Type": ctype, "X-BackendAI-Version": API_VERSION, "Host": host}
        if sign:
            ak, sk = keys or (self.access_key, self.secret_key)
            signed = sign_request(ak, sk, method, path, host, ctype)
            hdrs.update({"Date": signed.date, "Authorization": signed.authorization})
        hdrs.update(headers or {})
        resp = await self.client.request(method, path, data=data, headers=hdrs)
        self.last_headers = resp.headers
        payload = await resp.read()
        try:
            return resp.status, json.loads(payload) if payload else None
        except ValueError:
            return resp.status, payload.decode(errors="replace")

    async def rows(self, table: sa.Table) -> int:
        async with self.db.connect() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)

    async def add_keypair(self, policy: dict[str, Any], rate_limit: int | None = None) -> tuple[str, str]:
        """A user with its own keypair under a resource policy made for the test."""
        import uuid

        name = f"pol-{secrets.token_hex(4)}"
        ak, sk = fixtures.generate_keypair()
        user = uuid.uuid4()
        async with self.db.begin() as conn:
            await conn.execute(sa.insert(t.keypair_resource_policies).values(name=name, **policy))
            await conn.execute(sa.insert(t.users).values(
                uuid=user, email=f"{name}@example.com", username=name, domain_name="default", role="user",
                main_access_key=ak))
            await conn.execute(sa.insert(t.keypairs).values(
                access_key=ak, secret_key=sk, user_id=f"{name}@example.com", user=user, resource_policy=name,
                rate_limit=rate_limit))
            gid = await conn.scalar(sa.select(t.groups.c.id).where(t.groups.c.name == "default"))
            await conn.execute(sa.insert(t.association_groups_users).values(user_id=user, group_id=gid))
        return ak, sk


async def _wait(check: Any, what: str, deadline: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not await check():
        if loop.time() > end:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def node(halfstack: HalfStack, kernel_image: str) -> AsyncIterator[Node]:
    tag = secrets.token_hex(4)
    dbname, namespace, secret = f"node_{tag}", f"node-{tag}", secrets.token_urlsafe(24)
    await halfstack.migrated_database(dbname)
    engine = create_async_engine(halfstack.pg_dsn(dbname))
    async with engine.begin() as conn:
        admin = await fixtures.populate(conn)
    ipc = Path(tempfile.mkdtemp(prefix="bai-n-", dir="/tmp"))
    with dedicated_redis() as redis_addr:
        async with etcd_mod.connect(halfstack.etcd_addr, namespace) as etcd:
            await etcd.put("config/redis/addr", redis_addr)
            await etcd.put("config/agent/rpc-secret", secret)
        agent_id = f"i-node-{tag}"
        agent = AgentServer(AgentConfig.model_validate({
            "etcd": {"namespace": namespace, "addr": halfstack.etcd_addr},
            "agent": {"id": agent_id, "rpc-listen-addr": "127.0.0.1:0", "ipc-base-path": str(ipc),
                      "heartbeat-interval": 1.0},
            "resource": {"reserved-cpu": 0, "reserved-mem": "0"},
        }))
        cfg = ManagerConfig.model_validate({
            "etcd": {"namespace": namespace, "addr": halfstack.etcd_addr},
            "db": {"addr": f"127.0.0.1:{halfstack.pg_port}", "name": dbname, "user": "postgres"},
            "manager": {"id": f"i-mgr-{tag}", "service-addr": "127.0.0.1:0", "heartbeat-timeout": 10},
        })
        client = TestClient(TestServer(build_app(cfg), host="127.0.0.1"))
        await client.start_server()
        await agent.start()
        try:
            async def ready() -> bool:
                async with engine.connect() as conn:
                    alive = await conn.scalar(sa.select(sa.func.count()).select_from(t.agents)
                                              .where(t.agents.c.status == "ALIVE"))
                    images = await conn.scalar(sa.select(sa.func.count()).select_from(t.images))
                return bool(alive) and bool(images)
            await _wait(ready, "agent registered with its images")
            yield Node(client, engine, admin.access_key, admin.secret_key, agent, redis_addr)
        finally:
            await client.close()
            await agent.stop()
            async with aiodocker.Docker() as docker:
                for c in await docker.containers.list(
                        all=True, filters=json.dumps({"label": [f"ai.backend.owner={agent_id}"]})):
                    await c.delete(force=True)
            await engine.dispose()
