"""A whole node (the real manager app and agent over throwaway PostgreSQL/etcd and a Redis of its
own, the real Docker engine and kernel image) served from a thread of its own, so that synchronous
clients such as schemathesis (requests) can talk to it from plain pytest tests, and a
``requests`` auth that signs every request as the SDK does.

The manager runs under ``web.AppRunner`` like ``web.run_app`` in production (no cancellation of
handlers whose client left: streaming handlers must notice by themselves)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
import requests
import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from bai.common.auth import API_VERSION, sign_request
from bai.manager.server import build_app
from bai.manager.store import tables as t
from tests.fixtures.halfstack import HalfStack
from tests.fixtures.node_parts import node_parts

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
    async with node_parts(halfstack, "api", overrides) as parts:
        app = build_app(parts.manager_config)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        await parts.agent.start()
        try:
            await parts.wait_agent_registered()
            host, port = runner.addresses[0][:2]
            started.set_result(LiveNode(f"http://{host}:{port}", parts.access_key, parts.secret_key, app,
                                        parts.db, asyncio.get_running_loop()))
            await asyncio.to_thread(stop.wait)
        finally:
            await runner.cleanup()
            await parts.agent.stop()


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
