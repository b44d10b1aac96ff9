"""store.db.is_transient against real PostgreSQL errors: a deadlock PostgreSQL broke is worth a
retry (and a 503 rather than a 500); a constraint violation is not."""

from __future__ import annotations

import asyncio
import secrets

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from bai.manager.store.db import is_transient
from tests.fixtures.halfstack import HalfStack


async def test_a_broken_deadlock_is_transient_and_a_constraint_violation_is_not(halfstack: HalfStack) -> None:
    name = f"transient_{secrets.token_hex(4)}"
    await asyncio.to_thread(halfstack.psql, f"create database {name}")
    engine = create_async_engine(halfstack.pg_dsn(name))
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("create table t (id int primary key, v int)"))
            await conn.execute(sa.text("insert into t values (1, 0), (2, 0)"))
        both_hold_one = asyncio.Barrier(2)

        async def lock(first: int, second: int) -> None:
            async with engine.begin() as conn:
                await conn.execute(sa.text("update t set v = v + 1 where id = :i"), {"i": first})
                await both_hold_one.wait()
                await conn.execute(sa.text("update t set v = v + 1 where id = :i"), {"i": second})

        results = await asyncio.wait_for(asyncio.gather(lock(1, 2), lock(2, 1), return_exceptions=True), 30)
        [deadlock] = [r for r in results if isinstance(r, BaseException)]
        assert "deadlock" in str(deadlock).lower() and is_transient(deadlock)

        with pytest.raises(sa.exc.IntegrityError) as violation:
            async with engine.begin() as conn:
                await conn.execute(sa.text("insert into t values (1, 0)"))
        assert not is_transient(violation.value)
    finally:
        await engine.dispose()
