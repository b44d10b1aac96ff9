"""The app proxy on a whole node: the real manager and agent (real Docker, the real kernel image
with its web terminal), start-service through the manager, the browser's way through the proxy,
the manager's tcpproxy tunnel, and circuits closed by the session's real end."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from bai.appproxy.server import ProxyState, running
from bai.common.auth import API_VERSION, sign_request
from bai.manager.server import build_app
from bai.manager.store import tables as t
from tests.component.node.conftest import Node
from tests.fixtures.halfstack import HalfStack
from tests.fixtures.node_parts import node_parts

from .conftest import poll, proxy_config

NO_COORDINATOR = "No coordinator configured for this resource group"


@dataclass
class AppNode:
    node: Node
    proxy: ProxyState

    @property
    def proxy_api(self) -> str:
        return self.proxy.config.app_proxy.api_url

    async def set_coordinator(self, addr: str | None, token: str | None) -> None:
        async with self.node.db.begin() as conn:
            await conn.execute(sa.update(t.scaling_groups).where(t.scaling_groups.c.name == "default")
                               .values(wsproxy_addr=addr, wsproxy_api_token=token))

    def ws_headers(self, path: str, keys: tuple[str, str] | None = None) -> dict[str, str]:
        host = f"{self.node.client.host}:{self.node.client.port}"
        ak, sk = keys or (self.node.access_key, self.node.secret_key)
        signed = sign_request(ak, sk, "GET", path, host, "application/octet-stream")
        return {"Date": signed.date, "Authorization": signed.authorization, "X-BackendAI-Version": API_VERSION,
                "Host": host}


@contextlib.asynccontextmanager
async def app_node_running(halfstack: HalfStack, name: str, manager_opts: dict[str, Any] | None = None,
                           **proxy_opts: Any) -> AsyncIterator[AppNode]:
    """A whole node (manager, agent) with a real app proxy registered as its coordinator and
    following its sessions; ``manager_opts`` for node_parts, ``proxy_opts`` app-proxy.toml keys."""
    async with node_parts(halfstack, name, manager_opts) as parts:
        client = TestClient(TestServer(build_app(parts.manager_config), host="127.0.0.1"))
        await client.start_server()
        await parts.agent.start()
        try:
            await parts.wait_agent_registered()
            node = Node(client, parts.db, parts.access_key, parts.secret_key, parts.agent, parts.redis_addr)
            config = proxy_config(halfstack, parts.manager_config.etcd.namespace, **proxy_opts)
            async with running(config) as proxy:
                async with asyncio.timeout(10):
                    await proxy.watching.wait()
                app_node = AppNode(node, proxy)
                await app_node.set_coordinator(proxy.config.app_proxy.api_url, proxy.config.app_proxy.api_secret)
                yield app_node
        finally:
            await client.close()
            await parts.agent.stop()


@pytest.fixture(scope="module")
async def apps_node(halfstack: HalfStack, kernel_image: str) -> AsyncIterator[AppNode]:
    async with app_node_running(halfstack, "apx", **{"max-body-size": "1g"}) as app_node:
        yield app_node


@pytest.fixture(scope="module")
async def session(apps_node: AppNode) -> dict[str, Any]:
    name = f"apx-{secrets.token_hex(3)}"
    status, body = await apps_node.node.call("POST", "/session", {"name": name, "image": "python"})
    assert status == 201 and body["status"] == "RUNNING", body
    return {"name": name, "id": body["sessionId"]}


async def test_apps_lists_the_web_terminal(apps_node: AppNode, session: dict[str, Any]) -> None:
    status, body = await apps_node.node.call("GET", f"/stream/session/{session['name']}/apps")
    assert status == 200, body
    assert "ttyd" in [a["name"] for a in body]
    status, _ = await apps_node.node.call("GET", "/stream/session/no-such-session/apps")
    assert status == 404


async def test_start_service_without_a_coordinator_is_503(apps_node: AppNode, session: dict[str, Any]) -> None:
    cfg = apps_node.proxy.config.app_proxy
    await apps_node.set_coordinator(None, None)
    try:
        status, body = await apps_node.node.call("POST", f"/session/{session['name']}/start-service",
                                                 {"app": "ttyd"})
        assert status == 503 and body["msg"] == NO_COORDINATOR
    finally:
        await apps_node.set_coordinator(cfg.api_url, cfg.api_secret)


async def test_start_service_refusals(apps_node: AppNode, session: dict[str, Any]) -> None:
    node = apps_node.node
    status, body = await node.call("POST", f"/session/{session['name']}/start-service", {"app": "no-such-app"})
    assert 400 <= status < 500, body
    status, _ = await node.call("POST", f"/session/{session['name']}/start-service", {"app": "ttyd", "port": 1})
    assert status == 400
    status, _ = await node.call("POST", f"/session/{session['name']}/start-service",
                                {"app": "ttyd", "envs": "not json"})
    assert status == 400
    stranger = await node.add_keypair({"total_resource_slots": {}, "max_concurrent_sessions": 1})
    status, _ = await node.call("POST", f"/session/{session['name']}/start-service", {"app": "ttyd"}, keys=stranger)
    assert status == 404  # another user's session is not even seen


async def test_start_service_then_the_browser_through_the_proxy(apps_node: AppNode, session: dict[str, Any]) -> None:
    status, body = await apps_node.node.call("POST", f"/session/{session['name']}/start-service", {"app": "ttyd"})
    assert status == 200, body
    assert body["wsproxy_addr"] == apps_node.proxy_api
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        params = {"token": body["token"], "session_id": session["id"], "app": "ttyd", "protocol": "http"}
        async with browser.get(body["wsproxy_addr"] + "/v2/proxy/auth", params=params) as r:
            assert r.status == 200
            page = await r.text()
        assert "<html" in page.lower()  # the web terminal's page, through the circuit
        # The token is bound to its session: another session id is refused.
        params["session_id"] = str(uuid.uuid4())
        async with browser.get(body["wsproxy_addr"] + "/v2/proxy/auth", params=params) as r:
            assert r.status == 403


async def test_tcpproxy_tunnels_one_connection(apps_node: AppNode, session: dict[str, Any]) -> None:
    path = f"/stream/session/{session['name']}/tcpproxy?app=ttyd"
    async with apps_node.node.client.ws_connect(path, headers=apps_node.ws_headers(path)) as ws:
        await ws.send_bytes(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        got = b""
        async with asyncio.timeout(15):
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    break
                got += msg.data
        assert got.startswith(b"HTTP/1.") and b"200" in got.split(b"\r\n", 1)[0]
    # Not a websocket upgrade, an unknown app, another user: refused before any tunnel.
    status, _ = await apps_node.node.call("GET", path)
    assert status == 400
    stranger = await apps_node.node.add_keypair({"total_resource_slots": {}, "max_concurrent_sessions": 1})
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await apps_node.node.client.ws_connect(path, headers=apps_node.ws_headers(path, stranger))
    assert refused.value.status == 404


def _connections_to(port: int) -> int:
    out = subprocess.run(["ss", "-tnH", "state", "established", f"( dport = :{port} )"], capture_output=True,
                         text=True, check=True).stdout
    return len(out.splitlines())


async def test_a_vanished_tunnel_client_closes_the_apps_connection(apps_node: AppNode,
                                                                  session: dict[str, Any]) -> None:
    ctx_port = await _host_port(apps_node, session)
    before = _connections_to(ctx_port)
    path = f"/stream/session/{session['name']}/tcpproxy?app=ttyd"
    ws = await apps_node.node.client.ws_connect(path, headers=apps_node.ws_headers(path))
    await ws.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n")  # half a request: the app waits for the rest
    await poll(lambda: _connections_to(ctx_port) == before + 1, "the tunnel's connection to the app")
    ws._response.connection.transport.abort()  # type: ignore[union-attr]  # gone without a close frame
    # well before the 20 s heartbeat would notice: the tunnel ends with its client
    await poll(lambda: _connections_to(ctx_port) == before, "the tunnel's connection to be closed", 5)
    await ws.close()


async def _host_port(apps_node: AppNode, session: dict[str, Any]) -> int:
    async with apps_node.node.db.connect() as conn:
        ports = await conn.scalar(sa.select(t.kernels.c.service_ports).where(
            t.kernels.c.session_id == uuid.UUID(session["id"])))
    (ttyd,) = [sp for sp in ports if sp["name"] == "ttyd"]
    return int(ttyd["host_ports"][0])


async def test_the_sessions_end_closes_its_circuits(apps_node: AppNode) -> None:
    node = apps_node.node
    name = f"apx-{secrets.token_hex(3)}"
    status, body = await node.call("POST", "/session", {"name": name, "image": "python"})
    assert status == 201, body
    sid = uuid.UUID(body["sessionId"])
    status, body = await node.call("POST", f"/session/{name}/start-service", {"app": "ttyd"})
    assert status == 200, body
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        params = {"token": body["token"], "session_id": str(sid), "app": "ttyd", "protocol": "http"}
        async with browser.get(body["wsproxy_addr"] + "/v2/proxy/auth", params=params) as r:
            assert r.status == 200
    circuits = apps_node.proxy.circuits
    assert circuits is not None and circuits.of_session(sid)
    assert (await node.call("DELETE", f"/session/{name}"))[0] == 200
    await poll(lambda: not circuits.of_session(sid), "the circuits of the destroyed session to close", 30)
