"""The manager's connections with several ``[db] addr`` hosts: a host that accepts connections
but never answers (its machine half gone) costs only its share of the connect timeout, and the
host that answered is tried first from then on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from bai.manager.config import DBConfig
from bai.manager.store.db import NoWritableDatabase, WritableHostConnector
from tests.fixtures.halfstack import HalfStack


@pytest.fixture
async def silent_host() -> AsyncIterator[int]:
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()


async def test_a_silent_first_host_costs_only_its_share_and_is_skipped_afterwards(
        halfstack: HalfStack, silent_host: int) -> None:
    cfg = DBConfig(addr=f"127.0.0.1:{silent_host},127.0.0.1:{halfstack.pg_port}", name="postgres", user="postgres")
    connect = WritableHostConnector(cfg, timeout=2.0)
    began = time.monotonic()
    conn = await connect()
    try:
        assert 0.9 < time.monotonic() - began < 1.9  # 2 s / 2 hosts on the silent one, then PostgreSQL
        assert await conn.fetchval("select 1") == 1
    finally:
        await conn.close()
    began = time.monotonic()
    conn = await connect()
    await conn.close()
    assert time.monotonic() - began < 0.5  # straight to the host that answered


async def test_no_reachable_host_is_a_transient_error_naming_each(silent_host: int) -> None:
    cfg = DBConfig(addr=f"127.0.0.1:{silent_host},127.0.0.1:1", name="postgres", user="postgres")
    with pytest.raises(NoWritableDatabase, match=rf"127.0.0.1:{silent_host}: no connection in time; 127.0.0.1:1: "):
        await WritableHostConnector(cfg, timeout=1.0)()
