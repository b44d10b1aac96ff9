"""A real manager (its whole app over the throwaway PostgreSQL/etcd and a Redis of its own; no
agent is needed to log in, call the API, stream events or queue sessions) and the webserver
in-process in front of it, with its sessions in that Redis; users with passwords in the database;
and a small browser-like client that keeps cookies and can send Origin / CSRF headers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp import web as aioweb

from bai.manager.server import build_app
from bai.manager.store import fixtures
from bai.manager.store import tables as t
from bai.webserver.config import WebserverConfig
from bai.webserver.server import running
from bai.webserver.state import WebState
from tests.fixtures.halfstack import HalfStack, free_port
from tests.fixtures.node_parts import NodeParts, node_parts

ADMIN_PASSWORD = "admin-Passw0rd-web"
USER_PASSWORD = "user-Passw0rd-web"


async def poll(check: Callable[[], Any | Awaitable[Any]], what: str, deadline: float = 10.0) -> Any:
    """Wait until ``check`` holds (a condition with a deadline, never a bare sleep)."""
    end = time.monotonic() + deadline
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@dataclass
class Node:
    parts: NodeParts
    manager_url: str
    manager_app: aioweb.Application
    user_email: str

    async def session_names(self) -> set[str]:
        async with self.parts.db.connect() as conn:
            return {r.name for r in await conn.execute(sa.select(t.sessions.c.name))}


async def _add_user(parts: NodeParts, email: str, password: str, role: str = "user") -> None:
    ak, sk = fixtures.generate_keypair()
    user_id = uuid.uuid4()
    async with parts.db.begin() as conn:
        await conn.execute(sa.insert(t.users).values(
            uuid=user_id, username=email.split("@")[0], email=email, password=fixtures.hash_password(password),
            full_name="Web User", status="active", domain_name="default", role=role, resource_policy="default",
            main_access_key=ak))
        await conn.execute(sa.insert(t.keypairs).values(
            access_key=ak, secret_key=sk, user_id=email, user=user_id, is_active=True, is_admin=role != "user",
            rate_limit=30000, resource_policy="default"))
        group_id = await conn.scalar(sa.select(t.groups.c.id).where(t.groups.c.name == "default"))
        await conn.execute(sa.insert(t.association_groups_users).values(user_id=user_id, group_id=group_id))


@pytest.fixture(scope="module")
async def node(halfstack: HalfStack) -> AsyncIterator[Node]:
    async with node_parts(halfstack, "web") as parts:
        async with parts.db.begin() as conn:
            await conn.execute(sa.update(t.users).where(t.users.c.email == fixtures.ADMIN_EMAIL)
                               .values(password=fixtures.hash_password(ADMIN_PASSWORD)))
        email = f"web-{uuid.uuid4().hex[:8]}@example.com"
        await _add_user(parts, email, USER_PASSWORD)
        cfg = parts.manager_config
        # The webserver names each client in X-Forwarded-For; the manager trusts it from loopback, so
        # its own login throttling counts per client too (tests use distinct client addresses).
        cfg = cfg.model_copy(update={"auth": cfg.auth.model_copy(update={"trusted_proxies": frozenset({"127.0.0.1"})})})
        app = build_app(cfg)
        runner = aioweb.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = aioweb.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        try:
            yield Node(parts, f"http://{host}:{port}", app, email)
        finally:
            await runner.cleanup()


@pytest.fixture(scope="module")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("webui")
    (root / "index.html").write_text('<!doctype html><html><head><script type="module" src="/static/app.js">'
                                     "</script></head><body>bai</body></html>\n")
    (root / "app.js").write_text("export const answer = 42;\n" + "// padding\n" * 400)
    (root / "assets").mkdir()
    (root / "assets" / "logo-abc123.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    (root / ".secret").write_text("dot files are never served")
    outside = root.parent / "outside.txt"
    outside.write_text("outside the UI root")
    (root / "link.txt").symlink_to(outside)
    return root


def web_config(node: Node, static_root: Path, **session: Any) -> WebserverConfig:
    return WebserverConfig.model_validate({
        "service": {"ip": "127.0.0.1", "port": free_port(), "static_path": str(static_root),
                    "xterm_path": str(static_root), "max_body_size": 2**20,
                    "trusted_proxies": ["127.0.0.1"]},
        "api": {"endpoint": node.manager_url, "domain": "default"},
        "session": {"redis": {"addr": node.parts.redis_addr, "db": 5}, "login_allowed_fail_count": 3,
                    "login_allowed_fail_count_per_addr": 5, **session},
    })


@dataclass
class Web:
    url: str
    state: WebState
    node: Node

    @property
    def origin(self) -> str:
        return self.url

    def browser(self, address: str | None = None) -> Browser:
        return Browser(self, address or f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}")


class Browser:
    """Keeps its cookies (unsafe=True: the server is an IP address) and, when told, sends what a
    browser sends (Origin) and what the UI sends (the CSRF token). Each has its own client address
    (X-Forwarded-For, trusted from loopback), so throttling counts never mix between tests."""

    def __init__(self, web_: Web, address: str) -> None:
        self.web, self.address = web_, address
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf: str | None = None

    async def close(self) -> None:
        await self.http.close()

    def cookie(self) -> str | None:
        for c in self.http.cookie_jar:
            if c.key == self.web.state.config.session.cookie_name:
                return c.value
        return None

    def headers(self, *, origin: bool = False, csrf: bool = False, extra: dict[str, str] | None = None
                ) -> dict[str, str]:
        h = {"X-Forwarded-For": self.address}
        if origin:
            h["Origin"] = self.web.origin
        if csrf and self.csrf:
            h["X-BackendAI-CSRF-Token"] = self.csrf
        h.update(extra or {})
        return h

    async def login(self, username: str, password: str, **kw: Any) -> tuple[int, Any, aiohttp.ClientResponse]:
        async with self.http.post(self.web.url + "/server/login", json={"username": username, "password": password},
                                  headers=self.headers(**kw)) as r:
            body = await r.json(content_type=None)
            if r.status == 200:
                self.csrf = body["csrf_token"]
            return r.status, body, r

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any, aiohttp.ClientResponse]:
        async with self.http.request(method, self.web.url + path, json=body, headers=self.headers(**kw)) as r:
            raw = await r.read()
            try:
                import json
                parsed: Any = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw
            return r.status, parsed, r


@pytest.fixture(scope="module")
async def web(node: Node, static_root: Path) -> AsyncIterator[Web]:
    cfg = web_config(node, static_root)
    async with running(cfg) as state:
        yield Web(f"http://127.0.0.1:{cfg.service.port}", state, node)


@pytest.fixture
async def browser(web: Web) -> AsyncIterator[Browser]:
    b = web.browser()
    try:
        yield b
    finally:
        await b.close()
