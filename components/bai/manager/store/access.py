"""Who owns what and who may use what: a session's owners, the projects a name means, the
resource groups a domain may use."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t


async def session_owners(conn: AsyncConnection, session_id: uuid.UUID) -> Any | None:
    """The session's ``domain_name``, ``group_id`` and ``user_uuid``, or None when there is none."""
    return (await conn.execute(
        sa.select(t.sessions.c.domain_name, t.sessions.c.group_id, t.sessions.c.user_uuid)
        .where(t.sessions.c.id == session_id))).first()


async def group_ids_named(conn: AsyncConnection, name: str, domain_name: str | None) -> frozenset[uuid.UUID]:
    """The ids of the projects called ``name`` (in ``domain_name``; in any domain when None)."""
    q = sa.select(t.groups.c.id).where(t.groups.c.name == name)
    if domain_name is not None:
        q = q.where(t.groups.c.domain_name == domain_name)
    return frozenset((await conn.execute(q)).scalars())
