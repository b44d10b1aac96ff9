"""HTTP circuits: each is a small aiohttp server on its own port that checks the circuit's cookie
and forwards everything else to the service, websockets included.

Forwarding streams both ways in 64 KiB chunks through aiohttp's flow control, so memory per
request stays bounded whatever the body sizes; request bodies above ``max-body-size`` are refused
(413), websocket messages above ``max-wsmsg-size`` close the socket (1009). A browser that goes
away cancels its handler (``handler_cancellation``), which closes the upstream connection at
once. The Host and Origin headers are passed unchanged (JupyterLab compares them), hop-by-hop
headers and the proxy's own cookies are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from . import tokens, upstream_http
from .circuits import Circuit
from .config import ProxySection
from .errors import Busy, Forbidden, TooLarge, UpstreamTimeout, UpstreamUnreachable, problem_middleware

log = logging.getLogger(__name__)

LOGIN_PATH = "/__bai_appproxy__/login"
CHUNK = 64 * 1024
#: Answers up to this size with a Content-Length are relayed in one piece.
SMALL_BODY = 64 * 1024
#: Verified cookies a circuit remembers (it forgets them all past this), and for how long.
MAX_CACHED_PERMITS = 256
PERMIT_CACHE_SECONDS = 60.0
COOKIE_PREFIX = "bai_appproxy_"
#: RFC 9110 §7.6.1, plus the websocket handshake's own headers (aiohttp makes those for each side).
HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection", "TE",
    "Trailer", "Transfer-Encoding", "Upgrade", "Sec-WebSocket-Key", "Sec-WebSocket-Version",
    "Sec-WebSocket-Accept", "Sec-WebSocket-Extensions", "Sec-WebSocket-Protocol"))

CIRCUIT = web.AppKey("circuit", Circuit)
SETTINGS = web.AppKey("settings", ProxySection)
UPSTREAM = web.AppKey("upstream", aiohttp.ClientSession)
POOL = web.AppKey("pool", upstream_http.UpstreamPool)
#: Requests without a body that go through the lean client (upstream_http) on kept-alive connections.
LEAN_METHODS = frozenset(("GET", "HEAD"))


def _strip_hop_by_hop(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    out = CIMultiDict(headers)  # copied and trimmed in C: this runs twice per request
    for name in HOP_BY_HOP:
        out.popall(name, None)
    for value in headers.getall("Connection", ()):
        for token in value.split(","):
            out.popall(token.strip(), None)
    return out


def _without_proxy_cookies(cookie_header: str) -> str:
    """The Cookie header minus the proxy's cookies (the app never sees them)."""
    kept = [part for part in cookie_header.split(";")
            if part.strip() and not part.strip().startswith(COOKIE_PREFIX)]
    return ";".join(kept).strip()


def request_headers(request: web.Request) -> CIMultiDict[str]:
    headers = _strip_hop_by_hop(request.headers)
    if "Cookie" in headers:
        cookie = _without_proxy_cookies("; ".join(headers.popall("Cookie")))
        if cookie:
            headers["Cookie"] = cookie
    peer = request.remote or ""
    prior = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Host"] = request.host
    return headers


def _cookie(request: web.Request, name: str) -> str | None:
    # aiohttp's request.cookies parses leniently; read the raw header so one bad cookie of the
    # app's own does not hide ours.
    for header in request.headers.getall("Cookie", []):
        for part in header.split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value
    return None


def check_cookie(request: web.Request, circuit: Circuit, key: str) -> None:
    value = _cookie(request, circuit.cookie_name)
    if value is None:
        raise Forbidden("no permit for this app: open it from the session again")
    now = time.time()
    if circuit.permits.get(value, 0.0) > now:  # verified before and not expired (saves a JWT check a request)
        return
    claims = tokens.verify_circuit(value, key, "cookie")
    if claims.circuit != circuit.id or claims.user != circuit.user_uuid or claims.session != circuit.session_id:
        raise Forbidden("this permit is for another app or user")
    if len(circuit.permits) >= MAX_CACHED_PERMITS:
        circuit.permits.clear()
    circuit.permits[value] = min(claims.exp, now + PERMIT_CACHE_SECONDS)


def _safe_next(path: str | None) -> str:
    """A local path to land on after login (never another site: no scheme, no ``//host``)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    parts = urlsplit(path)
    if parts.scheme or parts.netloc:
        return "/"
    return path


async def login(request: web.Request) -> web.StreamResponse:  # raises the redirect
    """Trade the ticket from /v2/proxy/auth for the circuit's HttpOnly cookie, then go to the app."""
    circuit, cfg = request.app[CIRCUIT], request.app[SETTINGS]
    claims = tokens.verify_circuit(request.query.get("ticket"), cfg.permit_hash_key, "ticket")
    if claims.circuit != circuit.id or claims.user != circuit.user_uuid or claims.session != circuit.session_id:
        raise Forbidden("this ticket is for another app")
    cookie = tokens.mint(tokens.CircuitClaims(typ="cookie", circuit=circuit.id, session=circuit.session_id,
                                              user=circuit.user_uuid), cfg.permit_hash_key, cfg.cookie_ttl)
    resp = web.HTTPFound(_safe_next(request.query.get("next")))
    resp.set_cookie(circuit.cookie_name, cookie, max_age=int(cfg.cookie_ttl), path="/", httponly=True,
                    samesite="Lax")
    resp.headers["Cache-Control"] = "no-store"
    raise resp


async def forward(request: web.Request) -> web.StreamResponse:
    circuit, cfg = request.app[CIRCUIT], request.app[SETTINGS]
    if request.path == LOGIN_PATH:
        return await login(request)
    check_cookie(request, circuit, cfg.permit_hash_key)
    if circuit.in_flight + len(circuit.active) >= cfg.max_connections_per_circuit:
        raise Busy()
    if request.headers.get("Upgrade", "").lower() == "websocket":
        # long-lived: tracked, so that the circuit's end closes it at once
        task = asyncio.current_task()
        assert task is not None
        circuit.track(task)
        return await _forward_websocket(request, _upstream_url(request, circuit))
    # (a plain request ends with the circuit's listener: its cleanup cancels what is in flight)
    circuit.last_used = time.monotonic()
    circuit.in_flight += 1
    try:
        if request.method in LEAN_METHODS and not request.body_exists and "Expect" not in request.headers:
            return await _forward_lean(request)
        return await _forward_http(request, _upstream_url(request, circuit))
    finally:
        circuit.in_flight -= 1


def _upstream_url(request: web.Request, circuit: Circuit) -> URL:
    return URL(f"http://{circuit.kernel_host}:{circuit.kernel_port}{request.raw_path}", encoded=True)


async def _forward_lean(request: web.Request) -> web.StreamResponse:
    """A GET or HEAD through the circuit's keep-alive pool (see upstream_http)."""
    cfg, pool = request.app[SETTINGS], request.app[POOL]
    head = upstream_http.serialize_head(request.method, request.raw_path, request_headers(request),
                                        f"{pool.host}:{pool.port}")
    for attempt in (1, 2):
        try:
            conn = await pool.acquire()
        except TimeoutError:
            raise UpstreamTimeout() from None
        except OSError as exc:
            raise UpstreamUnreachable(f"cannot reach the app: {exc.__class__.__name__}") from None
        try:
            conn.writer.write(head)
            answer = await upstream_http.read_answer(conn, request.method, cfg.read_timeout)
        except (upstream_http.UpstreamBroke, OSError) as exc:
            upstream_http.close_quietly(conn)
            if conn.reused and attempt == 1:
                pool.drop_idle()
                continue  # the service had closed the kept-alive connection: once more on a fresh one
            raise UpstreamUnreachable(f"cannot reach the app: {exc}") from None
        except BaseException:
            upstream_http.close_quietly(conn)
            raise
        break
    try:
        resp = await _relay_answer(request, conn, answer, cfg.read_timeout)
    except BaseException:  # a vanished browser (cancelled), a broken or slow service: not reusable
        upstream_http.close_quietly(conn)
        raise
    if answer.keep_alive:
        pool.release(conn)
    else:
        upstream_http.close_quietly(conn)
    return resp


async def _relay_answer(request: web.Request, conn: upstream_http.Connection, answer: upstream_http.Answer,
                        read_timeout: float) -> web.StreamResponse:
    headers = _strip_hop_by_hop(answer.headers)
    try:
        if answer.framing == "length" and answer.length <= SMALL_BODY:
            whole = await upstream_http.read_exactly(conn, answer.length, read_timeout)
            headers.popall("Content-Length", None)
            return web.Response(status=answer.status, reason=answer.reason, headers=headers, body=whole)
        resp = web.StreamResponse(status=answer.status, reason=answer.reason)
        resp.headers.extend(headers)
        if answer.framing in ("chunked", "eof"):
            resp.headers.pop("Content-Length", None)
        await resp.prepare(request)
        async for chunk in upstream_http.body_chunks(conn, answer, read_timeout):
            await resp.write(chunk)
        await resp.write_eof()
        return resp
    except TimeoutError:
        raise UpstreamTimeout() from None
    except upstream_http.UpstreamBroke as exc:
        raise UpstreamUnreachable(f"the app broke its answer off: {exc}") from None


class _BoundedBody:
    """The request body as it streams in, refused once it passes ``limit`` bytes."""

    def __init__(self, request: web.Request, limit: int) -> None:
        self.request, self.limit, self.exceeded = request, limit, False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self.request.content.iter_chunked(CHUNK):
            seen += len(chunk)
            if seen > self.limit:
                self.exceeded = True
                raise TooLarge(f"the request body exceeds {self.limit} bytes")
            yield chunk


async def _forward_http(request: web.Request, url: URL) -> web.StreamResponse:
    cfg, upstream = request.app[SETTINGS], request.app[UPSTREAM]
    if request.content_length is not None and request.content_length > cfg.max_body_size:
        raise TooLarge(f"the request body exceeds {cfg.max_body_size} bytes")
    body = _BoundedBody(request, cfg.max_body_size) if request.body_exists else None
    try:
        async with upstream.request(request.method, url, headers=request_headers(request),
                                    data=body.__aiter__() if body else None,
                                    allow_redirects=False) as up:
            headers = _strip_hop_by_hop(up.headers)
            chunked = up.headers.get("Transfer-Encoding", "").lower() == "chunked"
            if (not chunked and up.content_length is not None and up.content_length <= SMALL_BODY
                    and request.method != "HEAD" and up.status not in (204, 304)):
                # A small answer in one piece: one write instead of a prepare and a write per chunk.
                whole = await up.read()
                headers.popall("Content-Length", None)
                return web.Response(status=up.status, reason=up.reason, headers=headers, body=whole)
            resp = web.StreamResponse(status=up.status, reason=up.reason)
            resp.headers.extend(headers)
            if chunked:
                resp.headers.pop("Content-Length", None)
            await resp.prepare(request)
            async for chunk in up.content.iter_chunked(CHUNK):
                await resp.write(chunk)
            await resp.write_eof()
            return resp
    except TooLarge:
        raise
    except TimeoutError:
        raise UpstreamTimeout() from None
    except aiohttp.ClientError as exc:
        if body is not None and body.exceeded:
            raise TooLarge(f"the request body exceeds {cfg.max_body_size} bytes") from None
        raise UpstreamUnreachable(f"cannot reach the app: {exc.__class__.__name__}") from None


async def _forward_websocket(request: web.Request, url: URL) -> web.StreamResponse:
    cfg, upstream = request.app[SETTINGS], request.app[UPSTREAM]
    headers = request_headers(request)
    protocols = [p.strip() for v in request.headers.getall("Sec-WebSocket-Protocol", []) for p in v.split(",")
                 if p.strip()]
    try:
        up_ws = await upstream.ws_connect(url.with_scheme("ws"), headers=headers, protocols=protocols,
                                          max_msg_size=cfg.max_wsmsg_size, heartbeat=cfg.ws_heartbeat,
                                          autoclose=True, timeout=aiohttp.ClientWSTimeout(ws_close=5.0))
    except aiohttp.WSServerHandshakeError as exc:
        return web.Response(status=exc.status if exc.status >= 400 else 502, text="websocket refused by the app")
    except TimeoutError:
        raise UpstreamTimeout() from None
    except aiohttp.ClientError as exc:
        raise UpstreamUnreachable(f"cannot reach the app: {exc.__class__.__name__}") from None
    try:
        down_ws = web.WebSocketResponse(protocols=(up_ws.protocol,) if up_ws.protocol else (),
                                        max_msg_size=cfg.max_wsmsg_size, heartbeat=cfg.ws_heartbeat,
                                        writer_limit=CHUNK)
        await down_ws.prepare(request)
        await _splice(down_ws, up_ws, cfg.idle_timeout)
        return down_ws
    finally:
        await up_ws.close()


async def _relay(src: Any, dst: Any, send_timeout: float) -> None:
    """Messages from ``src`` to ``dst`` until either closes; a send that waits longer than
    ``send_timeout`` (a reader that stopped) ends the relay."""
    async for msg in src:
        async with asyncio.timeout(send_timeout):
            if msg.type == WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
            elif msg.type == WSMsgType.ERROR:
                break


async def _splice(down: web.WebSocketResponse, up: aiohttp.ClientWebSocketResponse, send_timeout: float) -> None:
    tasks = [asyncio.create_task(_relay(down, up, send_timeout)), asyncio.create_task(_relay(up, down, send_timeout))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await down.close(code=1000 if up.closed else 1001)


class HttpListener:
    """One HTTP circuit's server."""

    def __init__(self, runner: web.AppRunner) -> None:
        self.runner = runner

    async def close(self) -> None:
        await self.runner.cleanup()


def listener_factory(cfg: ProxySection, upstream: aiohttp.ClientSession) -> Any:
    async def start(circuit: Circuit, host: str, port: int) -> HttpListener:
        app = web.Application(middlewares=[problem_middleware], client_max_size=cfg.max_body_size)
        app[CIRCUIT], app[SETTINGS], app[UPSTREAM] = circuit, cfg, upstream
        pool = app[POOL] = upstream_http.UpstreamPool(circuit.kernel_host, circuit.kernel_port, cfg.connect_timeout)

        async def close_pool(_: web.Application) -> None:
            pool.close()

        app.on_cleanup.append(close_pool)
        app.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, handler_cancellation=True,
                               shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, reuse_address=False).start()
        except BaseException:
            await runner.cleanup()
            raise
        return HttpListener(runner)

    return start

