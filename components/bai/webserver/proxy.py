"""``/func/*`` and ``/pipe/*``: calls and websockets relayed to the manager, each signed with the
caller's login keypair (kept server-side; the browser never holds a secret key).

Relaying is bai.common.relay's (both ways streamed with bounded memory: server-sent events flow as
they come, nothing is buffered whole); the webserver's policy is here: request bodies over
``max_body_size`` are refused with 413 before or while they stream, at most
``max_concurrent_requests`` relays at once. Hop-by-hop headers, the browser's cookies and any
Authorization it sent are dropped; ``X-Forwarded-For`` names the client.

A call without a login cookie is relayed unsigned (the manager serves its public calls, like the
version probe ``GET /func/``, and refuses the rest); a cookie that names no live login answers 401.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from datetime import UTC, datetime

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from bai.common import relay as relay_mod
from bai.common import upstream_http
from bai.common.auth import API_VERSION, AUTH_SCHEME, string_to_sign

from .config import WebserverConfig
from .errors import Busy, ManagerTimeout, ManagerUnreachable, TooLarge
from .sessions import Login

log = logging.getLogger(__name__)

#: Hop-by-hop headers and what the browser must not pass to the manager (its cookies, an
#: Authorization of its own, what the signature covers).
DROPPED_REQUEST_HEADERS = relay_mod.HOP_BY_HOP | frozenset(h.lower() for h in (
    "Host", "Cookie", "Authorization", "Date", "X-BackendAI-Date", "X-Sorna-Date", "X-Forwarded-For",
    "X-Forwarded-Host", "X-Forwarded-Proto", "X-BackendAI-CSRF-Token", "Origin", "Referer"))
DROPPED_ANSWER_HEADERS = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Connection", "TE", "Trailer",
    "Transfer-Encoding", "Upgrade", "Set-Cookie", "Server"))


class ManagerLink:
    """The connections towards the manager and what every relayed call shares.

    GETs and HEADs without a body to a plain-HTTP manager (most of what a browser sends) go over
    keep-alive connections of the lean HTTP/1.1 client (``bai.common.upstream_http``:
    aiohttp's client costs about as much per request as the manager's answer); everything else
    (bodies, websockets, TLS) through aiohttp's client.
    """

    def __init__(self, cfg: WebserverConfig, session: aiohttp.ClientSession) -> None:
        self.cfg, self.session = cfg, session
        self.base = URL(cfg.api.endpoint)
        self.host = self.base.raw_authority
        self.slots = asyncio.Semaphore(cfg.service.max_concurrent_requests)
        self.pool: upstream_http.UpstreamPool | None = None
        if self.base.scheme == "http" and self.base.host is not None and not self.base.raw_path.strip("/"):
            self.pool = upstream_http.UpstreamPool(self.base.host, self.base.port or 80, cfg.api.connect_timeout)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def upstream_url(self, upstream_path: str) -> URL:
        return URL(f"{self.base.scheme}://{self.host}{self.base.raw_path.rstrip('/')}{upstream_path}", encoded=True)

    def signed_headers(self, request: web.Request, upstream_path: str, login: Login | None,
                       client: str, *, websocket: bool = False) -> CIMultiDict[str]:
        headers = relay_mod.strip_headers(request.headers, DROPPED_REQUEST_HEADERS)
        version = headers.get("X-BackendAI-Version") or headers.get("X-Sorna-Version")
        if version is None:
            version = headers["X-BackendAI-Version"] = API_VERSION
        headers["X-Forwarded-For"] = client
        headers["X-Forwarded-Proto"] = self.cfg.service.scheme
        if login is None:
            return headers
        if "X-BackendAI-Domain" not in headers:
            headers["X-BackendAI-Domain"] = login.domain
        label = "x-backendai-version" if "X-BackendAI-Version" in headers else "x-sorna-version"
        now = datetime.now(UTC)
        date = now.isoformat()
        # The manager checks the Content-Type it parses (absent: application/octet-stream), as aiohttp
        # parses it on both ends; a websocket handshake carries none.
        ctype = "application/octet-stream" if websocket else request.content_type
        # bai.common.auth.signature's result, with the day's key derived once per login (it was
        # half of this function's cost: three HMACs and a date parse on every relayed call).
        key = login.signing_key(f"{now.year:04d}{now.month:02d}{now.day:02d}", self.host)  # (strftime: 3x slower)
        msg = string_to_sign(request.method, upstream_path, date, self.host, ctype, version, "sha256", label)
        sig = hmac.new(key, msg, "sha256").hexdigest()
        headers["Date"] = date
        headers["Authorization"] = f"{AUTH_SCHEME} signMethod=HMAC-SHA256, credential={login.access_key}:{sig}"
        return headers


def upstream_path(request: web.Request, prefix: str) -> str:
    """``/func/session/x?y=1`` -> ``/session/x?y=1`` (raw, as signed and as the manager sees it)."""
    rest = request.raw_path[len(prefix):]
    return rest if rest.startswith("/") else "/" + rest


def _refused(status: int) -> web.StreamResponse:
    return web.Response(status=status if status >= 400 else 502, content_type="application/problem+json",
                        text='{"type": "https://api.backend.ai/probs/webserver/websocket-refused", '
                             f'"title": "The manager refused the websocket ({status})."}}')


FAILURES = relay_mod.Failures(peer="the manager", too_large=TooLarge, unreachable=ManagerUnreachable,
                              timeout=ManagerTimeout, refused=_refused)


async def relay(request: web.Request, link: ManagerLink, path: str, login: Login | None,
                client: str) -> web.StreamResponse:
    limit = link.cfg.service.max_body_size
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"the request body exceeds {limit} bytes")
    if link.slots.locked():  # calls, streams and websockets in flight, together
        raise Busy()
    async with link.slots:
        try:
            if relay_mod.is_websocket(request) and request.method == "GET":
                return await relay_websocket(request, link, path, login, client)
            if link.pool is not None and relay_mod.may_go_lean(request):
                head = upstream_http.serialize_head(request.method, path,
                                                    link.signed_headers(request, path, login, client), link.host)
                return await relay_mod.relay_lean(request, link.pool, head, link.cfg.api.read_timeout,
                                                  DROPPED_ANSWER_HEADERS, FAILURES)
            return await relay_mod.relay_http(request, link.session, link.upstream_url(path),
                                              link.signed_headers(request, path, login, client), limit,
                                              DROPPED_ANSWER_HEADERS, FAILURES)
        except ManagerUnreachable as exc:
            log.warning("manager unreachable for %s %s: %s", request.method, request.path, exc.msg)
            raise


async def relay_websocket(request: web.Request, link: ManagerLink, path: str, login: Login | None,
                          client: str) -> web.StreamResponse:
    cfg = link.cfg.service
    headers = link.signed_headers(request, path, login, client, websocket=True)
    headers.popall("Content-Type", None)
    url = link.upstream_url(path).with_scheme("wss" if link.base.scheme == "https" else "ws")
    return await relay_mod.relay_websocket(request, link.session, url, headers, max_msg_size=cfg.max_wsmsg_size,
                                           heartbeat=cfg.ws_heartbeat, send_timeout=link.cfg.api.read_timeout,
                                           fail=FAILURES)
