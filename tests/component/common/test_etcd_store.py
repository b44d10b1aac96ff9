"""bai.common.etcd against a real etcd (the half-stack's): everything the daemons use — plain
and prefix reads and writes, namespacing, compare-and-put, leases that expire, are kept alive
and are forgotten — and the clear error a refused call gives."""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest

from bai.common import etcd as etcd_mod
from tests.fixtures.halfstack import HalfStack


async def test_reads_writes_and_prefixes_stay_in_their_namespace(halfstack: HalfStack) -> None:
    ns_a, ns_b = f"a{secrets.token_hex(3)}", f"b{secrets.token_hex(3)}"
    async with etcd_mod.connect(halfstack.etcd_addr, ns_a) as a, etcd_mod.connect(halfstack.etcd_addr, ns_b) as b:
        assert await a.get("config/missing") is None
        await a.put_dict("config", {"redis": {"addr": "127.0.0.1:1", "password": "pä ss/wörd"}, "x": 1})
        await b.put("config/redis/addr", "elsewhere")
        assert await a.get("config/redis/password") == "pä ss/wörd"
        assert await a.get_prefix("config") == {
            "redis/addr": "127.0.0.1:1", "redis/password": "pä ss/wörd", "x": "1"}
        assert await b.get_prefix("config") == {"redis/addr": "elsewhere"}
        # a prefix is a prefix of keys, not of path segments, as etcd's: the caller passes the "/"
        await a.put("configuration", "not under config/")
        assert "uration" not in await a.get_prefix("config/")

        assert await a.put_if_absent("lock/x", "first") is True
        assert await a.put_if_absent("lock/x", "second") is False
        assert await a.get("lock/x") == "first"

        await a.delete("x_missing")  # deleting nothing is fine
        await a.delete_prefix("config/redis")
        assert await a.get_prefix("config/") == {"x": "1"}
        assert await b.get("config/redis/addr") == "elsewhere"


async def test_leased_keys_live_while_refreshed_and_vanish_when_revoked_or_expired(halfstack: HalfStack) -> None:
    async with etcd_mod.connect(halfstack.etcd_addr, f"l{secrets.token_hex(3)}") as etcd:
        kept = await etcd.lease(30)
        await etcd.put("nodes/kept", "up", lease=kept)
        assert 0 < await kept.refresh() <= 30
        await kept.revoke()
        assert await etcd.get("nodes/kept") is None
        assert await kept.refresh() == 0  # a forgotten lease: its holder must register again

        short = await etcd.lease(1)
        await etcd.put("nodes/short", "up", lease=short)
        deadline = time.monotonic() + 10
        while await etcd.get("nodes/short") is not None:
            assert time.monotonic() < deadline, "a 1 s lease outlived 10 s"
            await asyncio.sleep(0.2)
        with pytest.raises(etcd_mod.EtcdError, match="lease"):
            await etcd.put("nodes/short", "again", lease=short)  # etcd refuses an expired lease


async def test_an_unreachable_etcd_is_a_clear_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    async with etcd_mod.connect(f"127.0.0.1:{port}", "x", call_deadline=2) as etcd:
        with pytest.raises(etcd_mod.EtcdError, match="unreachable"):
            await etcd.get("config/redis/addr")
