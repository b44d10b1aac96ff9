"""A whole node in one process: the real manager app and the real agent, over throwaway
PostgreSQL/etcd (shared ``halfstack``), a Redis of its own, the real Docker engine and the real
kernel image. Tests talk to the manager over HTTP with signed requests, as clients do."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiodocker
import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from bai.agent.server import AgentServer
from bai.common.auth import API_VERSION, sign_request
from bai.manager.server import build_app
from bai.manager.store import fixtures
from bai.manager.store import tables as t
from tests.fixtures.halfstack import HalfStack
from tests.fixtures.node_parts import node_parts


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


@pytest.fixture(scope="module")
async def node(halfstack: HalfStack, kernel_image: str) -> AsyncIterator[Node]:
    async with node_parts(halfstack, "node") as parts:
        client = TestClient(TestServer(build_app(parts.manager_config), host="127.0.0.1"))
        await client.start_server()
        await parts.agent.start()
        try:
            await parts.wait_agent_registered()
            yield Node(client, parts.db, parts.access_key, parts.secret_key, parts.agent, parts.redis_addr)
        finally:
            await client.close()
            await parts.agent.stop()


#: The policy of :func:`owner`'s keypair.
OWNER_POLICY = {"total_resource_slots": {}, "max_concurrent_sessions": 5, "max_containers_per_session": 1}


@pytest.fixture
async def owner(node: Node) -> AsyncIterator[tuple[str, str]]:
    """A user (its keypair) whose customized images are removed after the test, whatever it
    left (found by their owner label): for the save-as-image and forget tests."""
    keys = await node.add_keypair(OWNER_POLICY)
    async with node.db.connect() as conn:
        user = await conn.scalar(sa.select(t.keypairs.c.user).where(t.keypairs.c.access_key == keys[0]))
    try:
        yield keys
    finally:
        async with aiodocker.Docker() as docker:
            label = f"ai.backend.customized-image.owner=user:{user}"
            for image in await docker.images.list(filters={"label": [label]}):
                await docker.images.delete(image["Id"], force=True)
