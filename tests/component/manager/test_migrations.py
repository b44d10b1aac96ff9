"""Every schema revision upgrades and downgrades: the whole chain down to nothing and back up
again on a real PostgreSQL, and the migrated schema is the one the code declares (store.tables):
the same tables with the same columns."""

from __future__ import annotations

import asyncio
import secrets

from alembic import command
from alembic.script import ScriptDirectory

from bai.manager.store import migrate
from bai.manager.store import tables as t
from tests.fixtures.halfstack import HalfStack

COLUMNS = ("select table_name || '.' || column_name from information_schema.columns "
           "where table_schema = 'public' and table_name <> 'alembic_version' order by 1")


def test_one_head() -> None:
    assert len(ScriptDirectory(str(migrate.MIGRATIONS)).get_heads()) == 1


async def test_the_whole_chain_goes_down_and_up(halfstack: HalfStack) -> None:
    name = f"t_mig_{secrets.token_hex(3)}"
    await asyncio.to_thread(halfstack.psql, f"create database {name}")
    try:
        cfg = migrate.alembic_config(halfstack.pg_dsn(name))
        await asyncio.to_thread(command.upgrade, cfg, "heads")
        migrated = set((await asyncio.to_thread(halfstack.psql, COLUMNS, name)).split())
        declared = {f"{table.name}.{col.name}" for table in t.metadata.tables.values() for col in table.columns}
        assert migrated == declared, (sorted(migrated - declared), sorted(declared - migrated))
        await asyncio.to_thread(command.downgrade, cfg, "base")
        assert (await asyncio.to_thread(halfstack.psql, COLUMNS, name)).split() == []
        await asyncio.to_thread(command.upgrade, cfg, "heads")
        assert set((await asyncio.to_thread(halfstack.psql, COLUMNS, name)).split()) == migrated
    finally:
        await asyncio.to_thread(halfstack.psql, f"drop database if exists {name} with (force)")
