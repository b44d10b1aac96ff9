"""The etcd store against a real three-member cluster: a daemon's ``[etcd] addr`` lists every
member, and losing one (kill -9, or dead before the daemon started, or silent) costs at most that
member's share of a call's deadline, never the call; an answer etcd gives is not asked again."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import pytest

from bai.common import etcd as etcd_mod
from tests.fixtures.ha_halfstack import EtcdCluster


@pytest.fixture
async def silent_member() -> AsyncIterator[str]:
    """A member that accepts connections and never answers (hung, or its host half gone)."""
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()


async def test_a_silent_first_member_costs_only_its_share_of_the_deadline(
        etcd_cluster: EtcdCluster, silent_member: str) -> None:
    ns = f"silent-{secrets.token_hex(3)}"
    async with etcd_mod.connect(f"{silent_member},{etcd_cluster.addr}", ns, call_deadline=4) as etcd:
        began = time.monotonic()
        await etcd.put("k", "v")  # the silent one gets 4/4 = 1 s, then a live member answers
        assert time.monotonic() - began < 3.5
        began = time.monotonic()
        assert await etcd.get("k") == "v"
        assert time.monotonic() - began < 0.5  # the member that answered is asked first now


async def test_the_store_keeps_working_when_the_member_it_uses_is_killed(etcd_cluster: EtcdCluster) -> None:
    ns = f"kill-{secrets.token_hex(3)}"
    async with etcd_mod.connect(etcd_cluster.addr, ns) as etcd:
        await etcd.put("config/a", "1")
        lease = await etcd.lease(5)
        await etcd.put("nodes/me", "up", lease=lease)
        etcd_cluster.kill(0)  # the member every call went to so far (and perhaps the leader)
        async with asyncio.timeout(20):
            assert await etcd.get("config/a") == "1"
            await etcd.put("config/b", "2")
            assert await etcd.get_prefix("config") == {"a": "1", "b": "2"}
            assert await etcd.put_if_absent("config/c", "3") is True
            assert await etcd.put_if_absent("config/c", "4") is False  # a failed compare: an answer
            assert await lease.refresh() > 0  # the lease lives on the cluster, not on one member
            assert await etcd.get("nodes/me") == "up"
            await etcd.delete_prefix("config")
            assert await etcd.get_prefix("config") == {}


async def test_the_first_listed_member_dead_from_the_start(etcd_cluster: EtcdCluster) -> None:
    etcd_cluster.kill(0)
    ns = f"dead-{secrets.token_hex(3)}"
    async with etcd_mod.connect(etcd_cluster.addr, ns, call_deadline=5) as etcd:
        async with asyncio.timeout(15):
            await etcd.put("k", "v")
            began = time.monotonic()
            for _ in range(10):
                assert await etcd.get("k") == "v"
            assert time.monotonic() - began < 2  # the dead member is not tried before each call


async def test_an_error_etcd_answers_fails_the_call_at_once(etcd_cluster: EtcdCluster) -> None:
    ns = f"err-{secrets.token_hex(3)}"
    async with etcd_mod.connect(etcd_cluster.addr, ns) as etcd:
        lease = await etcd.lease(5)
        await lease.revoke()
        began = time.monotonic()
        with pytest.raises(etcd_mod.EtcdError, match="lease not found"):
            await etcd.put("k", "v", lease=lease)  # every member would refuse it the same way
        assert time.monotonic() - began < 1
        assert await etcd.get("k") is None
