"""Rows of ``session_dependencies``: which sessions a session waits for."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t

__all__ = ["dependencies_of", "insert", "of_sessions", "owned_by_ref", "session_node"]


async def insert(conn: AsyncConnection, session_id: uuid.UUID, depends_on: Sequence[uuid.UUID]) -> None:
    if depends_on:
        await conn.execute(sa.insert(t.session_dependencies),
                           [{"session_id": session_id, "depends_on": d} for d in depends_on])


async def owned_by_ref(conn: AsyncConnection, ref: str, access_key: str) -> Any:
    """The keypair's session ``ref`` (its id, else its newest session of that name, ended ones
    included: a dependency may well have finished already); None when it has none."""
    s = t.sessions.c
    cols = (s.id, s.name, s.status, s.result)
    try:
        sid: uuid.UUID | None = uuid.UUID(ref)
    except ValueError:
        sid = None
    if sid is not None:
        row = (await conn.execute(sa.select(*cols).where(s.id == sid, s.access_key == access_key))).first()
        if row is not None:
            return row
    q = sa.select(*cols).where(s.name == ref, s.access_key == access_key)
    return (await conn.execute(q.order_by(s.created_at.desc()).limit(1))).first()


async def of_sessions(conn: AsyncConnection, session_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Any]]:
    """Each session's dependencies (``session_id, id, name, status, result``), in one query."""
    if not session_ids:
        return {}
    d, s = t.session_dependencies.c, t.sessions.c
    q = (sa.select(d.session_id, s.id, s.name, s.status, s.result)
         .select_from(t.session_dependencies.join(t.sessions, d.depends_on == s.id))
         .where(d.session_id.in_(list(session_ids)))
         .order_by(d.session_id, s.created_at))
    found: dict[uuid.UUID, list[Any]] = {}
    for row in (await conn.execute(q)).all():
        found.setdefault(row.session_id, []).append(row)
    return found


async def dependencies_of(conn: AsyncConnection, session_ids: Sequence[uuid.UUID]) -> list[Any]:
    """``session_id, id, name, status, status_history`` of what each of ``session_ids`` depends on."""
    if not session_ids:
        return []
    d, s = t.session_dependencies.c, t.sessions.c
    q = (sa.select(d.session_id, s.id, s.name, s.status, s.status_history)
         .select_from(t.session_dependencies.join(t.sessions, d.depends_on == s.id))
         .where(d.session_id.in_(list(session_ids))).order_by(d.session_id, s.created_at))
    return list((await conn.execute(q)).all())


async def session_node(conn: AsyncConnection, session_id: uuid.UUID) -> Any:
    s = t.sessions.c
    q = sa.select(s.id, s.name, s.status, s.status_history).where(s.id == session_id)
    return (await conn.execute(q)).first()
