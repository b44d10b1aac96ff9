"""The protocol version rules (bai.common.protocol) and how the agent client applies them."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bai.common import protocol as proto
from bai.common.agent_rpc import AgentClient, AgentFailure
from tests.fixtures.halfstack import free_port

V = proto.ProtocolVersion


def test_versions_parse_and_compare() -> None:
    assert V.parse("1.1") == V(1, 1) and str(V(1, 10)) == "1.10" and V(1, 10) > V(1, 9)
    for bad in ("1", "1.1.1", "a.b", "", " 1.-1", "99999.1"):
        with pytest.raises(ValueError):
            V.parse(bad)
    assert proto.peer_version(None) == proto.peer_version("") == proto.UNVERSIONED == V(1, 0)
    assert proto.peer_version("x") is None


def test_one_minor_of_skew_either_way_and_never_across_majors() -> None:
    ours = V(1, 5)
    for theirs in (V(1, 4), V(1, 5), V(1, 6)):
        assert proto.incompatibility(ours, theirs) is None
    assert "2 minor versions older" in (proto.incompatibility(ours, V(1, 3)) or "")
    assert "2 minor versions newer" in (proto.incompatibility(ours, V(1, 7)) or "")
    assert "another major version" in (proto.incompatibility(ours, V(2, 5)) or "")
    assert proto.incompatibility(ours, None) == "unreadable protocol version"
    # the build's own version accepts the releases before versioning
    assert proto.incompatibility(proto.PROTOCOL_VERSION, proto.UNVERSIONED) is None


def test_methods_and_fields_newer_than_the_peer_are_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    assert proto.supports(V(1, 0), "execute") and proto.supports(V(1, 1), "agent_info")
    assert not proto.supports(V(1, 0), "agent_info")
    monkeypatch.setitem(proto.FIELDS_SINCE, "execute", {"priority": V(1, 2)})
    body = {"kernel_id": "k", "priority": 3}
    assert proto.for_peer("execute", body, V(1, 1)) == {"kernel_id": "k"}
    assert proto.for_peer("execute", body, V(1, 2)) is body
    assert proto.for_peer("ping", {"msg": ""}, V(1, 0)) == {"msg": ""}


def test_the_advertised_version_can_be_overridden() -> None:
    assert proto.advertised({}) == proto.PROTOCOL_VERSION
    assert proto.advertised({proto.ENV_OVERRIDE: "1.0"}) == V(1, 0)
    with pytest.raises(ValueError, match=proto.ENV_OVERRIDE):
        proto.advertised({proto.ENV_OVERRIDE: "one"})


async def test_the_client_sends_its_version_and_leaves_out_fields_the_agent_lacks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str | None, dict[str, object]]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.headers.get(proto.HEADER), await request.json()))
        return web.json_response({"kernels": []}, headers={proto.HEADER: "1.0"})

    monkeypatch.setitem(proto.FIELDS_SINCE, "list_kernels", {"verbose": V(1, 1)})
    app = web.Application()
    app.router.add_post("/rpc/{method}", handler)
    async with TestServer(app, host="127.0.0.1") as server, \
            AgentClient(str(server.make_url("")), "s", protocol=V(1, 1)) as client:
        assert client.peer_protocol is None
        await client.call("list_kernels", {"verbose": True})  # not known yet: sent as is
        assert client.peer_protocol == V(1, 0)
        await client.call("list_kernels", {"verbose": True})
    assert seen == [("1.1", {"verbose": True}), ("1.1", {})]


async def test_execute_waits_for_a_restarting_agent_and_other_calls_do_not() -> None:
    port = free_port()  # nobody listens yet: the agent is restarting
    app = web.Application()

    async def execute(request: web.Request) -> web.Response:
        return web.json_response({"runId": "r", "status": "finished", "console": []})
    app.router.add_post("/rpc/execute", execute)
    async with AgentClient(f"127.0.0.1:{port}", "s", reconnect_window=5.0) as client:
        began = time.monotonic()
        with pytest.raises(AgentFailure, match="cannot reach"):
            await client.ping()
        assert time.monotonic() - began < 1  # control calls fail at once

        async def come_back() -> TestServer:
            await asyncio.sleep(0.6)
            server = TestServer(app, host="127.0.0.1", port=port)
            await server.start_server()
            return server
        coming = asyncio.create_task(come_back())
        began = time.monotonic()
        reply = await client.execute(None, "k", None, "query", "1")
        waited = time.monotonic() - began
        server = await coming
        try:
            assert reply["status"] == "finished" and 0.5 < waited < 3
        finally:
            await server.close()
    async with AgentClient(f"127.0.0.1:{port}", "s", reconnect_window=3.0) as client:
        began = time.monotonic()
        with pytest.raises(AgentFailure, match="cannot reach"):
            await client.execute(None, "k", None, "query", "1")  # gone for good: fails after the window
        assert 2.5 < time.monotonic() - began < 5
