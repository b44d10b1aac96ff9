"""HTTP circuits: each is a small aiohttp server on its own port that checks the circuit's cookie
and forwards everything else to the service, websockets included.

Forwarding is bai.common.relay's (streamed both ways with bounded memory, lean kept-alive
connections for GETs and HEADs); the circuit's policy is here: request bodies above
``max-body-size`` are refused (413), websocket messages above ``max-wsmsg-size`` close the socket
(1009). The Host and Origin headers are passed unchanged (JupyterLab compares them), hop-by-hop
headers and the proxy's own cookies are not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from bai.common import relay, upstream_http

from . import tokens
from .circuits import Circuit
from .config import ProxySection
from .errors import Busy, Forbidden, TooLarge, UpstreamTimeout, UpstreamUnreachable, problem_middleware

log = logging.getLogger(__name__)

LOGIN_PATH = "/__bai_appproxy__/login"
#: Verified cookies a circuit remembers (it forgets them all past this), and for how long.
MAX_CACHED_PERMITS = 256
PERMIT_CACHE_SECONDS = 60.0
COOKIE_PREFIX = "bai_appproxy_"

CIRCUIT = web.AppKey("circuit", Circuit)
SETTINGS = web.AppKey("settings", ProxySection)
UPSTREAM = web.AppKey("upstream", aiohttp.ClientSession)
POOL = web.AppKey("pool", upstream_http.UpstreamPool)


def _without_proxy_cookies(cookie_header: str) -> str:
    """The Cookie header minus the proxy's cookies (the app never sees them)."""
    kept = [part for part in cookie_header.split(";")
            if part.strip() and not part.strip().startswith(COOKIE_PREFIX)]
    return ";".join(kept).strip()


def request_headers(request: web.Request) -> CIMultiDict[str]:
    headers = relay.strip_headers(request.headers, relay.HOP_BY_HOP)
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
    circuit.note_traffic()  # the session's activity (idle timeout)
    if circuit.in_flight + len(circuit.active) >= cfg.max_connections_per_circuit:
        raise Busy()
    if relay.is_websocket(request):
        # long-lived: tracked, so that the circuit's end closes it at once
        task = asyncio.current_task()
        assert task is not None
        circuit.track(task)
        return await _forward_websocket(request, _upstream_url(request, circuit), circuit)
    # (a plain request ends with the circuit's listener: its cleanup cancels what is in flight)
    circuit.last_used = time.monotonic()
    circuit.in_flight += 1
    try:
        if relay.may_go_lean(request):
            return await _forward_lean(request)
        return await _forward_http(request, _upstream_url(request, circuit))
    finally:
        circuit.in_flight -= 1


def _upstream_url(request: web.Request, circuit: Circuit) -> URL:
    return URL(f"http://{circuit.kernel_host}:{circuit.kernel_port}{request.raw_path}", encoded=True)


def _refused(status: int) -> web.StreamResponse:
    return web.Response(status=status if status >= 400 else 502, text="websocket refused by the app")


FAILURES = relay.Failures(peer="the app", too_large=TooLarge, unreachable=UpstreamUnreachable,
                          timeout=UpstreamTimeout, refused=_refused)


async def _forward_lean(request: web.Request) -> web.StreamResponse:
    """A GET or HEAD through the circuit's keep-alive pool (see upstream_http)."""
    cfg, pool = request.app[SETTINGS], request.app[POOL]
    head = upstream_http.serialize_head(request.method, request.raw_path, request_headers(request),
                                        f"{pool.host}:{pool.port}")
    return await relay.relay_lean(request, pool, head, cfg.read_timeout, relay.HOP_BY_HOP, FAILURES)


async def _forward_http(request: web.Request, url: URL) -> web.StreamResponse:
    cfg = request.app[SETTINGS]
    return await relay.relay_http(request, request.app[UPSTREAM], url, request_headers(request), cfg.max_body_size,
                                  relay.HOP_BY_HOP, FAILURES)


async def _forward_websocket(request: web.Request, url: URL, circuit: Circuit) -> web.StreamResponse:
    cfg = request.app[SETTINGS]
    return await relay.relay_websocket(request, request.app[UPSTREAM], url.with_scheme("ws"),
                                       request_headers(request), max_msg_size=cfg.max_wsmsg_size,
                                       heartbeat=cfg.ws_heartbeat, send_timeout=cfg.idle_timeout, fail=FAILURES,
                                       on_message=circuit.note_traffic)


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

