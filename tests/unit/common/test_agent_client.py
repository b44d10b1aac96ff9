"""The manager's agent RPC client: per-method deadlines and the unreachable-agent note."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bai.common.agent_rpc import DEFAULT_METHOD_TIMEOUTS, AgentClient, AgentFailure, AgentTimeout
from tests.fixtures.halfstack import free_port


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "10")))  # an agent that hangs
    return web.json_response({"kernels": []})


async def test_each_method_has_its_own_deadline() -> None:
    app = web.Application()
    app.router.add_post("/rpc/{method}", _slow)
    async with TestServer(app, host="127.0.0.1") as server:
        seen: list[str] = []
        async with AgentClient(str(server.make_url("")), "s", timeouts={"list_kernels": 0.3},
                               on_unreachable=seen.append) as client:
            began = time.monotonic()
            with pytest.raises(AgentTimeout, match="list_kernels .* after 0.3 s"):
                await client.list_kernels()
            assert time.monotonic() - began < 2
            assert seen == [client.base_url]  # a destroy that timed out may not have happened
            assert client.timeout_for("destroy_kernel") == DEFAULT_METHOD_TIMEOUTS["destroy_kernel"]
            assert client.timeout_for("destroy_kernel") > client.timeout_for("ping")


async def test_an_unreachable_agent_is_reported() -> None:
    seen: list[str] = []
    port = free_port()  # nothing listens there
    async with AgentClient(f"127.0.0.1:{port}", "s", on_unreachable=seen.append) as client:
        with pytest.raises(AgentFailure) as info:
            await client.ping()
    assert info.value.status == 503 and seen == [f"http://127.0.0.1:{port}"]
