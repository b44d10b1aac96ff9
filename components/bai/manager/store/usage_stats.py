"""Resource use over time, computed from kernel rows: what each kernel occupied (``occupied_slots``,
set when it started RUNNING) for how long (from its RUNNING time, or ``created_at`` without one,
to ``terminated_at``, or the status change that ended it, or now for a kernel still running).

Two queries: :func:`binned_use` sums slot x seconds of overlap per fixed bucket in one statement
(each kernel spans only the buckets it overlaps, so the work is bounded by the buckets asked for),
and :func:`kernels_in_period` lists the kernels that overlapped a period for the usage report."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t

#: A kernel in one of these ended at ``status_changed`` when ``terminated_at`` was never written.
_ENDED = ("TERMINATED", "CANCELLED", "ERROR")


@dataclass(frozen=True)
class Scope:
    """Whose kernels count: every given condition applies (none: every kernel)."""

    user_uuid: uuid.UUID | None = None
    group_ids: tuple[uuid.UUID, ...] | None = None
    domain_name: str | None = None


@dataclass(frozen=True)
class BucketUse:
    """One bucket's totals: slot-seconds of overlap, and how many sessions overlapped it."""

    index: int
    sessions: int
    cpu_seconds: Decimal
    mem_byte_seconds: Decimal
    gpu_seconds: Decimal


def _scope_sql(scope: Scope, params: dict[str, Any]) -> str:
    """The scope as fixed SQL text with bound values (never the values themselves)."""
    conds = ["TRUE"]
    if scope.user_uuid is not None:
        conds.append("k.user_uuid = :scope_user")
        params["scope_user"] = scope.user_uuid
    if scope.group_ids is not None:
        conds.append("k.group_id = ANY(:scope_groups)")
        params["scope_groups"] = list(scope.group_ids)
    if scope.domain_name is not None:
        conds.append("k.domain_name = :scope_domain")
        params["scope_domain"] = scope.domain_name
    return " AND ".join(conds)


# The span of each kernel, clipped to [lo, hi) in Unix seconds; the GPU amount is every cuda.*
# slot (whole devices, fractional shares, MIG slices) summed.
_SPANS = """
WITH spans AS (
  SELECT k.session_id,
         greatest(extract(epoch FROM coalesce((k.status_history->>'RUNNING')::timestamptz, k.created_at)),
                  {lo}) AS s,
         least(extract(epoch FROM coalesce(k.terminated_at,
                                           CASE WHEN k.status IN :ended THEN k.status_changed END,
                                           to_timestamp({now}))),
               {hi}, {now}) AS e,
         coalesce((k.occupied_slots->>'cpu')::numeric, 0) AS cpu,
         coalesce((k.occupied_slots->>'mem')::numeric, 0) AS mem,
         (SELECT coalesce(sum(v.value::numeric), 0) FROM jsonb_each_text(k.occupied_slots) AS v
          WHERE v.key LIKE 'cuda.%') AS gpu
  FROM kernels AS k
  WHERE k.occupied_slots <> '{{}}'::jsonb
    AND (k.terminated_at IS NULL OR k.terminated_at > to_timestamp({lo}))
    AND k.created_at < to_timestamp({hi})
    AND {scope}
)
"""

_BINNED = _SPANS + """
SELECT b AS idx, count(DISTINCT spans.session_id) AS sessions,
       sum(spans.cpu * ov.o) AS cpu, sum(spans.mem * ov.o) AS mem, sum(spans.gpu * ov.o) AS gpu
FROM spans,
     generate_series(floor((spans.s - {lo}) / {w})::int, ceil((spans.e - {lo}) / {w})::int - 1) AS b,
     LATERAL (SELECT least(spans.e, {lo} + (b + 1) * {w}) - greatest(spans.s, {lo} + b * {w}) AS o) AS ov
WHERE spans.e > spans.s AND ov.o > 0
GROUP BY b
ORDER BY b
"""
# Every bound number is cast to numeric where it is used, so PostgreSQL deduces one type per parameter.
_NUMS = {name: f"CAST(:{name} AS numeric)" for name in ("lo", "hi", "w", "now")}


async def binned_use(conn: AsyncConnection, scope: Scope, *, start: int, interval: int, count: int,
                     now: float) -> list[BucketUse]:
    """Use per bucket ``[start + i*interval, start + (i+1)*interval)`` for i < count (Unix
    seconds), nothing counted after ``now``; buckets without use are left out."""
    params: dict[str, Any] = {"lo": Decimal(start), "hi": Decimal(start + interval * count),
                              "w": Decimal(interval), "now": Decimal(repr(now))}
    sql = sa.text(_BINNED.format(scope=_scope_sql(scope, params), **_NUMS)).bindparams(
        sa.bindparam("ended", value=list(_ENDED), expanding=True))
    rows = await conn.execute(sql, params)
    return [BucketUse(int(r.idx), int(r.sessions), Decimal(r.cpu), Decimal(r.mem), Decimal(r.gpu)) for r in rows]


_k = t.kernels.c
_g = t.groups.c
_u = t.users.c

#: At most this many kernels in one usage report (the period itself is bounded to 100 days).
MAX_REPORT_KERNELS = 10_000


async def kernels_in_period(conn: AsyncConnection, scope: Scope, start: datetime, end: datetime,
                            *, limit: int = MAX_REPORT_KERNELS) -> list[sa.Row[Any]]:
    """The kernels that held resources at some time in ``[start, end)`` (ended ones and those still
    running), with their project's name and their owner's email, oldest end first."""
    conds: list[sa.ColumnElement[bool]] = [
        _k.occupied_slots.op("<>")(sa.literal_column("'{}'::jsonb")),
        _k.created_at < end,
        sa.or_(_k.terminated_at.is_(None), _k.terminated_at >= start),
    ]
    if scope.user_uuid is not None:
        conds.append(_k.user_uuid == scope.user_uuid)
    if scope.group_ids is not None:
        conds.append(_k.group_id.in_(scope.group_ids))
    if scope.domain_name is not None:
        conds.append(_k.domain_name == scope.domain_name)
    query: sa.Select[Any] = (
        sa.select(_k.id, _k.session_id, _k.session_name, _k.container_id, _k.access_key, _k.agent,
                  _k.domain_name, _k.group_id, _k.image, _k.occupied_slots, _k.resource_opts, _k.last_stat,
                  _k.status, _k.status_info, _k.status_changed, _k.status_history, _k.created_at,
                  _k.terminated_at, _g.name.label("group_name"), _u.email, _u.full_name,
                  t.sessions.c.cluster_mode, t.sessions.c.vfolder_mounts)
        .select_from(t.kernels.join(t.groups, _g.id == _k.group_id)
                     .join(t.users, _u.uuid == _k.user_uuid)
                     .join(t.sessions, t.sessions.c.id == _k.session_id))
        .where(*conds)
        .order_by(_k.terminated_at.asc().nulls_last(), _k.created_at, _k.id)
        .limit(limit)
    )
    return list((await conn.execute(query)).all())


async def group_domain(conn: AsyncConnection, group_id: uuid.UUID) -> str | None:
    """The domain of a project, or None when there is no such project."""
    domain: str | None = await conn.scalar(sa.select(_g.domain_name).where(_g.id == group_id))
    return domain
