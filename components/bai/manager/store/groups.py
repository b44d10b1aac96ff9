"""Project (group) reads for the GraphQL admin API, with membership."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t

_g = t.groups
_members = t.association_groups_users


async def groups(
    conn: AsyncConnection, *, group_id: uuid.UUID | None = None, name: str | None = None,
    domain_name: str | None = None, is_active: bool | None = None, member: uuid.UUID | None = None,
) -> list[sa.Row[Any]]:
    """Projects matching every given condition; ``member`` keeps those the user belongs to."""
    q = sa.select(_g).order_by(_g.c.domain_name, _g.c.name)
    if group_id is not None:
        q = q.where(_g.c.id == group_id)
    if name is not None:
        q = q.where(_g.c.name == name)
    if domain_name is not None:
        q = q.where(_g.c.domain_name == domain_name)
    if is_active is not None:
        q = q.where(_g.c.is_active.is_(is_active))
    if member is not None:
        q = q.where(_g.c.id.in_(sa.select(_members.c.group_id).where(_members.c.user_id == member)))
    return list((await conn.execute(q)).all())


async def groups_of_users(conn: AsyncConnection, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Any]]:
    """Each user's projects (id, name), in one query for a whole page of users."""
    out: dict[uuid.UUID, list[Any]] = {u: [] for u in user_ids}
    if not user_ids:
        return out
    q = (sa.select(_members.c.user_id, _g.c.id, _g.c.name)
         .select_from(_members.join(_g, _g.c.id == _members.c.group_id))
         .where(_members.c.user_id.in_(list(user_ids))).order_by(_g.c.name))
    for row in await conn.execute(q):
        out[row.user_id].append(row)
    return out


# ------------------------------------------------------------------ GraphQL writes

async def group_for_write(conn: AsyncConnection, group_id: uuid.UUID) -> sa.Row[Any] | None:
    """The project, its row held until the transaction ends."""
    return (await conn.execute(sa.select(_g).where(_g.c.id == group_id).with_for_update())).first()


async def insert_group(conn: AsyncConnection, values: dict[str, Any]) -> uuid.UUID:
    group_id = uuid.uuid4()
    await conn.execute(sa.insert(_g).values(id=group_id, **values))
    return group_id


async def update_group(conn: AsyncConnection, group_id: uuid.UUID, values: dict[str, Any]) -> None:
    await conn.execute(sa.update(_g).where(_g.c.id == group_id).values(**values, modified_at=sa.func.now()))


async def add_members(conn: AsyncConnection, group_id: uuid.UUID, user_ids: Sequence[uuid.UUID]) -> None:
    """Members already in the project stay as they are."""
    if user_ids:
        await conn.execute(pg_insert(_members).values([{"user_id": u, "group_id": group_id} for u in user_ids])
                           .on_conflict_do_nothing())


async def remove_members(conn: AsyncConnection, group_id: uuid.UUID, user_ids: Sequence[uuid.UUID]) -> None:
    await conn.execute(sa.delete(_members).where(_members.c.group_id == group_id,
                                                 _members.c.user_id.in_(list(user_ids))))


async def member_count(conn: AsyncConnection, group_id: uuid.UUID) -> int:
    q = sa.select(sa.func.count()).select_from(_members).where(_members.c.group_id == group_id)
    return int(await conn.scalar(q) or 0)


async def session_count(conn: AsyncConnection, group_id: uuid.UUID) -> int:
    q = sa.select(sa.func.count()).select_from(t.sessions).where(t.sessions.c.group_id == group_id)
    return int(await conn.scalar(q) or 0)


async def delete_group(conn: AsyncConnection, group_id: uuid.UUID) -> None:
    """Hard delete; memberships and resource-group associations cascade."""
    await conn.execute(sa.delete(_g).where(_g.c.id == group_id))
