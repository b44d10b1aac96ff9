"""The webserver in front of a real manager: logins (wrong password, throttling, rotation, logout,
expiry), the signed /func/ relay (queries, bodies, SSE flowing live, a vanished client freeing its
manager stream, refused websockets), CSRF and origin rules with nothing changed when refused, and
the UI's files with their security and cache headers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from pathlib import Path

import aiohttp
import sqlalchemy as sa
from yarl import URL

from bai.common.events import BROADCAST_CHANNEL, REDIS_DB_STREAM
from bai.common.redis import open_redis
from bai.manager.api.events import EVENT_HUB
from bai.manager.store import fixtures
from bai.manager.store import tables as t
from bai.webserver.server import running
from bai.webserver.sessions import CACHE_SECONDS, KEY_PREFIX

from .conftest import ADMIN_PASSWORD, USER_PASSWORD, Browser, Web, poll, web_config

PROBS = "https://api.backend.ai/probs/webserver/"


async def _full_name(web: Web) -> str:
    async with web.node.parts.db.connect() as conn:
        return str(await conn.scalar(sa.select(t.users.c.full_name).where(t.users.c.email == web.node.user_email)))


async def _session_keys(web: Web) -> list[bytes]:
    assert web.state.store is not None
    return [k async for k in web.state.store.redis.scan_iter(match=KEY_PREFIX + "*")]


# ------------------------------------------------------------------ login

async def test_wrong_password_is_401_problem_and_sets_no_cookie(web: Web, browser: Browser) -> None:
    status, body, resp = await browser.login(web.node.user_email, "not-the-password")
    assert status == 401 and resp.content_type == "application/problem+json"
    assert body["type"] == PROBS + "auth-failed" and body["authenticated"] is False and body["data"]["details"]
    assert browser.cookie() is None
    for bad in (b"{not json", b"[]", json.dumps({"username": "x"}).encode(),
                json.dumps({"username": "", "password": "p"}).encode(),
                json.dumps({"username": "a" * 300, "password": "p"}).encode()):
        async with browser.http.post(web.url + "/server/login", data=bad, headers=browser.headers()) as r:
            assert r.status == 400 and r.content_type == "application/problem+json"


async def test_login_keeps_the_secret_key_server_side(web: Web, browser: Browser) -> None:
    status, body, resp = await browser.login(web.node.user_email, USER_PASSWORD)
    assert status == 200 and body["authenticated"] is True
    assert body["data"]["role"] == "user" and body["data"]["user_id"] == web.node.user_email
    assert "secret_key" not in json.dumps(body)
    cookie_header = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie_header and "SameSite=Lax" in cookie_header and "Secure" not in cookie_header
    value = browser.cookie()
    assert value and len(value) >= 40
    # Redis holds a hash of the id, never the id itself.
    keys = await _session_keys(web)
    assert keys and not any(value.encode() in k for k in keys)
    # A signed call through /func/, query string included.
    status, got, _ = await browser.call("GET", "/func/auth/test?echo=hello%20there")
    assert (status, got) == (200, {"authorized": "yes", "echo": "hello there"})
    status, got, _ = await browser.call("POST", "/server/login-check")
    assert status == 200 and got["authenticated"] and got["csrf_token"] == browser.csrf
    assert "secret_key" not in json.dumps(got)


async def test_version_probe_works_without_login_and_protected_calls_do_not(web: Web, browser: Browser) -> None:
    status, got, _ = await browser.call("GET", "/func/")
    assert status == 200 and got["version"].startswith("v8.")
    status, got, _ = await browser.call("GET", "/func/auth/test")
    assert status == 401  # the manager's refusal of an unsigned call, passed through


async def test_login_rotates_the_session_id(web: Web, browser: Browser) -> None:
    await browser.login(web.node.user_email, USER_PASSWORD)
    first = browser.cookie()
    await browser.login(web.node.user_email, USER_PASSWORD)
    second = browser.cookie()
    assert first and second and first != second
    async with aiohttp.ClientSession() as other:
        async with other.get(web.url + "/func/auth/test",
                             headers={"Cookie": f"AIOHTTP_SESSION={first}"}) as r:
            assert r.status == 401 and (await r.json(content_type=None))["type"] == PROBS + "login-required"
    assert (await browser.call("GET", "/func/auth/test"))[0] == 200


async def test_logout_ends_the_login_everywhere(web: Web, browser: Browser) -> None:
    await browser.login(web.node.user_email, USER_PASSWORD)
    stolen = browser.cookie()
    before = len(await _session_keys(web))
    status, _, _ = await browser.call("POST", "/server/logout", origin=True, csrf=True)
    assert status == 200 and browser.cookie() is None
    assert len(await _session_keys(web)) == before - 1
    async with aiohttp.ClientSession() as thief:
        async with thief.get(web.url + "/func/auth/test", headers={"Cookie": f"AIOHTTP_SESSION={stolen}"}) as r:
            assert r.status == 401 and r.content_type == "application/problem+json"
            assert "AIOHTTP_SESSION=\"\"" in r.headers.get("Set-Cookie", "")
    status, got, _ = await browser.call("GET", "/server/login-check")
    assert got["authenticated"] is False


async def test_logout_on_one_webserver_ends_the_login_on_another_at_once(web: Web, static_root: Path) -> None:
    """Each process caches logins for CACHE_SECONDS; the ended-logins channel beats that."""
    cfg = web_config(web.node, static_root)
    async with running(cfg) as state:
        other = Web(f"http://127.0.0.1:{cfg.service.port}", state, web.node)
        assert state.store is not None
        await poll(state.store.listening.is_set, "the second webserver to follow ended logins")
        b = web.browser()
        try:
            await b.login(web.node.user_email, USER_PASSWORD)
            cookie = {"Cookie": f"AIOHTTP_SESSION={b.cookie()}"}
            async with aiohttp.ClientSession() as via_other:
                async with via_other.get(other.url + "/func/auth/test", headers=cookie) as r:
                    assert r.status == 200  # now cached there
                assert (await b.call("POST", "/server/logout", origin=True, csrf=True))[0] == 200

                async def refused() -> bool:
                    async with via_other.get(other.url + "/func/auth/test", headers=cookie) as r:
                        return r.status == 401
                await poll(refused, "the other webserver to drop the login", deadline=CACHE_SECONDS / 2)
        finally:
            await b.close()


async def test_failed_logins_are_throttled_per_user_and_per_address(web: Web) -> None:
    victim = web.browser()
    try:
        # 3 failures for one user id (each from another address): the 4th try is refused even with
        # the right password, before the manager is asked.
        for _ in range(3):
            other = web.browser()
            try:
                assert (await other.login(web.node.user_email.upper(), "wrong"))[0] == 401
            finally:
                await other.close()
        status, body, resp = await victim.login(web.node.user_email, USER_PASSWORD)
        assert status == 429 and body["type"] == PROBS + "too-many-requests"
        assert 0 < int(resp.headers["Retry-After"]) <= 1200
        # 5 failures from one address (any user ids): that address is blocked for everyone.
        attacker = web.browser()
        try:
            for i in range(5):
                assert (await attacker.login(f"nobody{i}@example.com", "wrong"))[0] == 401
            status, _, resp = await attacker.login(fixtures.ADMIN_EMAIL, ADMIN_PASSWORD)
            assert status == 429 and "Retry-After" in resp.headers
            # ... and another address is not.
            status, _, _ = await victim.login(fixtures.ADMIN_EMAIL, ADMIN_PASSWORD)
            assert status == 200
        finally:
            await attacker.close()
    finally:
        await victim.close()
        assert web.state.store is not None
        await web.state.store.clear_failures(web.node.user_email)


async def test_a_login_expires_after_max_age(web: Web, static_root: Path) -> None:
    cfg = web_config(web.node, static_root, max_age=1.5, idle_timeout=60)
    async with running(cfg) as state:
        short = Web(f"http://127.0.0.1:{cfg.service.port}", state, web.node)
        b = short.browser()
        try:
            assert (await b.login(fixtures.ADMIN_EMAIL, ADMIN_PASSWORD))[0] == 200
            assert (await b.call("GET", "/func/auth/test"))[0] == 200

            async def expired() -> bool:
                return (await b.call("GET", "/func/auth/test"))[0] == 401
            await poll(expired, "the login to expire", deadline=10)
        finally:
            await b.close()


# ------------------------------------------------------------------ CSRF

async def test_csrf_rules_and_nothing_changes_when_refused(web: Web, browser: Browser) -> None:
    await browser.login(web.node.user_email, USER_PASSWORD)
    before = await _full_name(web)
    body = {"email": web.node.user_email, "full_name": "Changed By Attacker"}
    refusals = [
        {"origin": True},                                                     # a browser without the token
        {"origin": True, "extra": {"X-BackendAI-CSRF-Token": "forged"}},      # a wrong token
        {"csrf": True, "extra": {"Origin": "http://evil.example"}},           # another origin, even with it
        {"csrf": True, "extra": {"Sec-Fetch-Site": "same-site"}},             # an app on another port
        {"csrf": True, "extra": {"Origin": "null"}},
    ]
    for kw in refusals:
        status, got, resp = await browser.call("POST", "/func/auth/update-full-name", body, **kw)  # type: ignore[arg-type]
        assert status == 403 and resp.content_type == "application/problem+json", kw
        assert got["type"] == PROBS + "csrf-refused"
    assert await _full_name(web) == before
    # The UI's way: Origin and the token.
    status, _, _ = await browser.call("POST", "/func/auth/update-full-name",
                                      {"email": web.node.user_email, "full_name": "Via The UI"}, origin=True, csrf=True)
    assert status == 200 and await _full_name(web) == "Via The UI"
    # A client that is no browser (no Origin, no Sec-Fetch-Site): the official CLI's way.
    status, _, _ = await browser.call("POST", "/func/auth/update-full-name",
                                      {"email": web.node.user_email, "full_name": "Via The CLI"})
    assert status == 200 and await _full_name(web) == "Via The CLI"
    # Login from another origin is refused too (login CSRF).
    other = web.browser()
    try:
        status, got, _ = await other.login(web.node.user_email, USER_PASSWORD, extra={"Origin": "http://evil.example"})
        assert status == 403 and other.cookie() is None
    finally:
        await other.close()


async def test_forged_cookie_changes_nothing(web: Web) -> None:
    before = await _full_name(web)
    async with aiohttp.ClientSession() as forger:
        async with forger.post(web.url + "/func/auth/update-full-name",
                               json={"email": web.node.user_email, "full_name": "Forged"},
                               headers={"Cookie": "AIOHTTP_SESSION=" + "A" * 43}) as r:
            assert r.status == 401 and (await r.json(content_type=None))["type"] == PROBS + "login-required"
        async with forger.get(web.url + "/func/auth/test", headers={"Cookie": "AIOHTTP_SESSION=" + "x" * 5000}) as r:
            assert r.status in (400, 401)
    assert await _full_name(web) == before


# ------------------------------------------------------------------ the relay

def _connections_to(port: int) -> int:
    """TCP connections towards ``port`` on this machine in any state (one closed after use stays
    in TIME_WAIT for a minute); only the webserver calls the test's manager."""
    out = subprocess.run(["ss", "-Htan", f"( dport = :{port} )"], capture_output=True, text=True, check=True).stdout
    return len(out.splitlines())


async def test_relayed_calls_share_a_bounded_set_of_kept_alive_connections(web: Web, browser: Browser) -> None:
    """A relayed call opens no connection of its own to the manager: the calls of a burst share
    at most as many kept-alive connections as were in flight at once, and later bursts open none."""
    port = URL(web.node.manager_url).port
    assert port is not None
    before = _connections_to(port)
    await browser.login(web.node.user_email, USER_PASSWORD)

    async def bursts(n: int) -> None:
        for _ in range(n):
            answers = await asyncio.gather(*(browser.call("GET", "/func/auth/test") for _ in range(8)))
            assert [status for status, _, _ in answers] == [200] * 8

    await bursts(5)
    opened = _connections_to(port)
    assert opened - before <= 8 + 1  # (+1: the login's call, through aiohttp's own kept-alive pool)
    await bursts(5)
    assert _connections_to(port) <= opened


async def test_oversized_bodies_are_413_and_never_reach_the_manager(web: Web, browser: Browser) -> None:
    await browser.login(web.node.user_email, USER_PASSWORD)
    before = await _full_name(web)
    big = json.dumps({"email": web.node.user_email, "full_name": "x" * (2**20 + 10)}).encode()
    async with browser.http.post(web.url + "/func/auth/update-full-name", data=big,
                                 headers={**browser.headers(), "Content-Type": "application/json"}) as r:
        assert r.status == 413 and r.content_type == "application/problem+json"

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b"x" * 65536

    async with browser.http.post(web.url + "/func/auth/update-full-name", data=chunks(),
                                 headers={**browser.headers(), "Content-Type": "application/json"}) as r:
        assert r.status == 413
    assert await _full_name(web) == before


async def test_events_flow_live_and_a_vanished_client_frees_the_manager_stream(web: Web, browser: Browser) -> None:
    await browser.login(fixtures.ADMIN_EMAIL, ADMIN_PASSWORD)
    hub = web.node.manager_app[EVENT_HUB]
    serving_before = hub.serving
    redis = open_redis(web.node.parts.redis_addr, REDIS_DB_STREAM, None)
    name = f"sse-{uuid.uuid4().hex[:6]}"
    try:
        resp = await browser.http.get(web.url + "/func/events/session", headers=browser.headers())
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        await poll(lambda: hub.serving == serving_before + 1, "the manager's stream to open")
        await redis.publish(BROADCAST_CHANNEL, json.dumps({"name": "session_enqueued", "source": "test", "args": {
            "sessionName": name, "sessionId": str(uuid.uuid4()), "ownerAccessKey": "AKIAX", "reason": ""}}))
        seen = b""
        async with asyncio.timeout(10):  # arrives while the stream stays open (not at its end)
            while name.encode() not in seen:
                seen += await resp.content.readany()
        assert b"event: session_enqueued" in seen
        resp.close()  # the browser goes away
        await poll(lambda: hub.serving == serving_before, "the manager's stream to end with its client")
    finally:
        await redis.aclose()


async def test_websockets_refused_by_the_manager_or_from_another_origin(web: Web, browser: Browser) -> None:
    await browser.login(web.node.user_email, USER_PASSWORD)
    path = f"/pipe/stream/session/{uuid.uuid4()}/pty"
    try:
        await browser.http.ws_connect(web.url + path, headers=browser.headers())
        raise AssertionError("the manager has no such session")
    except aiohttp.WSServerHandshakeError as exc:
        assert 400 <= exc.status < 500
    try:
        await browser.http.ws_connect(web.url + path, headers=browser.headers(extra={"Origin": "http://evil.example"}))
        raise AssertionError("a foreign origin's websocket must be refused")
    except aiohttp.WSServerHandshakeError as exc:
        assert exc.status == 403


# ------------------------------------------------------------------ the UI's files

async def test_static_files_headers_and_spa_fallback(web: Web, browser: Browser) -> None:
    for path in ("/", "/sessions/abc", "/admin/users"):
        status, body, resp = await browser.call("GET", path)
        assert status == 200 and resp.content_type == "text/html" and b"bai" in body
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "script-src 'self';" in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff" and resp.headers["Referrer-Policy"]
        assert "Server" not in resp.headers
    status, body, resp = await browser.call("GET", "/static/app.js", extra={"Accept-Encoding": "gzip"})
    assert status == 200 and resp.headers["Content-Encoding"] == "gzip" and resp.content_type == "text/javascript"
    assert b"answer = 42" in body  # (aiohttp decompressed it)
    etag = resp.headers["ETag"]
    status, _, resp = await browser.call("GET", "/static/app.js", extra={"If-None-Match": etag})
    assert status == 304 and resp.headers["Cache-Control"] == "no-cache"
    status, _, resp = await browser.call("GET", "/static/assets/logo-abc123.svg")
    assert status == 200 and "immutable" in resp.headers["Cache-Control"]
    for bad in ("/static/.secret", "/static/link.txt", "/static/nope.js", "/server/unknown", "/funcx/../static/x"):
        status, _, resp = await browser.call("GET", bad)
        assert status == 404 and resp.content_type == "application/problem+json", bad
    for raw in ("/static/%2e%2e/outside.txt", "/static/..%2foutside.txt", "/vendor/xterm/..%2f..%2foutside.txt",
                "/static/assets/%2e%2e/%2e%2e/outside.txt"):
        async with browser.http.get(URL(web.url + raw, encoded=True)) as r:
            assert b"outside the UI root" not in await r.read(), raw
    # Headers are on the API's answers too.
    status, _, resp = await browser.call("GET", "/func/")
    assert "Content-Security-Policy" in resp.headers
