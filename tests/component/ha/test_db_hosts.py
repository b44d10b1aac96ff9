"""The manager's connections with several ``[db] addr`` hosts: a host that accepts connections
but never answers (its machine half gone) costs only its share of the connect timeout, the host
that answered is tried first from then on, and an old primary back after a promotion is fenced."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
import sqlalchemy as sa

from bai.common import etcd as etcd_mod
from bai.manager.config import DBConfig
from bai.manager.services.db_timelines import EtcdTimelineRecord
from bai.manager.store.db import NoWritableDatabase, WritableHostConnector, create_engine, following_timelines
from tests.fixtures.ha_halfstack import running_postgres_pair
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


async def test_put_if_less_keeps_the_larger_value(halfstack: HalfStack) -> None:
    async with etcd_mod.connect(halfstack.etcd_addr, f"dbfence-{secrets.token_hex(4)}") as etcd:
        assert await etcd.put_if_less("k", "0000000002")  # absent: set
        assert not await etcd.put_if_less("k", "0000000001")
        assert not await etcd.put_if_less("k", "0000000002")
        assert await etcd.get("k") == "0000000002"
        assert await etcd.put_if_less("k", "0000000010")
        assert await etcd.get("k") == "0000000010"


async def _served_by(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("select inet_server_port()"))


async def test_an_old_primary_back_after_a_promotion_is_never_written_on(
        halfstack: HalfStack, caplog: pytest.LogCaptureFixture) -> None:
    """The primary dies, its replica is promoted (a new timeline), managers write there; then the
    old primary's host comes back, still a writable primary: no manager writes on it, not even
    one started afterwards that lists it first, and with the new primary down too the answer is
    503 naming the stale host rather than a write that would split the database."""
    async with etcd_mod.connect(halfstack.etcd_addr, f"dbfence-{secrets.token_hex(4)}") as etcd:
        record = EtcdTimelineRecord(etcd)
        with running_postgres_pair() as pair:
            cfg = DBConfig(addr=pair.addr, name="postgres", user="postgres")
            running = WritableHostConnector(cfg, timeout=5.0, timelines=record)
            conn = await running()
            system_id = await conn.fetchval("select system_identifier::text from pg_control_system()")
            assert await _served_by(conn) == pair.primary_port
            await conn.close()
            assert await record.newest(system_id) == 1

            await asyncio.to_thread(pair.stop_primary)
            await asyncio.to_thread(pair.promote_replica)
            conn = await running()  # follows the promotion, and records its timeline
            assert await _served_by(conn) == pair.replica_port
            await conn.close()
            assert await record.newest(system_id) == 2

            await asyncio.to_thread(pair.restart_primary)
            assert pair.psql(pair.primary_port, "select pg_is_in_recovery()") == "f"  # writable again
            started_later = WritableHostConnector(cfg, timeout=5.0, timelines=record)
            with caplog.at_level(logging.ERROR, "bai.manager.store.db"):
                conn = await started_later()  # the stale one is listed first
            assert await _served_by(conn) == pair.replica_port
            await conn.close()
            assert f"127.0.0.1:{pair.primary_port} is a stale primary" in caplog.text

            await asyncio.to_thread(pair.stop_replica)
            for connect in (running, started_later):
                with pytest.raises(NoWritableDatabase, match=(
                        rf"127.0.0.1:{pair.primary_port}: a stale primary \(timeline 1, while the database "
                        r"was written on timeline 2\)")):
                    await connect()


async def test_pooled_connections_to_a_primary_that_kept_running_are_given_up(halfstack: HalfStack) -> None:
    """A partition: the primary keeps running while its standby is promoted and another manager
    writes there. This manager's pooled connection to the old primary is given up at its next
    use once the shared record says so, and the pool reconnects to the promoted server."""
    async with etcd_mod.connect(halfstack.etcd_addr, f"dbfence-{secrets.token_hex(4)}") as etcd:
        record = EtcdTimelineRecord(etcd)
        with running_postgres_pair() as pair:
            engine = create_engine(DBConfig(addr=pair.addr, name="postgres", user="postgres"), timelines=record)

            async def served_port() -> int:
                async with engine.connect() as conn:
                    return int(await conn.scalar(sa.text("select inet_server_port()")))

            try:
                async with following_timelines(engine, interval=0.1):
                    assert await served_port() == pair.primary_port  # and the connection stays pooled
                    await asyncio.to_thread(pair.promote_replica)
                    other_manager = WritableHostConnector(
                        DBConfig(addr=f"127.0.0.1:{pair.replica_port}", name="postgres", user="postgres"),
                        timeout=5.0, timelines=record)
                    await (await other_manager()).close()  # writes on timeline 2, and records it
                    deadline = time.monotonic() + 10
                    while (port := await served_port()) != pair.replica_port:
                        assert port == pair.primary_port
                        assert time.monotonic() < deadline, "the pooled connection still writes on the old primary"
                        await asyncio.sleep(0.05)
                    assert pair.psql(pair.primary_port, "select pg_is_in_recovery()") == "f"  # still writable
                    assert await served_port() == pair.replica_port
            finally:
                await engine.dispose()
