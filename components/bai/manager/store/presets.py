"""Resource preset reads."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t


async def resource_presets(conn: AsyncConnection, *, name: str | None = None) -> list[sa.Row[Any]]:
    q = sa.select(t.resource_presets).order_by(t.resource_presets.c.name)
    if name is not None:
        q = q.where(t.resource_presets.c.name == name)
    return list((await conn.execute(q)).all())
