"""SQL of the audit log: batched inserts, the ``audit_log_list`` page and the retention purge."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from . import filters as qf
from . import tables as t

_a = t.audit_logs

KINDS = frozenset({"graphql", "rest", "system"})  # system: the log's own notes (audit.dropped)
OUTCOMES = frozenset({"ok", "failed", "denied"})
ROLES = frozenset({"superadmin", "admin", "user", "monitor"})

#: What ``audit_log_list(filter, order)`` may name.
AUDIT_FIELDS: dict[str, qf.Field] = {
    "id": qf.Field(_a.c.id, "int"),
    "created_at": qf.Field(_a.c.created_at, "datetime"),
    "access_key": qf.Field(_a.c.access_key, "str"),
    "user_id": qf.Field(_a.c.user_id, "uuid"),
    "email": qf.Field(_a.c.email, "str"),
    "role": qf.enum(_a.c.role, ROLES, str.lower),
    "client_ip": qf.Field(_a.c.client_ip, "str"),
    "kind": qf.enum(_a.c.kind, KINDS, str.lower),
    "operation": qf.Field(_a.c.operation, "str"),
    "target": qf.Field(_a.c.target, "str"),
    "outcome": qf.enum(_a.c.outcome, OUTCOMES, str.lower),
    "message": qf.Field(_a.c.message, "str"),
    "duration_ms": qf.Field(_a.c.duration_ms, "int"),
}


async def insert_entries(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """One multi-row INSERT; each mapping names columns of ``audit_logs`` (not ``id``)."""
    if rows:
        await conn.execute(sa.insert(_a), list(rows))


async def audit_page(conn: AsyncConnection, *, filter_: str | None, order: str | None, limit: int,
                     offset: int) -> tuple[list[sa.Row[Any]], int]:
    """One page of entries, newest first unless ``order`` says otherwise, and the total count.
    A bad ``filter_`` or ``order`` raises QueryError before any SQL runs."""
    conds = [qf.where(filter_, AUDIT_FIELDS)] if filter_ else []
    ordering = [*qf.order_by(order, AUDIT_FIELDS), _a.c.id.desc()] if order else [_a.c.id.desc()]
    rows = list((await conn.execute(
        sa.select(_a).where(*conds).order_by(*ordering).limit(limit).offset(offset))).all())
    total = await conn.scalar(sa.select(sa.func.count()).select_from(_a).where(*conds))
    return rows, int(total or 0)


async def purge_before(conn: AsyncConnection, cutoff: datetime, batch: int) -> int:
    """Delete at most ``batch`` entries older than ``cutoff`` (oldest first); how many went."""
    oldest = sa.select(_a.c.id).where(_a.c.created_at < cutoff).order_by(_a.c.id).limit(batch)
    result = await conn.execute(sa.delete(_a).where(_a.c.id.in_(oldest.scalar_subquery())))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
