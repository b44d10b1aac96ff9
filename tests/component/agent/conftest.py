"""Fixtures for agent component tests: a real agent in-process against throwaway Redis and etcd
(the shared ``halfstack`` fixture), the real Docker engine and the real kernel image.

Each session uses its own etcd namespace and agent IDs, and every container it makes carries
its agent ID as ``ai.backend.owner``; teardown removes whatever such containers remain, so a
failed test cannot leave containers behind (and other users of the engine are never touched).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker
import pytest
import redis.asyncio as aioredis

from bai.agent.config import AgentConfig
from bai.agent.server import AgentServer
from bai.common import etcd as etcd_mod
from bai.common.agent_rpc import AgentClient
from bai.common.events import REDIS_DB_STREAM, STREAM_KEY
from tests.fixtures.halfstack import HalfStack


@dataclass
class AgentEnv:
    halfstack: HalfStack
    namespace: str
    secret: str
    root: Path
    agent_ids: list[str] = field(default_factory=list)

    def config(self, agent_id: str | None = None, **agent_section: Any) -> AgentConfig:
        agent_id = agent_id or f"i-test-{secrets.token_hex(4)}"
        if agent_id not in self.agent_ids:
            self.agent_ids.append(agent_id)
        return AgentConfig.model_validate({
            "etcd": {"namespace": self.namespace, "addr": self.halfstack.etcd_addr},
            "agent": {
                "id": agent_id,
                "rpc-listen-addr": "127.0.0.1:0",
                # Short: unix socket paths (ipc dir + /agent.sock) must stay under 108 bytes.
                "ipc-base-path": str(self.root / "ipc"),
                "heartbeat-interval": 1.0,
                **agent_section,
            },
            "resource": {"reserved-cpu": 0, "reserved-mem": "0"},
            "container": {"runner-start-timeout": 20.0},
            # its own pinned-cores claims: in-process agents share the test process's pid, so a
            # claim left by an earlier test's agent would look alive (see host_cores.py)
            "plugins": {"cpu": {"pinned-cores-dir": str(self.root / "pinned" / agent_id)}},
        })


@pytest.fixture(scope="session")
async def agent_env(halfstack: HalfStack, kernel_image: str) -> AsyncIterator[AgentEnv]:
    env = AgentEnv(halfstack, f"agenttest-{secrets.token_hex(4)}", secrets.token_urlsafe(24),
                   Path(tempfile.mkdtemp(prefix="bai-at-", dir="/tmp")))
    async with etcd_mod.connect(halfstack.etcd_addr, env.namespace) as etcd:
        await etcd.put("config/redis/addr", halfstack.redis_addr)
        await etcd.put("config/agent/rpc-secret", env.secret)
        await etcd.put("config/docker/image/auto_pull", "none")
    try:
        yield env
    finally:
        async with aiodocker.Docker() as docker:
            for agent_id in env.agent_ids:
                leftovers = await docker.containers.list(
                    all=True, filters=json.dumps({"label": [f"ai.backend.owner={agent_id}"]}))
                for c in leftovers:
                    await c.delete(force=True)
        shutil.rmtree(env.root, ignore_errors=True)


@pytest.fixture(scope="session")
async def agent(agent_env: AgentEnv) -> AsyncIterator[AgentServer]:
    server = AgentServer(agent_env.config())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(scope="session")
async def rpc(agent: AgentServer, agent_env: AgentEnv) -> AsyncIterator[AgentClient]:
    client = AgentClient(agent.addr, agent_env.secret, timeout=60.0)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="session")
async def docker() -> AsyncIterator[aiodocker.Docker]:
    async with aiodocker.Docker() as client:
        yield client


class EventLog:
    """Reads the event stream from where the session started; waits for events by content."""

    def __init__(self, redis: aioredis.Redis, start_id: str) -> None:
        self.redis = redis
        self.last_id = start_id
        self.seen: list[dict[str, Any]] = []

    async def _poll(self, block_ms: int) -> None:
        reply = await self.redis.xread({STREAM_KEY: self.last_id}, block=max(block_ms, 1), count=500)
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                raw = {k.decode(): v.decode() for k, v in fields.items()}
                self.seen.append({"name": raw["name"], "source": raw["source"], "args": json.loads(raw["args"])})
                self.last_id = entry_id.decode()

    def find(self, name: str, source: str | None = None, **args: Any) -> list[dict[str, Any]]:
        return [e for e in self.seen if e["name"] == name and (source is None or e["source"] == source)
                and all(e["args"].get(k) == v for k, v in args.items())]

    async def wait(self, name: str, source: str | None = None, within: float = 30.0, **args: Any) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not (found := self.find(name, source, **args)):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no {name} event with {args} within {within} s")
            await self._poll(int(min(remaining, 1.0) * 1000))
        return found[0]


@pytest.fixture(scope="session")
async def events(halfstack: HalfStack) -> AsyncIterator[EventLog]:
    host, _, port = halfstack.redis_addr.rpartition(":")
    redis = aioredis.Redis(host=host, port=int(port), db=REDIS_DB_STREAM)
    # From the start of the stream: agent IDs are unique per session, so tests match on source.
    log = EventLog(redis, "0-0")
    try:
        yield log
    finally:
        await redis.aclose()


def kernel_config(image: str, cpu: str = "0.5", mem: str = str(256 * 2**20), **extra: Any) -> dict[str, Any]:
    return {
        "image": {"canonical": image, "labels": {}},
        "session_type": "interactive", "cluster_role": "main", "cluster_idx": 1, "local_rank": 0,
        "cluster_hostname": "main1",
        "resource_slots": {"cpu": cpu, "mem": mem},
        "resource_opts": {},
        "environ": {"BACKENDAI_SESSION_ID": "s", "GREETING": "hi"},
        "bootstrap_script": None, "startup_command": None,
        "owner": {"access_key": "AKIATEST", "user_uuid": str(uuid.uuid4()), "user_email": "t@example.com"},
        **extra,
    }


@pytest.fixture
def new_ids() -> Iterator[tuple[str, str]]:
    yield str(uuid.uuid4()), str(uuid.uuid4())
