"""Traffic through circuits as session activity: the in-process proxy writes its stamps to the
throwaway Redis the manager's idle checker reads (``ZADD GT``: never older than what is there),
for HTTP requests, websocket messages either way and TCP data, and once more when it stops."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bai.appproxy.server import running
from bai.common import etcd as etcd_mod
from bai.common.events import REDIS_DB_STREAM
from bai.common.redis import open_redis
from bai.common.session_activity import LAST_ACCESS_KEY
from tests.fixtures.halfstack import HalfStack

from .conftest import Proxy, Service, poll, proxy_config

FLUSH = "0.1s"


async def _namespace(halfstack: HalfStack) -> str:
    namespace = f"apxact{uuid.uuid4().hex[:8]}"
    async with etcd_mod.connect(halfstack.etcd_addr, namespace) as etcd:
        await etcd.put("config/redis/addr", halfstack.redis_addr)
    return namespace


@pytest.fixture(scope="module")
async def stamping_proxy(halfstack: HalfStack) -> AsyncIterator[Proxy]:
    config = proxy_config(halfstack, await _namespace(halfstack), **{"activity-flush": FLUSH})
    async with running(config) as state, aiohttp.ClientSession() as http:
        async with asyncio.timeout(10):
            await state.watching.wait()
        yield Proxy(state, http, halfstack)


async def last_access(halfstack: HalfStack, sid: uuid.UUID) -> float | None:
    redis = open_redis(halfstack.redis_addr, REDIS_DB_STREAM, None)
    try:
        score = await redis.zscore(LAST_ACCESS_KEY, str(sid))
        return None if score is None else float(score)
    finally:
        await redis.aclose()


async def stamped_after(halfstack: HalfStack, sid: uuid.UUID, after: float) -> bool:
    score = await last_access(halfstack, sid)
    return score is not None and score > after


async def test_http_requests_and_websocket_messages_are_activity(stamping_proxy: Proxy, service: Service) -> None:
    proxy, hs = stamping_proxy, stamping_proxy.halfstack
    browser = await proxy.browser(uuid.uuid4(), uuid.uuid4(), service.port)
    sid = browser.session_id
    try:
        before = time.time()
        async with browser.http.get(browser.base + "/hello") as r:
            assert r.status == 200
        await poll(lambda: stamped_after(hs, sid, before - 1), "the request's stamp in Redis", 5)
        async with browser.http.ws_connect(browser.base.replace("http", "ws") + "/ws") as ws:
            opened = time.time()
            # Only websocket messages from here: the stamp moves on past the connect (one a second).
            deadline = time.monotonic() + 10
            while not await stamped_after(hs, sid, opened + 0.5):
                assert time.monotonic() < deadline, "websocket messages were not counted"
                await ws.send_str("ping")
                assert (await ws.receive(timeout=5)).data == "echo:ping"
    finally:
        await browser.close()


async def test_tcp_data_is_activity(stamping_proxy: Proxy) -> None:
    proxy, hs = stamping_proxy, stamping_proxy.halfstack

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sid, user = uuid.uuid4(), uuid.uuid4()
    try:
        status, body = await proxy.auth(await proxy.token(sid, user, port), sid, app="sshd", protocol="tcp")
        assert status == 200, body
        host, cport = body["redirect_url"].removeprefix("tcp://").split(":")
        reader, writer = await asyncio.open_connection(host, int(cport))
        try:
            connected = time.time()
            deadline = time.monotonic() + 10
            while not await stamped_after(hs, sid, connected + 0.5):
                assert time.monotonic() < deadline, "TCP data was not counted"
                writer.write(b"keystroke")
                await writer.drain()
                assert await asyncio.wait_for(reader.readexactly(9), 5) == b"keystroke"
        finally:
            writer.close()
    finally:
        server.close()


async def test_a_newer_stamp_from_another_writer_is_kept(stamping_proxy: Proxy, service: Service) -> None:
    proxy, hs = stamping_proxy, stamping_proxy.halfstack
    browser = await proxy.browser(uuid.uuid4(), uuid.uuid4(), service.port)
    sid = browser.session_id
    try:
        await poll(lambda: stamped_after(hs, sid, 0), "the login's stamp", 5)
        later = time.time() + 3600  # as if a manager saw the session later than any traffic here
        redis = open_redis(hs.redis_addr, REDIS_DB_STREAM, None)
        try:
            await redis.zadd(LAST_ACCESS_KEY, {str(sid): later})
        finally:
            await redis.aclose()
        written = proxy.state.activity.written
        deadline = time.monotonic() + 10
        while proxy.state.activity.written == written:  # until traffic after that has been written
            assert time.monotonic() < deadline, "no stamp written"
            async with browser.http.get(browser.base + "/again") as r:
                assert r.status == 200
            await asyncio.sleep(0.05)  # a user's pace
        assert await last_access(hs, sid) == later
    finally:
        await browser.close()


async def test_the_last_stamps_are_written_at_shutdown(halfstack: HalfStack, service: Service) -> None:
    config = proxy_config(halfstack, await _namespace(halfstack), **{"activity-flush": "10m"})
    async with running(config) as state, aiohttp.ClientSession() as http:
        async with asyncio.timeout(10):
            await state.watching.wait()
        browser = await Proxy(state, http, halfstack).browser(uuid.uuid4(), uuid.uuid4(), service.port)
        await browser.close()
        assert len(state.activity) == 1 and await last_access(halfstack, browser.session_id) is None
    assert await last_access(halfstack, browser.session_id) is not None
