"""Cluster sessions: manual agent assignment (``agentList``, superadmins only: the agents asked
for, and the agent each PENDING kernel was assigned before scheduling, ``kernels.agent`` set at
create) and which sessions still live (their overlay networks stay)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t


async def agents_by_id(conn: AsyncConnection, agent_ids: Sequence[str]) -> dict[str, Any]:
    """The rows (id, status, schedulable, scaling group, architecture, address) of those of
    ``agent_ids`` that exist."""
    a = t.agents.c
    q = sa.select(a.id, a.status, a.schedulable, a.scaling_group, a.architecture, a.addr).where(
        a.id.in_(list(set(agent_ids))))
    return {row.id: row for row in (await conn.execute(q)).all()}


async def preset_agents(conn: AsyncConnection, session_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
    """For the sessions among ``session_ids`` whose PENDING kernels were assigned agents: those
    agents in local-rank order. One statement, whatever the number of sessions."""
    if not session_ids:
        return {}
    k = t.kernels.c
    q = (sa.select(k.session_id, k.agent)
         .where(k.session_id == sa.any_(sa.bindparam("sids", list(session_ids), type_=ARRAY(UUID(as_uuid=True)))),
                k.status == "PENDING", k.agent.is_not(None))
         .order_by(k.session_id, k.local_rank))
    out: dict[uuid.UUID, list[str]] = {}
    for row in (await conn.execute(q)).all():
        out.setdefault(row.session_id, []).append(row.agent)
    return out


async def live_among(conn: AsyncConnection, session_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Those of ``session_ids`` that exist and have not ended."""
    if not session_ids:
        return set()
    s = t.sessions.c
    q = sa.select(s.id).where(s.id.in_(list(session_ids)), s.status.not_in(["TERMINATED", "CANCELLED"]))
    return set((await conn.scalars(q)).all())
