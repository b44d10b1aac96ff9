"""Resource presets: reads (GraphQL, GET /resource/presets) and the superadmin's writes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t

_r = t.resource_presets


async def resource_presets(conn: AsyncConnection, *, name: str | None = None) -> list[sa.Row[Any]]:
    q = sa.select(_r).order_by(_r.c.name)
    if name is not None:
        q = q.where(_r.c.name == name)
    return list((await conn.execute(q)).all())


async def create_preset(conn: AsyncConnection, name: str, values: Mapping[str, Any]) -> sa.Row[Any] | None:
    """The new preset's row; None when one of that name exists (nothing is written)."""
    stmt = insert(_r).values(name=name, **values).on_conflict_do_nothing().returning(_r)
    return (await conn.execute(stmt)).first()


async def modify_preset(conn: AsyncConnection, name: str, values: Mapping[str, Any]) -> bool:
    """Whether the preset exists (it is changed when ``values`` has anything)."""
    if not values:
        return bool(await conn.scalar(sa.select(sa.func.count()).select_from(_r).where(_r.c.name == name)))
    return (await conn.execute(sa.update(_r).where(_r.c.name == name).values(**values))).rowcount > 0


async def delete_preset(conn: AsyncConnection, name: str) -> bool:
    return (await conn.execute(sa.delete(_r).where(_r.c.name == name))).rowcount > 0
