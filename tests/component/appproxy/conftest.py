"""An app proxy served in-process (its session watch on the throwaway Redis, found through the
throwaway etcd, as the installed one finds them), a real aiohttp service to proxy to, and a
small client that plays the manager (/v2/conf) and the browser (/v2/proxy/auth, cookies)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bai.appproxy.config import AppProxyConfig
from bai.appproxy.server import ProxyState, running
from bai.common import etcd as etcd_mod
from bai.common.events import BROADCAST_CHANNEL, REDIS_DB_STREAM
from bai.common.redis import open_redis
from tests.fixtures.halfstack import HalfStack, free_port

TOKEN_HEADER = "X-BackendAI-Token"


async def poll(check: Callable[[], bool | Awaitable[bool]], what: str, deadline: float = 10.0) -> None:
    """Wait until ``check`` holds (a condition with a deadline, never a bare sleep)."""
    end = time.monotonic() + deadline
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@dataclass
class Service:
    """A real aiohttp app standing in for a session's service; it records what it saw."""

    port: int
    seen: list[dict[str, Any]] = field(default_factory=list)
    open_streams: int = 0
    streams_started: int = 0
    open_websockets: int = 0
    received_bytes: int = 0


def _service_app(svc: Service) -> web.Application:
    async def echo(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        svc.received_bytes += len(body)
        svc.seen.append({"path": request.path_qs, "headers": dict(request.headers), "method": request.method})
        return web.json_response({
            "method": request.method, "path": request.raw_path, "host": request.host,
            "cookie": request.headers.get("Cookie"), "connection": request.headers.get("Connection"),
            "x_forwarded_for": request.headers.get("X-Forwarded-For"),
            "size": len(body), "sha256": hashlib.sha256(body).hexdigest(),
        }, headers={"X-Upstream": "yes", "Set-Cookie": "app=1; Path=/"})

    async def drip(request: web.Request) -> web.StreamResponse:
        """Streams forever, slowly: only a client that goes away ends it."""
        resp = web.StreamResponse()
        await resp.prepare(request)
        svc.open_streams += 1
        svc.streams_started += 1
        try:
            while True:
                await resp.write(b"x" * 1024)
                await asyncio.sleep(0.05)
        finally:
            svc.open_streams -= 1

    async def big(request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("size", "0"))
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = size
        await resp.prepare(request)
        chunk = b"\xab" * 65536
        left = size
        while left:
            await resp.write(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
        await resp.write_eof()
        return resp

    async def ws_echo(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("v1.test.bai",), max_msg_size=64 * 2**20)
        await ws.prepare(request)
        svc.open_websockets += 1
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await ws.send_str(f"echo:{msg.data}")
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    await ws.send_bytes(msg.data)
        finally:
            svc.open_websockets -= 1
        return ws

    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_get("/drip", drip)
    app.router.add_get("/big", big)
    app.router.add_get("/ws", ws_echo)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@pytest.fixture(scope="module")
async def service() -> AsyncIterator[Service]:
    svc = Service(port=free_port())
    runner = web.AppRunner(_service_app(svc), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", svc.port).start()
    try:
        yield svc
    finally:
        await runner.cleanup()


@dataclass
class Proxy:
    state: ProxyState
    http: aiohttp.ClientSession
    halfstack: HalfStack

    @property
    def cfg(self) -> Any:
        return self.state.config.app_proxy

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.cfg.bind_api_port}"

    async def conf(self, session_id: uuid.UUID, user: uuid.UUID, port: int, *, host: str = "127.0.0.1",
                   secret: str | None = None) -> tuple[int, Any]:
        body = {"login_session_token": None, "kernel_host": host, "kernel_port": port,
                "session": {"id": str(session_id), "user_uuid": str(user), "group_id": str(uuid.uuid4()),
                            "access_key": "AKTEST", "domain_name": "default"}}
        async with self.http.post(self.api + "/v2/conf", json=body,
                                  headers={TOKEN_HEADER: self.cfg.api_secret if secret is None else secret}) as r:
            return r.status, await r.json(content_type=None)

    async def token(self, session_id: uuid.UUID, user: uuid.UUID, port: int) -> str:
        status, body = await self.conf(session_id, user, port)
        assert status == 200, body
        return str(body["token"])

    async def auth(self, token: str, session_id: uuid.UUID, app: str = "web", protocol: str = "http",
                   **extra: str) -> tuple[int, Any]:
        params = {"token": token, "session_id": str(session_id), "app": app, "protocol": protocol, **extra}
        async with self.http.get(self.api + "/v2/proxy/auth", params=params,
                                 headers={"Accept": "application/json"}) as r:
            return r.status, await r.json(content_type=None)

    async def browser(self, session_id: uuid.UUID, user: uuid.UUID, port: int, landing: int = 200) -> Browser:
        """A browser (its own cookie jar) logged into a circuit to ``port`` for ``user``."""
        token = await self.token(session_id, user, port)
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1, as a browser keeps them
        http = aiohttp.ClientSession(cookie_jar=jar)
        params = {"token": token, "session_id": str(session_id), "app": "web", "protocol": "http"}
        try:
            async with http.get(self.api + "/v2/proxy/auth", params=params, headers={"Accept": "text/html"}) as r:
                assert r.status == landing, await r.text()  # followed: auth -> circuit login -> the app's "/"
                base = f"{r.url.scheme}://{r.url.host}:{r.url.port}"
        except BaseException:
            await http.close()
            raise
        return Browser(http, base, session_id, user)

    async def publish(self, name: str, session_id: uuid.UUID) -> None:
        redis = open_redis(self.halfstack.redis_addr, REDIS_DB_STREAM, None)
        try:
            await redis.publish(BROADCAST_CHANNEL, json.dumps(
                {"name": name, "source": "i-test", "args": {"sessionId": str(session_id), "reason": "user-requested"}}))
        finally:
            await redis.aclose()


@dataclass
class Browser:
    http: aiohttp.ClientSession
    base: str
    session_id: uuid.UUID
    user: uuid.UUID

    def cookie(self) -> tuple[str, str]:
        for c in self.http.cookie_jar:
            if c.key.startswith("bai_appproxy_"):
                return c.key, c.value
        raise AssertionError("no circuit cookie")

    async def close(self) -> None:
        await self.http.close()


def proxy_config(halfstack: HalfStack, namespace: str, **overrides: Any) -> AppProxyConfig:
    base = free_port()
    low = 20000 + (base % 20000)
    return AppProxyConfig.model_validate({
        "etcd": {"addr": halfstack.etcd_addr, "namespace": namespace},
        "app-proxy": {"bind-api-port": free_port(), "bind-proxy-port-range": [low, low + 40],
                      "jwt-encrypt-key": secrets.token_hex(32), "permit-hash-key": secrets.token_hex(32),
                      "api-secret": secrets.token_hex(16), "max-body-size": "4m", "max-wsmsg-size": "1m",
                      "max-connections-per-circuit": 8, **overrides},
    })


@pytest.fixture(scope="module")
async def proxy(halfstack: HalfStack) -> AsyncIterator[Proxy]:
    namespace = f"appproxy{uuid.uuid4().hex[:8]}"
    async with etcd_mod.connect(halfstack.etcd_addr, namespace) as etcd:
        await etcd.put("config/redis/addr", halfstack.redis_addr)
    async with running(proxy_config(halfstack, namespace)) as state, aiohttp.ClientSession() as http:
        async with asyncio.timeout(10):
            await state.watching.wait()
        yield Proxy(state, http, halfstack)
