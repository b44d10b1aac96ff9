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


# ------------------------------------------------------------------ GraphQL writes

_d = t.domains


async def insert_domain(conn: AsyncConnection, name: str, values: dict[str, Any]) -> None:
    await conn.execute(sa.insert(_d).values(name=name, **values))


async def update_domain(conn: AsyncConnection, name: str, values: dict[str, Any]) -> bool:
    """False when there is no such domain."""
    res = await conn.execute(sa.update(_d).where(_d.c.name == name).values(**values, modified_at=sa.func.now()))
    return bool(res.rowcount)


async def rename_domain(conn: AsyncConnection, old: str, new: str) -> None:
    """Give the domain a new name everywhere it is referred to: the new row first, then every
    reference, then the old row goes (the foreign keys do not cascade updates)."""
    row = (await conn.execute(sa.select(_d).where(_d.c.name == old))).one()
    values = {k: v for k, v in row._mapping.items() if k != "name"}
    await conn.execute(sa.insert(_d).values(name=new, **values))
    for table, column in ((t.users, "domain_name"), (t.groups, "domain_name"), (t.sessions, "domain_name"),
                          (t.kernels, "domain_name"), (t.sgroups_for_domains, "domain")):
        await conn.execute(sa.update(table).where(table.c[column] == old).values({column: new}))
    await conn.execute(sa.delete(_d).where(_d.c.name == old))


async def dependants(conn: AsyncConnection, name: str) -> dict[str, int]:
    """How many users, projects and sessions (any status) belong to the domain."""
    out: dict[str, int] = {}
    for what, table in (("users", t.users), ("projects", t.groups), ("sessions", t.sessions)):
        q = sa.select(sa.func.count()).select_from(table).where(table.c.domain_name == name)
        out[what] = int(await conn.scalar(q) or 0)
    return out


async def delete_domain(conn: AsyncConnection, name: str) -> bool:
    """Hard delete (its resource-group associations cascade); False when there is no such domain."""
    res = await conn.execute(sa.delete(_d).where(_d.c.name == name))
    return bool(res.rowcount)
