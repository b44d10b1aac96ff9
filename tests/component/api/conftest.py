"""A whole node (the real manager app and agent over throwaway PostgreSQL/etcd and a Redis of its
own, the real Docker engine and kernel image) served from a thread of its own, so that synchronous
clients such as schemathesis (requests) can talk to it from plain pytest tests, and a
``requests`` auth that signs every request as the SDK does.

The manager runs under ``web.AppRunner`` like ``web.run_app`` in production (no cancellation of
handlers whose client left: streaming handlers must notice by themselves)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import secrets
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiodocker
import pytest
import requests
import sqlalchemy as sa
from aiohttp import web
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

T = TypeVar("T")


class HmacAuth(requests.auth.AuthBase):
    """Signs the request exactly as sent (final path and query, Host, Content-Type)."""

    def __init__(self, access_key: str, secret_key: str) -> None:
        self.access_key, self.secret_key = access_key, secret_key

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        host = urlsplit(r.url).netloc
        ctype = r.headers.get("Content-Type")
        mime = ctype.split(";")[0].strip() if ctype else "application/octet-stream"
        version = r.headers.setdefault("X-BackendAI-Version", API_VERSION)
        signed = sign_request(self.access_key, self.secret_key, r.method or "GET", r.path_url, host, mime,
                              api_version=version)
        r.headers.update({"Host": host, "Date": signed.date, "Authorization": signed.authorization})
        return r


@dataclass
class LiveNode:
    url: str
    access_key: str
    secret_key: str
    app: web.Application
    db: AsyncEngine
    loop: asyncio.AbstractEventLoop

    @property
    def auth(self) -> HmacAuth:
        return HmacAuth(self.access_key, self.secret_key)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the node's loop (e.g. a database query) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def live_sessions(self) -> list[str]:
        async def query() -> list[str]:
            async with self.db.connect() as conn:
                rows = await conn.execute(sa.select(t.sessions.c.name).where(
                    t.sessions.c.status.notin_(["TERMINATED", "CANCELLED"])))
                return [r.name for r in rows]
        return self.run(query())


async def _serve(halfstack: HalfStack, overrides: dict[str, Any], started: concurrent.futures.Future[LiveNode],
                 stop: threading.Event) -> None:
    tag = secrets.token_hex(4)
    dbname, namespace, secret = f"api_{tag}", f"api-{tag}", secrets.token_urlsafe(24)
    await halfstack.migrated_database(dbname)
    engine = create_async_engine(halfstack.pg_dsn(dbname))
    async with engine.begin() as conn:
        admin = await fixtures.populate(conn)
    ipc = Path(tempfile.mkdtemp(prefix="bai-api-", dir="/tmp"))
    agent_id = f"i-api-{tag}"
    with dedicated_redis() as redis_addr:
        async with etcd_mod.connect(halfstack.etcd_addr, namespace) as etcd:
            await etcd.put("config/redis/addr", redis_addr)
            await etcd.put("config/agent/rpc-secret", secret)
        agent = AgentServer(AgentConfig.model_validate({
            "etcd": {"namespace": namespace, "addr": halfstack.etcd_addr},
            "agent": {"id": agent_id, "rpc-listen-addr": "127.0.0.1:0", "ipc-base-path": str(ipc),
                      "heartbeat-interval": 1.0},
            "resource": {"reserved-cpu": 0, "reserved-mem": "0"},
        }))
        cfg = ManagerConfig.model_validate({
            "etcd": {"namespace": namespace, "addr": halfstack.etcd_addr},
            "db": {"addr": f"127.0.0.1:{halfstack.pg_port}", "name": dbname, "user": "postgres"},
            "manager": {"id": f"i-mgr-{tag}", "service-addr": "127.0.0.1:0", "heartbeat-timeout": 10,
                        **overrides},
        })
        app = build_app(cfg)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        await agent.start()
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + 60
            while True:
                async with engine.connect() as conn:
                    alive = await conn.scalar(sa.select(sa.func.count()).select_from(t.agents)
                                              .where(t.agents.c.status == "ALIVE"))
                    images = await conn.scalar(sa.select(sa.func.count()).select_from(t.images))
                if alive and images:
                    break
                if loop.time() > end:
                    raise TimeoutError("the agent did not register with its images")
                await asyncio.sleep(0.05)
            host, port = runner.addresses[0][:2]
            started.set_result(LiveNode(f"http://{host}:{port}", admin.access_key, admin.secret_key, app,
                                        engine, loop))
            await asyncio.to_thread(stop.wait)
        finally:
            await runner.cleanup()
            await agent.stop()
            async with aiodocker.Docker() as docker:
                for c in await docker.containers.list(
                        all=True, filters=json.dumps({"label": [f"ai.backend.owner={agent_id}"]})):
                    await c.delete(force=True)
            await engine.dispose()
            await asyncio.to_thread(halfstack.psql, f"drop database if exists {dbname} with (force)")


@pytest.fixture(scope="module")
def node_overrides() -> dict[str, Any]:
    """``[manager]`` settings of the module's node (a module may override this fixture)."""
    # A blocking create must not hang a fuzzed request: answer TIMEOUT after a few seconds.
    return {"default-create-wait": 10}


@pytest.fixture(scope="module")
def live_node(halfstack: HalfStack, kernel_image: str, node_overrides: dict[str, Any]) -> Iterator[LiveNode]:
    """A node served from its own thread and event loop for the whole test module."""
    started: concurrent.futures.Future[LiveNode] = concurrent.futures.Future()
    stop = threading.Event()

    def main() -> None:
        try:
            asyncio.run(_serve(halfstack, node_overrides, started, stop))
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    thread = threading.Thread(target=main, name="live-node", daemon=True)
    thread.start()
    try:
        yield started.result(timeout=120)
    finally:
        stop.set()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the node did not shut down"
