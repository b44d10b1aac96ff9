"""Domain reads for the GraphQL admin API."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t


async def domain(conn: AsyncConnection, name: str) -> sa.Row[Any] | None:
    return (await conn.execute(sa.select(t.domains).where(t.domains.c.name == name))).first()


async def domains(conn: AsyncConnection, *, is_active: bool | None = None) -> list[sa.Row[Any]]:
    q = sa.select(t.domains).order_by(t.domains.c.name)
    if is_active is not None:
        q = q.where(t.domains.c.is_active.is_(is_active))
    return list((await conn.execute(q)).all())
