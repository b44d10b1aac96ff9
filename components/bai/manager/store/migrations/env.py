"""Alembic environment: runs migrations over asyncpg with the manager's own DSN."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from bai.manager.store.tables import metadata

config = context.config

#: The advisory lock every `bai-manager db upgrade` holds while it migrates (an arbitrary constant).
MIGRATION_LOCK = 0x6261692D6D6967  # "bai-mig"


def _run(connection: Connection) -> None:
    # Managers installed side by side (HA) may migrate at once: the second waits here until the
    # first's transaction ends, then Alembic finds the schema at head and does nothing.
    connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    engine = create_async_engine(config.get_main_option("sqlalchemy.url") or "")
    async with engine.connect() as conn:
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_main())
