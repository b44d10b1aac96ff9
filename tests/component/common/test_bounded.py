"""read_bounded against a real HTTP server that sends its answer in pieces, with pauses: the
whole answer comes back (one read() would return only the first piece), and an answer over the
limit comes back as limit + 1 bytes, never more, so the caller can refuse it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from bai.common.bounded import read_bounded
from tests.fixtures.halfstack import free_port

PIECE = b"x" * 50_000
PIECES = 8


@pytest.fixture
async def dribbling_server() -> AsyncIterator[str]:
    async def dribble(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(PIECES):
            await resp.write(PIECE)
            await asyncio.sleep(0.01)  # the peer's pace, not synchronisation: each piece is its own read
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/", dribble)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def test_a_dribbled_answer_is_read_whole(dribbling_server: str) -> None:
    async with aiohttp.ClientSession() as http, http.get(dribbling_server) as resp:
        assert await read_bounded(resp, 10 * len(PIECE) * PIECES) == PIECE * PIECES


async def test_an_answer_over_the_limit_is_cut_at_limit_plus_one(dribbling_server: str) -> None:
    limit = len(PIECE) * 3 + 7
    async with aiohttp.ClientSession() as http, http.get(dribbling_server) as resp:
        got = await read_bounded(resp, limit)
    assert len(got) == limit + 1
