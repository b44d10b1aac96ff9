"""Relaying HTTP requests and websockets to one upstream service: what the app proxy's circuits
(towards a session's app) and the webserver's ``/func/`` and ``/pipe/`` (towards the manager)
share. Each caller keeps its own policy — who may pass, which headers go up (signing, cookies),
size limits, its error types — and hands this module the request, the upstream and those choices.

Three ways through, all bounded:

- ``relay_lean``: a GET or HEAD without a body over a kept-alive connection of the lean HTTP/1.1
  client (``upstream_http``); small answers go back in one piece, the rest streams.
- ``relay_http``: anything else through aiohttp's client; the request body streams up in
  ``CHUNK`` pieces and is refused past ``max_body`` bytes, the answer streams down as it comes
  (server-sent events flow live) within the client's read buffer.
- ``relay_websocket``: both handshakes, then messages pumped both ways until either side closes;
  a send that waits longer than ``send_timeout`` (a reader that stopped) ends the relay.

A client that goes away cancels its handler (the servers run with ``handler_cancellation``),
which closes the upstream connection at once; a lean connection goes back to its pool only after a
whole, well-framed answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from . import upstream_http
from .tasks import stop_tasks

CHUNK = 64 * 1024
#: Answers up to this size with a Content-Length are relayed in one piece.
SMALL_BODY = 64 * 1024
#: RFC 9110 §7.6.1, plus the websocket handshake's own headers (aiohttp makes those for each side).
HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection", "TE",
    "Trailer", "Transfer-Encoding", "Upgrade", "Sec-WebSocket-Key", "Sec-WebSocket-Version",
    "Sec-WebSocket-Accept", "Sec-WebSocket-Extensions", "Sec-WebSocket-Protocol"))
#: Requests that may take the lean client (nothing to send after the head).
LEAN_METHODS = frozenset(("GET", "HEAD"))


@dataclass(frozen=True)
class Failures:
    """How a caller words what went wrong upstream: its own error types (each a problem+json
    answer through its middleware) and the name of what it relays to, for the messages."""

    #: "the app", "the manager".
    peer: str
    too_large: Callable[[str], Exception]
    unreachable: Callable[[str], Exception]
    timeout: Callable[[], Exception]
    #: The answer to a websocket handshake the upstream refused with this status.
    refused: Callable[[int], web.StreamResponse]

    def body_too_large(self, limit: int) -> Exception:
        return self.too_large(f"the request body exceeds {limit} bytes")

    def cannot_reach(self, why: object) -> Exception:
        return self.unreachable(f"cannot reach {self.peer}: {why}")


def strip_headers(headers: CIMultiDictProxy[str] | CIMultiDict[str], dropped: frozenset[str]) -> CIMultiDict[str]:
    """``headers`` without the ``dropped`` names (lower case) and those the Connection header names."""
    out = CIMultiDict(headers)  # copied and trimmed in C: this runs twice per request
    for name in dropped:
        out.popall(name, None)
    for value in headers.getall("Connection", ()):
        for token in value.split(","):
            out.popall(token.strip(), None)
    return out


def may_go_lean(request: web.Request) -> bool:
    return request.method in LEAN_METHODS and not request.body_exists and "Expect" not in request.headers


def is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


# ------------------------------------------------------------------ lean GET/HEAD


async def relay_lean(request: web.Request, pool: upstream_http.UpstreamPool, head: bytes, read_timeout: float,
                     dropped_answer: frozenset[str], fail: Failures) -> web.StreamResponse:
    """Send ``head`` (a GET or HEAD, see ``upstream_http.serialize_head``) on a pooled connection
    and relay the answer; a kept-alive connection the upstream had closed is retried once."""
    for attempt in (1, 2):
        try:
            conn = await pool.acquire()
        except TimeoutError:
            raise fail.timeout() from None
        except OSError as exc:
            raise fail.cannot_reach(exc.__class__.__name__) from None
        try:
            conn.writer.write(head)
            answer = await upstream_http.read_answer(conn, request.method, read_timeout)
        except (upstream_http.UpstreamBroke, OSError) as exc:
            upstream_http.close_quietly(conn)
            if conn.reused and attempt == 1:
                pool.drop_idle()
                continue  # the upstream had closed the kept-alive connection: once more on a fresh one
            raise fail.cannot_reach(exc) from None
        except TimeoutError:
            upstream_http.close_quietly(conn)
            raise fail.timeout() from None
        except BaseException:
            upstream_http.close_quietly(conn)
            raise
        break
    try:
        resp = await _relay_lean_answer(request, conn, answer, read_timeout, dropped_answer, fail)
    except BaseException:  # a vanished client (cancelled), a broken or slow upstream: not reusable
        upstream_http.close_quietly(conn)
        raise
    if answer.keep_alive:
        pool.release(conn)
    else:
        upstream_http.close_quietly(conn)
    return resp


async def _relay_lean_answer(request: web.Request, conn: upstream_http.Connection, answer: upstream_http.Answer,
                             read_timeout: float, dropped: frozenset[str], fail: Failures) -> web.StreamResponse:
    headers = strip_headers(answer.headers, dropped)
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
        raise fail.timeout() from None
    except upstream_http.UpstreamBroke as exc:
        raise fail.unreachable(f"{fail.peer} broke its answer off: {exc}") from None


# ------------------------------------------------------------------ any request, aiohttp's client


class _BodyTooLarge(Exception):
    pass


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
                raise _BodyTooLarge()
            yield chunk


async def relay_http(request: web.Request, session: aiohttp.ClientSession, url: URL, headers: CIMultiDict[str],
                     max_body: int, dropped_answer: frozenset[str], fail: Failures) -> web.StreamResponse:
    if request.content_length is not None and request.content_length > max_body:
        raise fail.body_too_large(max_body)
    body = _BoundedBody(request, max_body) if request.body_exists else None
    try:
        async with session.request(request.method, url, headers=headers, data=body.__aiter__() if body else None,
                                   allow_redirects=False) as up:
            answer_headers = strip_headers(up.headers, dropped_answer)
            chunked = up.headers.get("Transfer-Encoding", "").lower() == "chunked"
            if (not chunked and up.content_length is not None and up.content_length <= SMALL_BODY
                    and request.method != "HEAD" and up.status not in (204, 304)):
                # A small answer in one piece: one write instead of a prepare and a write per chunk.
                whole = await up.read()
                answer_headers.popall("Content-Length", None)
                return web.Response(status=up.status, reason=up.reason, headers=answer_headers, body=whole)
            resp = web.StreamResponse(status=up.status, reason=up.reason)
            resp.headers.extend(answer_headers)
            if chunked:
                resp.headers.pop("Content-Length", None)
            await resp.prepare(request)
            # iter_any: whatever has arrived goes out at once (server-sent events flow live); what
            # is buffered is bounded by the client's read buffer (flow control pauses the socket).
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp
    except _BodyTooLarge:
        raise fail.body_too_large(max_body) from None
    except TimeoutError:
        raise fail.timeout() from None
    except aiohttp.ClientError as exc:
        if body is not None and body.exceeded:  # aiohttp wrapped the refusal while sending
            raise fail.body_too_large(max_body) from None
        raise fail.cannot_reach(exc.__class__.__name__) from None


# ------------------------------------------------------------------ websockets


def offered_protocols(request: web.Request) -> list[str]:
    return [p.strip() for v in request.headers.getall("Sec-WebSocket-Protocol", []) for p in v.split(",")
            if p.strip()]


async def relay_websocket(request: web.Request, session: aiohttp.ClientSession, url: URL,
                          headers: CIMultiDict[str], *, max_msg_size: int, heartbeat: float, send_timeout: float,
                          fail: Failures, on_message: Callable[[], None] | None = None) -> web.StreamResponse:
    """Open the upstream websocket first (its refusal answers the client's handshake), then
    accept the client's with the subprotocol the upstream chose and pump messages both ways
    (``on_message`` is called for each, either way: keep it cheap)."""
    try:
        up_ws = await session.ws_connect(url, headers=headers, protocols=offered_protocols(request),
                                         max_msg_size=max_msg_size, heartbeat=heartbeat, autoclose=True,
                                         timeout=aiohttp.ClientWSTimeout(ws_close=5.0))
    except aiohttp.WSServerHandshakeError as exc:
        return fail.refused(exc.status)
    except TimeoutError:
        raise fail.timeout() from None
    except aiohttp.ClientError as exc:
        raise fail.cannot_reach(exc.__class__.__name__) from None
    try:
        down_ws = web.WebSocketResponse(protocols=(up_ws.protocol,) if up_ws.protocol else (),
                                        max_msg_size=max_msg_size, heartbeat=heartbeat, writer_limit=CHUNK)
        await down_ws.prepare(request)
        await _splice(down_ws, up_ws, send_timeout, on_message)
        return down_ws
    finally:
        await up_ws.close()


async def _pump(src: Any, dst: Any, send_timeout: float, on_message: Callable[[], None] | None) -> None:
    """Messages from ``src`` to ``dst`` until either closes; a send that waits longer than
    ``send_timeout`` (a reader that stopped) ends the pump."""
    async for msg in src:
        if on_message is not None:
            on_message()
        async with asyncio.timeout(send_timeout):
            if msg.type == WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
            elif msg.type == WSMsgType.ERROR:
                break


def _close_code(up: aiohttp.ClientWebSocketResponse) -> int:
    """The code the client's side closes with: the upstream's own when it closed with one a peer
    may send (RFC 6455 §7.4), 1011 for one it may not, 1001 when the relay ended on our side."""
    if not up.closed:
        return 1001
    code = up.close_code or 1000
    return code if 1000 <= code < 5000 and code not in (1005, 1006) else 1011


async def _splice(down: web.WebSocketResponse, up: aiohttp.ClientWebSocketResponse, send_timeout: float,
                  on_message: Callable[[], None] | None = None) -> None:
    """Pump both ways until one direction ends (a close, an error, a stalled reader), then stop
    the other and close the client's side."""
    pumps = (asyncio.create_task(_pump(down, up, send_timeout, on_message)),
             asyncio.create_task(_pump(up, down, send_timeout, on_message)))
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await stop_tasks(pumps, grace=5.0)
        for pump in pumps:  # a pump's own error (a stalled reader, a broken socket) just ends the relay
            if pump.done() and not pump.cancelled():
                pump.exception()
        with contextlib.suppress(Exception):
            await down.close(code=_close_code(up))
