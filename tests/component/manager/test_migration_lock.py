"""`bai-manager db upgrade` from several managers at once (HA installs converge managers in
parallel): each migration run holds a PostgreSQL advisory lock, so a second run waits for the
first and then finds the schema at head; nobody polls, and a failing migration fails at once."""

from __future__ import annotations

import asyncio
import sys
import time

import asyncpg
from alembic.script import ScriptDirectory

from bai.manager.store import migrate
from tests.fixtures.halfstack import HalfStack

#: = bai.manager.store.migrations.env.MIGRATION_LOCK (that module runs Alembic when imported)
MIGRATION_LOCK = 0x6261692D6D6967


async def _upgrade(dsn: str) -> asyncio.subprocess.Process:
    """One migration run in its own process, as each manager host runs `bai-manager db upgrade`
    (Alembic's command API keeps module-level state: one run per process)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from bai.manager.store import migrate; migrate.upgrade(sys.argv[1])", dsn,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)


async def _finished(proc: asyncio.subprocess.Process) -> str:
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
    return out.decode(errors="replace")


async def test_a_second_migration_waits_for_the_lock_then_finds_the_schema_at_head(halfstack: HalfStack) -> None:
    db = "bai_migration_lock"
    await asyncio.to_thread(halfstack.psql, f"drop database if exists {db}")
    await asyncio.to_thread(halfstack.psql, f"create database {db}")
    heads = ScriptDirectory(str(migrate.MIGRATIONS)).get_heads()
    holder = await asyncpg.connect(host="127.0.0.1", port=halfstack.pg_port, user="postgres", database=db)
    try:
        await holder.execute("select pg_advisory_lock($1)", MIGRATION_LOCK)
        waiting = await _upgrade(halfstack.pg_dsn(db))
        # its backend is seen waiting on our advisory lock, having changed nothing
        deadline = time.monotonic() + 60
        while not await holder.fetchval(
                "select count(*) from pg_locks where locktype = 'advisory' and not granted"):
            assert waiting.returncode is None, "the migration did not wait for the lock"
            assert time.monotonic() < deadline, "the migration never asked for the lock"
            await asyncio.sleep(0.05)
        assert not await holder.fetchval("select to_regclass('alembic_version') is not null")
        await holder.execute("select pg_advisory_unlock($1)", MIGRATION_LOCK)
        await _finished(waiting)
        # two at once (as two manager hosts): both succeed and the schema is at head
        first, second = await asyncio.gather(_upgrade(halfstack.pg_dsn(db)), _upgrade(halfstack.pg_dsn(db)))
        await asyncio.gather(_finished(first), _finished(second))
        versions = await holder.fetch("select version_num from alembic_version")
        assert sorted(r["version_num"] for r in versions) == sorted(heads)
    finally:
        await holder.close()
        await asyncio.to_thread(halfstack.psql, f"drop database if exists {db}")
