"""``/func/*`` and ``/pipe/*``: calls and websockets relayed to the manager, each signed with the
caller's login keypair (kept server-side; the browser never holds a secret key).

Both ways stream in 64 KiB pieces through aiohttp's flow control (server-sent events flow as they
come, nothing is buffered whole); request bodies over ``max_body_size`` are refused with 413 before
or while they stream. Hop-by-hop headers, the browser's cookies and any Authorization it sent are
dropped; ``X-Forwarded-For`` names the client. The server cancels a handler whose client went
away (``handler_cancellation``), which closes its manager connection at once.

A call without a login cookie is relayed unsigned (the manager serves its public calls, like the
version probe ``GET /func/``, and refuses the rest); a cookie that names no live login answers 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from bai.appproxy import upstream_http
from bai.common.auth import API_VERSION, AUTH_SCHEME, signature

from .config import WebserverConfig
from .errors import Busy, ManagerTimeout, ManagerUnreachable, TooLarge
from .sessions import Login

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
#: Answers up to this size with a Content-Length are relayed in one piece.
SMALL_BODY = 64 * 1024
#: RFC 9110 §7.6.1, the websocket handshake's own headers (aiohttp makes those for each side), and
#: what the browser must not pass to the manager (its cookies, an Authorization of its own).
DROPPED_REQUEST_HEADERS = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection", "TE",
    "Trailer", "Transfer-Encoding", "Upgrade", "Sec-WebSocket-Key", "Sec-WebSocket-Version",
    "Sec-WebSocket-Accept", "Sec-WebSocket-Extensions", "Sec-WebSocket-Protocol", "Host", "Cookie",
    "Authorization", "Date", "X-BackendAI-Date", "X-Sorna-Date", "X-Forwarded-For", "X-Forwarded-Host",
    "X-Forwarded-Proto", "X-BackendAI-CSRF-Token", "Origin", "Referer"))
DROPPED_ANSWER_HEADERS = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Connection", "TE", "Trailer",
    "Transfer-Encoding", "Upgrade", "Set-Cookie", "Server"))


def _strip(headers: CIMultiDictProxy[str] | CIMultiDict[str], dropped: frozenset[str]) -> CIMultiDict[str]:
    out = CIMultiDict(headers)
    for name in dropped:
        out.popall(name, None)
    for value in headers.getall("Connection", ()):
        for token in value.split(","):
            out.popall(token.strip(), None)
    return out


class ManagerLink:
    """The connections towards the manager and what every relayed call shares.

    GETs and HEADs without a body to a plain-HTTP manager (most of what a browser sends) go over
    keep-alive connections of the lean HTTP/1.1 client the app proxy uses (``upstream_http``:
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
        headers = _strip(request.headers, DROPPED_REQUEST_HEADERS)
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
        date = datetime.now(UTC).isoformat()
        # The manager checks the Content-Type it parses (absent: application/octet-stream), as aiohttp
        # parses it on both ends; a websocket handshake carries none.
        ctype = "application/octet-stream" if websocket else request.content_type
        sig = signature(login.secret_key, request.method, upstream_path, date, self.host, ctype, version,
                        "sha256", label)
        headers["Date"] = date
        headers["Authorization"] = f"{AUTH_SCHEME} signMethod=HMAC-SHA256, credential={login.access_key}:{sig}"
        return headers


def upstream_path(request: web.Request, prefix: str) -> str:
    """``/func/session/x?y=1`` -> ``/session/x?y=1`` (raw, as signed and as the manager sees it)."""
    rest = request.raw_path[len(prefix):]
    return rest if rest.startswith("/") else "/" + rest


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


async def relay(request: web.Request, link: ManagerLink, path: str, login: Login | None,
                client: str) -> web.StreamResponse:
    limit = link.cfg.service.max_body_size
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"the request body exceeds {limit} bytes")
    if link.slots.locked():  # calls, streams and websockets in flight, together
        raise Busy()
    async with link.slots:
        if request.headers.get("Upgrade", "").lower() == "websocket" and request.method == "GET":
            return await relay_websocket(request, link, path, login, client)
        if (link.pool is not None and request.method in ("GET", "HEAD") and not request.body_exists
                and "Expect" not in request.headers):
            return await _relay_lean(request, link, link.pool, path, login, client)
        return await _relay_http(request, link, path, login, client)


async def _relay_lean(request: web.Request, link: ManagerLink, pool: upstream_http.UpstreamPool, path: str,
                      login: Login | None, client: str) -> web.StreamResponse:
    read_timeout = link.cfg.api.read_timeout
    head = upstream_http.serialize_head(request.method, path, link.signed_headers(request, path, login, client),
                                        link.host)
    for attempt in (1, 2):
        try:
            conn = await pool.acquire()
        except TimeoutError:
            raise ManagerTimeout() from None
        except OSError as exc:
            raise ManagerUnreachable(f"cannot reach the manager: {exc.__class__.__name__}") from None
        try:
            conn.writer.write(head)
            answer = await upstream_http.read_answer(conn, request.method, read_timeout)
        except (upstream_http.UpstreamBroke, OSError) as exc:
            upstream_http.close_quietly(conn)
            if conn.reused and attempt == 1:
                pool.drop_idle()
                continue  # the manager had closed the kept-alive connection: once more on a fresh one
            raise ManagerUnreachable(f"cannot reach the manager: {exc}") from None
        except TimeoutError:
            upstream_http.close_quietly(conn)
            raise ManagerTimeout() from None
        except BaseException:
            upstream_http.close_quietly(conn)
            raise
        break
    try:
        resp = await _relay_lean_answer(request, conn, answer, read_timeout)
    except BaseException:  # a vanished client (cancelled), a broken or slow manager: not reusable
        upstream_http.close_quietly(conn)
        raise
    if answer.keep_alive:
        pool.release(conn)
    else:
        upstream_http.close_quietly(conn)
    return resp


async def _relay_lean_answer(request: web.Request, conn: upstream_http.Connection, answer: upstream_http.Answer,
                             read_timeout: float) -> web.StreamResponse:
    headers = _strip(answer.headers, DROPPED_ANSWER_HEADERS)
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
            await resp.write(chunk)  # each piece as it comes (server-sent events flow live)
        await resp.write_eof()
        return resp
    except TimeoutError:
        raise ManagerTimeout() from None
    except upstream_http.UpstreamBroke as exc:
        raise ManagerUnreachable(f"the manager broke its answer off: {exc}") from None


async def _relay_http(request: web.Request, link: ManagerLink, path: str, login: Login | None,
                      client: str) -> web.StreamResponse:
    limit = link.cfg.service.max_body_size
    body = _BoundedBody(request, limit) if request.body_exists else None
    headers = link.signed_headers(request, path, login, client)
    try:
        async with link.session.request(request.method, link.upstream_url(path), headers=headers,
                                        data=body.__aiter__() if body else None, allow_redirects=False) as up:
            answer_headers = _strip(up.headers, DROPPED_ANSWER_HEADERS)
            chunked = up.headers.get("Transfer-Encoding", "").lower() == "chunked"
            if (not chunked and up.content_length is not None and up.content_length <= SMALL_BODY
                    and request.method != "HEAD" and up.status not in (204, 304)):
                whole = await up.read()
                answer_headers.popall("Content-Length", None)
                return web.Response(status=up.status, reason=up.reason, headers=answer_headers, body=whole)
            resp = web.StreamResponse(status=up.status, reason=up.reason)
            resp.headers.extend(answer_headers)
            if chunked:
                resp.headers.pop("Content-Length", None)
            await resp.prepare(request)
            # iter_any: whatever has arrived goes out at once (server-sent events flow live).
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp
    except TooLarge:
        raise
    except TimeoutError:
        raise ManagerTimeout() from None
    except aiohttp.ClientError as exc:
        if body is not None and body.exceeded:
            raise TooLarge(f"the request body exceeds {limit} bytes") from None
        log.warning("manager unreachable for %s %s: %r", request.method, request.path, exc)
        raise ManagerUnreachable(f"cannot reach the manager: {exc.__class__.__name__}") from None


async def relay_websocket(request: web.Request, link: ManagerLink, path: str, login: Login | None,
                          client: str) -> web.StreamResponse:
    cfg = link.cfg.service
    headers = link.signed_headers(request, path, login, client, websocket=True)
    headers.popall("Content-Type", None)
    protocols = [p.strip() for v in request.headers.getall("Sec-WebSocket-Protocol", []) for p in v.split(",")
                 if p.strip()]
    try:
        up_ws = await link.session.ws_connect(link.upstream_url(path).with_scheme(
            "wss" if link.base.scheme == "https" else "ws"), headers=headers, protocols=protocols,
            max_msg_size=cfg.max_wsmsg_size, heartbeat=cfg.ws_heartbeat, autoclose=True,
            timeout=aiohttp.ClientWSTimeout(ws_close=5.0))
    except aiohttp.WSServerHandshakeError as exc:
        status = exc.status if exc.status >= 400 else 502
        return web.Response(status=status, content_type="application/problem+json",
                            text='{"type": "https://api.backend.ai/probs/webserver/websocket-refused", '
                                 f'"title": "The manager refused the websocket ({exc.status})."}}')
    except TimeoutError:
        raise ManagerTimeout() from None
    except aiohttp.ClientError as exc:
        raise ManagerUnreachable(f"cannot reach the manager: {exc.__class__.__name__}") from None
    try:
        down_ws = web.WebSocketResponse(protocols=(up_ws.protocol,) if up_ws.protocol else (),
                                        max_msg_size=cfg.max_wsmsg_size, heartbeat=cfg.ws_heartbeat,
                                        writer_limit=CHUNK)
        await down_ws.prepare(request)
        await _splice(down_ws, up_ws, link.cfg.api.read_timeout)
        return down_ws
    finally:
        await up_ws.close()


async def _relay_messages(src: Any, dst: Any, send_timeout: float) -> None:
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
    tasks = [asyncio.create_task(_relay_messages(down, up, send_timeout)),
             asyncio.create_task(_relay_messages(up, down, send_timeout))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            code = up.close_code if up.closed and up.close_code else 1000
            await down.close(code=code if 1000 <= code < 5000 and code not in (1005, 1006) else 1011)
