"""The app proxy against a real aiohttp service: who may open a circuit (tokens: expired, another
session, forged; cookies: none, another user's), HTTP and websocket forwarding, the bounds, and
that a client going away or a session ending frees everything upstream."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid

import aiohttp
from yarl import URL

from bai.appproxy import tokens

from .conftest import Proxy, Service, poll


async def test_status_is_anonymous_and_advertises_the_api(proxy: Proxy) -> None:
    async with proxy.http.get(proxy.api + "/status") as r:
        assert r.status == 200
        body = await r.json()
    assert body["advertise_address"] == proxy.api
    assert body["api_version"] == "v2"


async def test_conf_needs_the_shared_secret_and_a_valid_body(proxy: Proxy, service: Service) -> None:
    sid, user = uuid.uuid4(), uuid.uuid4()
    status, body = await proxy.conf(sid, user, service.port, secret="wrong-secret-wrong")
    assert status == 401 and body["type"].endswith("auth-failed")
    status, body = await proxy.conf(sid, user, service.port, secret="")
    assert status == 401
    status, body = await proxy.conf(sid, user, 0)
    assert status == 400 and "kernel_port" in body["msg"]
    status, body = await proxy.conf(sid, user, service.port, host="evil host/")
    assert status == 400
    async with proxy.http.post(proxy.api + "/v2/conf", data=b"{not json",
                               headers={"X-BackendAI-Token": proxy.cfg.api_secret}) as r:
        assert r.status == 400
    status, body = await proxy.conf(sid, user, service.port)
    assert status == 200 and body["token"].count(".") == 2


async def test_tokens_expired_forged_or_for_another_session_are_refused(proxy: Proxy, service: Service) -> None:
    sid, user = uuid.uuid4(), uuid.uuid4()
    claims = tokens.ServiceClaims(session=sid, user=user, access_key="AK", kernel_host="127.0.0.1",
                                  kernel_port=service.port)
    expired = tokens.mint(claims, proxy.cfg.jwt_encrypt_key, -5)
    status, body = await proxy.auth(expired, sid)
    assert status == 403 and "expired" in body["msg"]
    forged = tokens.mint(claims, "x" * 64, 60)  # not the proxy's key
    status, _ = await proxy.auth(forged, sid)
    assert status == 403
    good = await proxy.token(sid, user, service.port)
    status, body = await proxy.auth(good, uuid.uuid4())  # a token for sid used for another session
    assert status == 403 and "another session" in body["msg"]
    status, _ = await proxy.auth(good + "x", sid)
    assert status == 403
    status, _ = await proxy.auth(good, sid, app="../etc")
    assert status == 400
    assert len(proxy.state.circuits or ()) == 0 or all(c.session_id != sid for c in proxy.state.circuits.of_session(sid))


async def test_http_through_a_circuit(proxy: Proxy, service: Service) -> None:
    browser = await proxy.browser(uuid.uuid4(), uuid.uuid4(), service.port)
    try:
        async with browser.http.get(URL(browser.base + "/some/path?q=1&x=%2F", encoded=True),
                                    headers={"Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "1"}) as r:
            assert r.status == 200
            assert r.headers["X-Upstream"] == "yes"
            body = await r.json()
        assert body["path"] == "/some/path?q=1&x=%2F"
        assert body["host"] == browser.base.removeprefix("http://")  # Host passed unchanged
        assert body["x_forwarded_for"] == "127.0.0.1"
        assert "bai_appproxy_" not in (body["cookie"] or "")  # the app never sees the proxy's cookie
        assert "X-Secret-Hop" not in service.seen[-1]["headers"]  # named in Connection: hop-by-hop
        async with browser.http.head(browser.base + "/some/path") as r:  # a length, and no body to wait for
            assert r.status == 200 and int(r.headers["Content-Length"]) > 0
        payload = os.urandom(3 * 2**20)
        async with browser.http.post(browser.base + "/upload", data=payload) as r:
            body = await r.json()
        assert body["size"] == len(payload) and body["sha256"] == hashlib.sha256(payload).hexdigest()
        async with browser.http.get(browser.base + "/big", params={"size": str(20 * 2**20)}) as r:
            got = 0
            async for chunk in r.content.iter_chunked(2**20):
                got += len(chunk)
        assert got == 20 * 2**20
    finally:
        await browser.close()


async def test_no_cookie_or_another_users_cookie_is_403(proxy: Proxy, service: Service) -> None:
    alice = await proxy.browser(uuid.uuid4(), uuid.uuid4(), service.port)
    bob = await proxy.browser(uuid.uuid4(), uuid.uuid4(), service.port)
    try:
        async with proxy.http.get(alice.base + "/") as r:  # no cookie at all
            assert r.status == 403
        name, _ = alice.cookie()
        _, bob_value = bob.cookie()
        async with proxy.http.get(alice.base + "/", headers={"Cookie": f"{name}={bob_value}"}) as r:
            assert r.status == 403  # Bob's permit, under the name of Alice's circuit
            assert "another" in (await r.json())["msg"]
        async with bob.http.get(alice.base + "/") as r:  # Bob's browser on Alice's circuit
            assert r.status == 403
        async with alice.http.get(alice.base + "/mine") as r:
            assert r.status == 200
        # A ticket is not a cookie, and a cookie is not a ticket.
        _, alice_value = alice.cookie()
        async with proxy.http.get(alice.base + "/__bai_appproxy__/login", params={"ticket": alice_value}) as r:
            assert r.status == 403
    finally:
        await alice.close()
        await bob.close()


async def test_login_never_redirects_off_site(proxy: Proxy, service: Service) -> None:
    sid, user = uuid.uuid4(), uuid.uuid4()
    token = await proxy.token(sid, user, service.port)
    status, body = await proxy.auth(token, sid, redirect="//evil.example/x")
    assert status == 200
    async with proxy.http.get(body["redirect_url"], allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == "/"
        assert "HttpOnly" in r.headers["Set-Cookie"]


async def test_circuits_are_reused_per_user_and_service(proxy: Proxy, service: Service) -> None:
    sid, user = uuid.uuid4(), uuid.uuid4()
    first = await proxy.auth(await proxy.token(sid, user, service.port), sid)
    again = await proxy.auth(await proxy.token(sid, user, service.port), sid)
    assert first[1]["reuse"] is False and again[1]["reuse"] is True
    assert first[1]["circuit_id"] == again[1]["circuit_id"]


async def test_websocket_through_a_circuit_and_its_bounds(proxy: Proxy, service: Service) -> None:
    browser = await proxy.browser(uuid.uuid4(), uuid.uuid4(), service.port)
    try:
        async with browser.http.ws_connect(browser.base.replace("http", "ws") + "/ws",
                                           protocols=("v1.test.bai",)) as ws:
            assert ws.protocol == "v1.test.bai"  # the service's choice, passed back
            await ws.send_str("hello")
            assert (await ws.receive(timeout=5)).data == "echo:hello"
            blob = os.urandom(512 * 1024)
            await ws.send_bytes(blob)
            assert (await ws.receive(timeout=5)).data == blob
            await ws.send_bytes(b"x" * (2 * 2**20))  # over max-wsmsg-size (1 MiB)
            msg = await ws.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == 1009
        await poll(lambda: service.open_websockets == 0, "the service's websocket to close")
    finally:
        await browser.close()


async def test_request_bodies_are_bounded(proxy: Proxy, service: Service) -> None:
    browser = await proxy.browser(uuid.uuid4(), uuid.uuid4(), service.port)
    try:
        before = service.received_bytes
        async with browser.http.post(browser.base + "/upload", data=b"x" * (5 * 2**20)) as r:
            assert r.status == 413
            assert (await r.json())["type"].endswith("too-large")

        async def chunks():  # no Content-Length: counted as it streams
            for _ in range(6):
                yield b"y" * 2**20

        try:
            async with browser.http.post(browser.base + "/upload", data=chunks()) as r:
                assert r.status == 413
        except aiohttp.ClientError:
            pass  # or the proxy broke the connection off mid-body
        assert service.received_bytes == before  # the service got no oversized body
    finally:
        await browser.close()


async def test_a_vanished_client_frees_the_upstream_connection(proxy: Proxy, service: Service) -> None:
    browser = await proxy.browser(uuid.uuid4(), uuid.uuid4(), service.port)
    try:
        name, value = browser.cookie()
        host, port = browser.base.removeprefix("http://").split(":")
        started = service.streams_started
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(f"GET /drip HTTP/1.1\r\nHost: {host}:{port}\r\nCookie: {name}={value}\r\n\r\n".encode())
        await writer.drain()
        assert b"200" in await asyncio.wait_for(reader.readline(), 5)
        await poll(lambda: service.streams_started > started and service.open_streams == 1, "the upstream stream")
        writer.transport.abort()  # gone without a word
        await poll(lambda: service.open_streams == 0, "the upstream stream to be closed")

        async with browser.http.ws_connect(browser.base.replace("http", "ws") + "/ws") as ws:
            await ws.send_str("hi")
            await ws.receive(timeout=5)
            await poll(lambda: service.open_websockets == 1, "the upstream websocket")
            ws._response.connection.transport.abort()  # type: ignore[union-attr]
        await poll(lambda: service.open_websockets == 0, "the upstream websocket to be closed")
    finally:
        await browser.close()


async def test_too_many_connections_on_one_circuit_is_503(proxy: Proxy, service: Service) -> None:
    browser = await proxy.browser(uuid.uuid4(), uuid.uuid4(), service.port)
    streams = []
    try:
        for _ in range(proxy.cfg.max_connections_per_circuit):
            resp = await browser.http.get(browser.base + "/drip")
            assert resp.status == 200
            streams.append(resp)
        async with browser.http.get(browser.base + "/other") as r:
            assert r.status == 503
    finally:
        for resp in streams:
            resp.close()
        await browser.close()
    await poll(lambda: service.open_streams == 0, "the streams to end")


async def test_an_unreachable_service_is_502(proxy: Proxy) -> None:
    from tests.fixtures.halfstack import free_port

    browser = await proxy.browser(uuid.uuid4(), uuid.uuid4(), free_port(), landing=502)
    try:
        async with browser.http.get(browser.base + "/") as r:
            assert r.status == 502
            assert (await r.json())["type"].endswith("upstream-unreachable")
    finally:
        await browser.close()


async def test_tcp_circuit_forwards_and_admits_only_its_opener(proxy: Proxy) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        sid, user = uuid.uuid4(), uuid.uuid4()
        status, body = await proxy.auth(await proxy.token(sid, user, port), sid, app="sshd", protocol="tcp")
        assert status == 200 and body["redirect_url"].startswith("tcp://")
        host, cport = body["redirect_url"].removeprefix("tcp://").split(":")
        reader, writer = await asyncio.open_connection(host, int(cport))
        payload = os.urandom(1 * 2**20)
        writer.write(payload)
        await writer.drain()
        got = await asyncio.wait_for(reader.readexactly(len(payload)), 10)
        assert got == payload
        writer.close()
        # Another address is not admitted (127.0.0.2 is loopback too, but not who opened it).
        reader, writer = await asyncio.open_connection(host, int(cport), local_addr=("127.0.0.2", 0))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        server.close()


async def test_a_session_that_ends_closes_its_circuits(proxy: Proxy, service: Service) -> None:
    browser = await proxy.browser(uuid.uuid4(), uuid.uuid4(), service.port)
    other = await proxy.browser(uuid.uuid4(), uuid.uuid4(), service.port)
    try:
        drip = await browser.http.get(browser.base + "/drip")  # a plain request in flight
        assert drip.status == 200
        await poll(lambda: service.open_streams == 1, "the upstream stream")
        async with browser.http.ws_connect(browser.base.replace("http", "ws") + "/ws") as ws:
            await ws.send_str("hi")
            await ws.receive(timeout=5)
            await proxy.publish("session_terminated", browser.session_id)
            msg = await ws.receive(timeout=10)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        assert proxy.state.circuits is not None
        await poll(lambda: not proxy.state.circuits.of_session(browser.session_id), "the circuit to close")
        await poll(lambda: service.open_streams == 0, "the in-flight request's upstream to be closed")
        drip.close()
        try:
            async with browser.http.get(browser.base + "/") as r:
                assert r.status in (403, 404)  # a new circuit may have the port; never this user's app
        except aiohttp.ClientConnectionError:
            pass  # the port is closed
        async with other.http.get(other.base + "/") as r:  # other sessions are untouched
            assert r.status == 200
    finally:
        await browser.close()
        await other.close()


async def test_idle_circuits_are_closed_and_busy_ones_kept(proxy: Proxy, service: Service) -> None:
    circuits = proxy.state.circuits
    assert circuits is not None
    idle = await proxy.browser(uuid.uuid4(), uuid.uuid4(), service.port)
    busy = await proxy.browser(uuid.uuid4(), uuid.uuid4(), service.port)
    try:
        (idle_circuit,) = circuits.of_session(idle.session_id)
        (busy_circuit,) = circuits.of_session(busy.session_id)
        async with busy.http.ws_connect(busy.base.replace("http", "ws") + "/ws") as ws:
            idle_circuit.last_used -= 7200  # as if two hours had passed for both
            busy_circuit.last_used -= 7200
            assert await circuits.close_idle(3600) >= 1
            assert not circuits.of_session(idle.session_id)
            assert circuits.of_session(busy.session_id)  # a websocket is open on it
            await ws.send_str("still here")
            assert (await ws.receive(timeout=5)).data == "echo:still here"
    finally:
        await idle.close()
        await busy.close()
