"""Session and kernel rows: creation, lookup by reference, status transitions."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from bai.common.types import KernelStatus, SessionStatus

from . import tables as t

DEAD = (SessionStatus.TERMINATED.value, SessionStatus.CANCELLED.value)


def _history(status: str, now: datetime) -> sa.ColumnElement[Any]:
    return sa.func.jsonb_set(
        t.sessions.c.status_history, sa.text(f"'{{{status}}}'"), sa.func.to_jsonb(now.isoformat())
    )


class DuplicateSessionName(Exception):
    """The owner already has a live session of this name (the unique index said so); the
    transaction is aborted."""


async def insert_session(conn: AsyncConnection, session: dict[str, Any], kernels: Sequence[dict[str, Any]]) -> None:
    now = datetime.now(UTC)
    session = {**session, "status": "PENDING", "status_history": {"PENDING": now.isoformat()}}
    try:
        await conn.execute(sa.insert(t.sessions).values(**session))
    except IntegrityError as exc:
        if t.UNIQUE_LIVE_SESSION_NAME in str(exc.orig):
            raise DuplicateSessionName(session.get("name")) from exc
        raise
    await conn.execute(sa.insert(t.kernels), [
        {**k, "status": "PENDING", "status_changed": now, "status_history": {"PENDING": now.isoformat()}}
        for k in kernels
    ])


_session_cols = [
    t.sessions.c.id, t.sessions.c.name, t.sessions.c.status, t.sessions.c.access_key, t.sessions.c.image,
    t.sessions.c.created_at,
]


async def find_by_ref(
    conn: AsyncConnection, ref: str, access_key: str | None, *, include_dead: bool = False,
) -> list[sa.Row[Any]]:
    """Sessions matching ``ref`` (UUID first, then name) owned by ``access_key`` (any owner if None)."""
    conds: list[sa.ColumnElement[bool]] = []
    if access_key is not None:
        conds.append(t.sessions.c.access_key == access_key)
    if not include_dead:
        conds.append(t.sessions.c.status.not_in(DEAD))
    try:
        sid = uuid.UUID(ref)
    except ValueError:
        sid = None
    if sid is not None:
        rows = (await conn.execute(sa.select(t.sessions).where(t.sessions.c.id == sid, *conds))).all()
        if rows:
            return list(rows)
    q = sa.select(t.sessions).where(t.sessions.c.name == ref, *conds).order_by(t.sessions.c.created_at.desc())
    return list((await conn.execute(q.limit(10))).all())


async def get(conn: AsyncConnection, session_id: uuid.UUID) -> Any:
    return (await conn.execute(sa.select(t.sessions).where(t.sessions.c.id == session_id))).first()


async def kernels_of(conn: AsyncConnection, session_id: uuid.UUID) -> list[sa.Row[Any]]:
    q = sa.select(t.kernels).where(t.kernels.c.session_id == session_id).order_by(t.kernels.c.cluster_idx)
    return list((await conn.execute(q)).all())


async def main_kernel_route(conn: AsyncConnection, ref: str, access_key: str) -> Any:
    """Hot path for execute: the live main kernel of a session, with its agent address, in one query."""
    try:
        sid: uuid.UUID | None = uuid.UUID(ref)
    except ValueError:
        sid = None
    ref_cond = t.sessions.c.name == ref if sid is None else sa.or_(t.sessions.c.id == sid, t.sessions.c.name == ref)
    q = (
        sa.select(t.sessions.c.id.label("session_id"), t.sessions.c.status.label("session_status"),
                  t.kernels.c.id.label("kernel_id"), t.kernels.c.agent_addr, t.kernels.c.status)
        .select_from(t.sessions.join(t.kernels, t.kernels.c.session_id == t.sessions.c.id))
        .where(ref_cond, t.sessions.c.access_key == access_key, t.sessions.c.status.not_in(DEAD),
               t.kernels.c.cluster_role == "main")
        .limit(2)
    )
    rows = (await conn.execute(q)).all()
    return rows[0] if len(rows) == 1 else None


async def set_session_status(
    conn: AsyncConnection, session_id: uuid.UUID, status: SessionStatus, *,
    only_from: Sequence[str] | None = None, info: str | None = None, data: dict[str, Any] | None = None,
) -> bool:
    """Move a session to ``status`` (only from ``only_from`` when given). True if a row changed."""
    now = datetime.now(UTC)
    values: dict[str, Any] = {"status": status.value, "status_history": _history(status.value, now)}
    if info is not None:
        values["status_info"] = info
    if data is not None:
        values["status_data"] = data
    if status in (SessionStatus.TERMINATED, SessionStatus.CANCELLED, SessionStatus.ERROR):
        values["terminated_at"] = now
    q = t.sessions.update().where(t.sessions.c.id == session_id)
    if only_from is not None:
        q = q.where(t.sessions.c.status.in_(list(only_from)))
    q = q.where(t.sessions.c.status != status.value)
    result = await conn.execute(q.values(**values))
    return bool(result.rowcount)


async def set_kernel_status(
    conn: AsyncConnection, kernel_id: uuid.UUID, status: KernelStatus, *,
    only_from: Sequence[str] | None = None, info: str | None = None, **extra: Any,
) -> bool:
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "status": status.value, "status_changed": now,
        "status_history": sa.func.jsonb_set(
            t.kernels.c.status_history, sa.text(f"'{{{status.value}}}'"), sa.func.to_jsonb(now.isoformat())
        ),
        **extra,
    }
    if info is not None:
        values["status_info"] = info
    if status in (KernelStatus.TERMINATED, KernelStatus.CANCELLED, KernelStatus.ERROR):
        values["terminated_at"] = now
    q = t.kernels.update().where(t.kernels.c.id == kernel_id, t.kernels.c.status != status.value)
    if only_from is not None:
        q = q.where(t.kernels.c.status.in_(list(only_from)))
    result = await conn.execute(q.values(**values))
    return bool(result.rowcount)


async def pending(conn: AsyncConnection, scaling_group: str | None = None) -> list[sa.Row[Any]]:
    """PENDING sessions, oldest first (FIFO order)."""
    q = sa.select(t.sessions).where(t.sessions.c.status == "PENDING")
    if scaling_group is not None:
        q = q.where(t.sessions.c.scaling_group_name == scaling_group)
    return list((await conn.execute(q.order_by(t.sessions.c.created_at, t.sessions.c.id))).all())


async def occupying_of_keypair(conn: AsyncConnection, access_key: str) -> list[Any]:
    q = sa.select(t.sessions.c.id, t.sessions.c.requested_slots, t.sessions.c.cluster_size).where(
        t.sessions.c.access_key == access_key,
        t.sessions.c.status.in_(["SCHEDULED", "PREPARING", "PULLING", "RUNNING", "RESTARTING", "RUNNING_DEGRADED"]),
    )
    return list((await conn.execute(q)).all())


async def list_sessions(
    conn: AsyncConnection, *, access_key: str | None, statuses: Sequence[str] | None,
    limit: int, offset: int,
) -> tuple[list[Any], int]:
    conds: list[sa.ColumnElement[bool]] = []
    if access_key is not None:
        conds.append(t.sessions.c.access_key == access_key)
    if statuses:
        conds.append(t.sessions.c.status.in_(list(statuses)))
    total = await conn.scalar(sa.select(sa.func.count()).select_from(t.sessions).where(*conds))
    main = t.kernels.alias("mk")
    q = (
        sa.select(t.sessions, main.c.id.label("main_kernel_id"), t.groups.c.name.label("group_name"),
                  main.c.agent.label("main_agent"), main.c.container_id.label("main_container_id"),
                  main.c.occupied_slots.label("main_occupied_slots"))
        .select_from(
            t.sessions.outerjoin(main, sa.and_(main.c.session_id == t.sessions.c.id, main.c.cluster_role == "main"))
            .outerjoin(t.groups, t.groups.c.id == t.sessions.c.group_id)
        )
        .where(*conds).order_by(t.sessions.c.created_at.desc()).limit(limit).offset(offset)
    )
    return list((await conn.execute(q)).all()), int(total or 0)


async def settled_kernels_by_agent(conn: AsyncConnection, settled_before: datetime) -> dict[str, list[Any]]:
    """RUNNING kernels on ALIVE agents whose status has not changed since ``settled_before``."""
    q = (
        sa.select(t.kernels.c.id, t.kernels.c.session_id, t.kernels.c.agent, t.agents.c.addr)
        .select_from(t.kernels.join(t.agents, t.agents.c.id == t.kernels.c.agent))
        .where(t.kernels.c.status == "RUNNING", t.agents.c.status == "ALIVE",
               t.kernels.c.status_changed < settled_before)
    )
    out: dict[str, list[Any]] = {}
    for row in (await conn.execute(q)).all():
        out.setdefault(row.agent, []).append(row)
    return out


async def settled_kernels_of_agent(conn: AsyncConnection, agent_id: str, settled_before: datetime) -> list[Any]:
    """RUNNING kernels placed on ``agent_id`` whose status has not changed since ``settled_before``."""
    q = sa.select(t.kernels.c.id, t.kernels.c.session_id).where(
        t.kernels.c.agent == agent_id, t.kernels.c.status == "RUNNING",
        t.kernels.c.status_changed < settled_before)
    return list((await conn.execute(q)).all())


async def dead_kernels_among(conn: AsyncConnection, kernel_ids: Sequence[str]) -> list[tuple[str, uuid.UUID]]:
    """``(kernel id, session id)`` of those of ``kernel_ids`` (strings, any format) whose kernel
    is TERMINATED or CANCELLED; ids that are not UUIDs or not in the database are left out."""
    ids = []
    for raw in kernel_ids:
        try:
            ids.append(uuid.UUID(raw))
        except ValueError:
            continue
    if not ids:
        return []
    q = sa.select(t.kernels.c.id, t.kernels.c.session_id).where(
        t.kernels.c.id.in_(ids), t.kernels.c.status.in_([KernelStatus.TERMINATED.value, KernelStatus.CANCELLED.value]))
    return [(str(r.id), r.session_id) for r in (await conn.execute(q)).all()]


async def stuck_sessions(conn: AsyncConnection, statuses: Sequence[str], entered_before: datetime) -> list[Any]:
    """Sessions in one of ``statuses`` that entered it before ``entered_before`` (per their
    status history; a session with no recorded time for its status counts from its creation)."""
    entered = sa.func.coalesce(
        sa.cast(t.sessions.c.status_history.op("->>")(t.sessions.c.status), sa.DateTime(timezone=True)),
        t.sessions.c.created_at)
    q = sa.select(t.sessions.c.id, t.sessions.c.status).where(
        t.sessions.c.status.in_(list(statuses)), entered < entered_before).order_by(t.sessions.c.created_at)
    return list((await conn.execute(q)).all())


async def note_kernel_condition(conn: AsyncConnection, session_id: uuid.UUID, kernel_id: uuid.UUID,
                                info: str) -> bool:
    """Set ``status_info`` of a live kernel and of its live session without moving either (e.g.
    ``oom-killed``: the runner survives the kill of user code). True if the kernel row changed."""
    settled = ("TERMINATING", "TERMINATED", "CANCELLED", "ERROR")
    changed = await conn.execute(t.kernels.update().where(
        t.kernels.c.id == kernel_id, t.kernels.c.session_id == session_id, t.kernels.c.status.not_in(settled),
    ).values(status_info=info))
    if not changed.rowcount:
        return False
    await conn.execute(t.sessions.update().where(
        t.sessions.c.id == session_id, t.sessions.c.status.not_in(settled)).values(status_info=info))
    return True
