"""Keypair resource policy reads for the GraphQL admin API."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t

_p = t.keypair_resource_policies


async def keypair_policies(
    conn: AsyncConnection, *, name: str | None = None, domain_name: str | None = None,
    access_key: str | None = None,
) -> list[sa.Row[Any]]:
    """Keypair resource policies by name; with ``domain_name`` only those some keypair of that
    domain uses, with ``access_key`` only that keypair's (the original's scoping)."""
    q = sa.select(_p).order_by(_p.c.name)
    if name is not None:
        q = q.where(_p.c.name == name)
    if domain_name is not None or access_key is not None:
        used = (sa.select(t.keypairs.c.resource_policy)
                .select_from(t.keypairs.join(t.users, t.users.c.uuid == t.keypairs.c.user)))
        if domain_name is not None:
            used = used.where(t.users.c.domain_name == domain_name)
        if access_key is not None:
            used = used.where(t.keypairs.c.access_key == access_key)
        q = q.where(_p.c.name.in_(used))
    return list((await conn.execute(q)).all())
