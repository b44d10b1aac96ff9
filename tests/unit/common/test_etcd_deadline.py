"""Every etcd call has a deadline: an etcd that accepts connections but never answers (hung,
SIGSTOPped, half-open link) fails the call instead of holding it forever."""

from __future__ import annotations

import asyncio
import time

import pytest

from bai.common import etcd as etcd_mod


async def test_a_silent_etcd_fails_the_call_within_its_deadline() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with etcd_mod.connect(f"127.0.0.1:{port}", "deadline", call_deadline=1) as etcd:
            began = time.monotonic()
            with pytest.raises(etcd_mod.EtcdError):
                await etcd.get("config/redis/addr")
            waited = time.monotonic() - began
            assert 0.5 < waited < 8  # it waited for the deadline, then gave up
    finally:
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()
