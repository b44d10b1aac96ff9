"""A lean HTTP/1.1 client towards one service, for the requests a browser sends most: GETs and
HEADs without a body.

aiohttp's client builds a request object, a timer, a tracing context and a response object per
request; on a proxy's hot path that cost about as much as serving the request. This speaks
HTTP/1.1 over keep-alive connections kept per upstream (``UpstreamPool``: one per app proxy
circuit, one per webserver towards its manager; see bai.common.relay) and parses only what a
proxy needs: the status line, the header lines and the body's framing (a length, chunked, or up
to the end). Everything else (bodies, websockets) goes through aiohttp's client as before.

Bounds: an answer's head is read with a 64 KiB limit; bodies are streamed in ``CHUNK`` pieces;
each read waits at most ``read_timeout``. A connection goes back to the pool only after a whole,
well-framed answer; on any error or cancellation it is closed, so the service sees a vanished
browser at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from multidict import CIMultiDict

CHUNK = 64 * 1024
HEAD_LIMIT = 64 * 1024
#: Idle keep-alive connections a pool keeps to its service (more are closed after use).
MAX_IDLE = 64


class UpstreamBroke(Exception):
    """The service closed the connection or answered something that is not HTTP/1.x."""


@dataclass(eq=False)
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    #: Came from the pool: it may have been closed by the service meanwhile (worth one retry).
    reused: bool = False

    def close(self) -> None:
        self.writer.transport.abort()


class UpstreamPool:
    """Keep-alive connections to one ``host:port``."""

    def __init__(self, host: str, port: int, connect_timeout: float) -> None:
        self.host, self.port, self.connect_timeout = host, port, connect_timeout
        self._idle: list[Connection] = []
        self.closed = False

    async def acquire(self) -> Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.writer.transport.is_closing() and not conn.reader.at_eof():
                conn.reused = True
                return conn
            conn.close()
        async with asyncio.timeout(self.connect_timeout):
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=HEAD_LIMIT)
        return Connection(reader, writer)

    def release(self, conn: Connection) -> None:
        if self.closed or len(self._idle) >= MAX_IDLE or conn.writer.transport.is_closing():
            conn.close()
        else:
            self._idle.append(conn)

    def drop_idle(self) -> None:
        """Forget the idle connections (one was found closed by the service: so are the others, likely)."""
        for conn in self._idle:
            conn.close()
        self._idle.clear()

    def close(self) -> None:
        self.closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()


@dataclass(eq=False)
class Answer:
    status: int
    reason: str
    headers: CIMultiDict[str]
    #: ``"length"``, ``"chunked"``, ``"eof"`` (until the service closes) or ``"none"``.
    framing: str
    length: int
    keep_alive: bool


def serialize_head(method: str, target: str, headers: CIMultiDict[str], host: str) -> bytes:
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    if "Host" not in headers:
        lines.append(f"Host: {host}\r\n")
    lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
    lines.append("\r\n")
    # aiohttp's parsers decode header bytes as UTF-8 with surrogateescape: this gives back the bytes received
    return "".join(lines).encode("utf-8", "surrogateescape")


def _parse_head(raw: bytes, method: str) -> Answer:
    lines = raw[:-4].decode("utf-8", "surrogateescape").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise UpstreamBroke(f"not an HTTP/1.x answer: {lines[0][:80]!r}")
    headers: CIMultiDict[str] = CIMultiDict()
    add = headers.add
    for line in lines[1:]:  # (once per answer on the hot path: plain tests, no generator per line)
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or " " in name or "\t" in name:
            raise UpstreamBroke("a malformed header line")
        add(name, value.strip())
    status = int(code)
    tokens = {t.strip().lower() for v in headers.getall("Connection", ()) for t in v.split(",")}
    keep_alive = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
    encodings = [t.strip().lower() for v in headers.getall("Transfer-Encoding", ()) for t in v.split(",")]
    length = -1
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        framing = "none"
    elif encodings:
        if encodings[-1] != "chunked":
            framing, keep_alive = "eof", False
        else:
            framing = "chunked"
    elif "Content-Length" in headers:
        values = {v.strip() for v in headers.getall("Content-Length")}
        text = values.pop()
        if values or not text.isdigit():
            raise UpstreamBroke("an invalid Content-Length")
        framing, length = "length", int(text)
    else:
        framing, keep_alive = "eof", False
    return Answer(status, reason, headers, framing, length, keep_alive)


async def read_answer(conn: Connection, method: str, read_timeout: float) -> Answer:
    """The answer's head (informational 1xx answers skipped)."""
    while True:
        async with asyncio.timeout(read_timeout):
            try:
                raw = await conn.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                raise UpstreamBroke("the service closed the connection") from exc
            except asyncio.LimitOverrunError as exc:
                raise UpstreamBroke("the service's answer head is too large") from exc
        answer = _parse_head(raw, method)
        if answer.status == 101:
            raise UpstreamBroke("the service switched protocols unasked")
        if not 100 <= answer.status < 200:
            return answer


async def read_exactly(conn: Connection, size: int, read_timeout: float) -> bytes:
    async with asyncio.timeout(read_timeout):
        try:
            return await conn.reader.readexactly(size)
        except asyncio.IncompleteReadError as exc:
            raise UpstreamBroke("the service broke its answer off") from exc


async def body_chunks(conn: Connection, answer: Answer, read_timeout: float) -> AsyncIterator[bytes]:
    """The answer's body, decoded from its framing, in pieces of at most ``CHUNK`` bytes."""
    reader = conn.reader
    if answer.framing == "length":
        left = answer.length
        while left:
            async with asyncio.timeout(read_timeout):
                piece = await reader.read(min(CHUNK, left))
            if not piece:
                raise UpstreamBroke("the service broke its answer off")
            left -= len(piece)
            yield piece
    elif answer.framing == "chunked":
        while True:
            async with asyncio.timeout(read_timeout):
                try:
                    line = await reader.readuntil(b"\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                    raise UpstreamBroke("a broken chunked body") from exc
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise UpstreamBroke("a broken chunked body") from None
            if size == 0:
                break
            while size:
                piece = await read_exactly(conn, min(CHUNK, size), read_timeout)
                size -= len(piece)
                yield piece
            if await read_exactly(conn, 2, read_timeout) != b"\r\n":
                raise UpstreamBroke("a broken chunked body")
        while True:  # trailers (dropped: they are hop-by-hop here), up to the empty line
            async with asyncio.timeout(read_timeout):
                try:
                    if await reader.readuntil(b"\r\n") == b"\r\n":
                        break
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                    raise UpstreamBroke("a broken chunked body") from exc
    elif answer.framing == "eof":
        while True:
            async with asyncio.timeout(read_timeout):
                piece = await reader.read(CHUNK)
            if not piece:
                break
            yield piece


def close_quietly(conn: Connection) -> None:
    with contextlib.suppress(Exception):
        conn.close()
