"""The lean upstream client (GETs and HEADs without a body) against a raw HTTP/1.x service that
answers with each framing a service may use: kept-alive connections are reused, bodies decoded
from a length, chunks or the connection's end, a connection the service dropped is retried once
on a fresh one, and an answer that is not HTTP is a 502."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from tests.fixtures.halfstack import free_port

from .conftest import Proxy

BODY = b"0123456789" * 300


@dataclass
class RawService:
    port: int
    connections: int = 0


def _answer(path: str, head: bytes = b"") -> tuple[bytes, bool]:
    """The raw answer for ``path``, and whether the service closes the connection after it."""
    if path == "/name":  # the X-Name header's bytes as received, and a header of the app's own in UTF-8
        name = next(line for line in head.split(b"\r\n") if line.lower().startswith(b"x-name:"))[7:].strip()
        return b"HTTP/1.1 200 OK\r\nX-Back: \xc3\xa9t\xc3\xa9\r\nContent-Length: %d\r\n\r\n" % len(name) + name, False
    if path == "/keep":
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Kind: keep\r\n\r\n" % len(BODY) + BODY, False
    if path == "/chunked":
        pieces = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(BODY[i:i + 700]), BODY[i:i + 700])
                          for i in range(0, len(BODY), 700))
        return (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + pieces
                + b"0\r\nX-Trailer: 1\r\n\r\n"), False
    if path == "/eof":
        return b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + BODY, True
    if path == "/dropped":  # kept alive by its headers, closed all the same (a service restarting)
        return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", True
    if path == "/hints":
        return b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", False
    return b"NOT HTTP AT ALL\r\n\r\n", True


class _Protocol(asyncio.Protocol):
    def __init__(self, svc: RawService) -> None:
        self.svc, self.buf = svc, b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.svc.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            method, path, _ = head.decode("latin-1").split(" ", 2)
            answer, close = _answer(path, head)
            if method == "HEAD":  # the head only
                answer = answer.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
            self.transport.write(answer)
            if close:
                self.transport.close()
                return


@pytest.fixture(scope="module")
async def raw_service() -> AsyncIterator[RawService]:
    svc = RawService(port=free_port())
    server = await asyncio.get_running_loop().create_server(lambda: _Protocol(svc), "127.0.0.1", svc.port)
    try:
        yield svc
    finally:
        server.close()


async def test_framings_keep_alive_and_a_dropped_connection(proxy: Proxy, raw_service: RawService) -> None:
    browser = await proxy.browser(uuid.uuid4(), uuid.uuid4(), raw_service.port, landing=502)
    try:
        before = raw_service.connections
        for _ in range(5):
            async with browser.http.get(browser.base + "/keep") as r:
                assert r.status == 200 and r.headers["X-Kind"] == "keep"
                assert await r.read() == BODY
        assert raw_service.connections == before + 1  # one kept-alive connection for all five
        async with browser.http.get(browser.base + "/chunked") as r:
            assert r.status == 200 and "X-Trailer" not in r.headers
            assert await r.read() == BODY
        async with browser.http.get(browser.base + "/eof") as r:
            assert r.status == 200 and await r.read() == BODY
        for _ in range(3):  # each answer's connection is gone by the next request: a fresh one each time
            async with browser.http.get(browser.base + "/dropped") as r:
                assert r.status == 200 and await r.read() == b"ok"
        async with browser.http.get(browser.base + "/hints") as r:
            assert r.status == 204  # the informational answer skipped
        async with browser.http.head(browser.base + "/keep") as r:
            assert r.status == 200 and int(r.headers["Content-Length"]) == len(BODY)
        async with browser.http.get(browser.base + "/garbage") as r:
            assert r.status == 502
            assert (await r.json())["type"].endswith("upstream-unreachable")
        async with browser.http.get(browser.base + "/name", headers={"X-Name": "été"}) as r:
            assert r.status == 200 and await r.read() == "été".encode()  # passed as sent, both ways
            assert r.headers["X-Back"] == "été"
        async with browser.http.get(browser.base + "/keep") as r:  # and the circuit still serves
            assert r.status == 200 and await r.read() == BODY
    finally:
        await browser.close()
