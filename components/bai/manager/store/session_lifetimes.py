"""What the idle/lifetime checker reads: running sessions whose owner's keypair policy sets an
idle timeout or a maximum lifetime, in one query."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t

__all__ = ["limited_running_sessions"]


async def limited_running_sessions(conn: AsyncConnection) -> list[Any]:
    """RUNNING sessions with ``idle_timeout > 0`` (batch sessions excepted: they are busy while
    running) or ``max_session_lifetime > 0``: ``id, name, session_type, created_at,
    running_since, preparing_since, idle_timeout, max_session_lifetime`` (ISO strings from
    ``status_history`` for the two ``*_since``)."""
    s, k, p = t.sessions.c, t.keypairs.c, t.keypair_resource_policies.c
    q = (sa.select(s.id, s.name, s.session_type, s.created_at,
                   s.status_history["RUNNING"].astext.label("running_since"),
                   s.status_history["PREPARING"].astext.label("preparing_since"),
                   p.idle_timeout, p.max_session_lifetime)
         .select_from(t.sessions.join(t.keypairs, s.access_key == k.access_key)
                      .join(t.keypair_resource_policies, k.resource_policy == p.name))
         .where(s.status == "RUNNING",
                sa.or_(sa.and_(p.idle_timeout > 0, s.session_type != "batch"), p.max_session_lifetime > 0)))
    return list((await conn.execute(q)).all())
