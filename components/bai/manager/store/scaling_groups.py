"""Scaling group (resource group) reads for the GraphQL admin API."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t

_s = t.scaling_groups


async def scaling_groups(
    conn: AsyncConnection, *, name: str | None = None, is_active: bool | None = None,
    domain_name: str | None = None,
) -> list[sa.Row[Any]]:
    """Scaling groups by name and activity; ``domain_name`` keeps those associated with it."""
    q = sa.select(_s).order_by(_s.c.name)
    if name is not None:
        q = q.where(_s.c.name == name)
    if is_active is not None:
        q = q.where(_s.c.is_active.is_(is_active))
    if domain_name is not None:
        q = q.where(_s.c.name.in_(sa.select(t.sgroups_for_domains.c.scaling_group)
                                  .where(t.sgroups_for_domains.c.domain == domain_name)))
    return list((await conn.execute(q)).all())
