"""Resource use statistics: time series of what sessions occupied (the original's
``/resource/stats/user/month`` and ``/resource/stats/admin/month``, plus a per-project series),
and the usage report of the kernels that ran in a period (``/resource/usage/period`` and
``/resource/usage/month``).

Who sees what: a user their own kernels; a domain admin their domain's; a superadmin or a
monitor everything. A project's series is for admins of its domain (and superadmins/monitors).

Each bucket's figures are the AVERAGE occupied over the bucket (slot-seconds of overlap divided
by the bucket's length), so a 2-CPU session running half of a bucket shows 1 CPU there; the
original counts every kernel that touched a bucket at its full size. Times are UTC."""

from __future__ import annotations

import calendar
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bai.manager import errors
from bai.manager.store import usage_stats as store
from bai.manager.store.keypairs import Requester

from .context import ManagerContext

#: Bucket lengths a series may use, by their wire names.
INTERVALS = {"15m": 900, "1h": 3600, "1d": 86400}
MAX_SERIES_DAYS = 30
MAX_PERIOD_DAYS = 100


@dataclass(frozen=True)
class SeriesWindow:
    """``count`` buckets of ``interval`` seconds, the last one holding ``now`` (aligned to the
    interval since the Unix epoch, so the same instant always falls in the same bucket)."""

    start: int
    interval: int
    count: int
    now: float


def series_window(interval: str, days: int, now: datetime | None = None) -> SeriesWindow:
    seconds = INTERVALS.get(interval)
    if seconds is None:
        raise errors.InvalidAPIParameters(f"interval must be one of {', '.join(INTERVALS)}")
    if not 1 <= days <= MAX_SERIES_DAYS:
        raise errors.InvalidAPIParameters(f"days must be between 1 and {MAX_SERIES_DAYS}")
    ts = (now or datetime.now(UTC)).timestamp()
    count = days * 86400 // seconds
    end = (int(ts) // seconds + 1) * seconds
    return SeriesWindow(start=end - count * seconds, interval=seconds, count=count, now=ts)


def _reads_everything(req: Requester) -> bool:
    return req.role in ("superadmin", "monitor")


def _admin_scope(req: Requester) -> store.Scope:
    """What an admin-level view covers for this caller."""
    if _reads_everything(req):
        return store.Scope()
    if req.role == "admin":
        return store.Scope(domain_name=req.domain_name)
    raise errors.GenericForbidden("admin privilege required")


async def _project_scope(ctx: ManagerContext, req: Requester, project_id: uuid.UUID) -> store.Scope:
    if not _reads_everything(req) and req.role != "admin":
        raise errors.GenericForbidden("admin privilege required")
    async with ctx.db.connect() as conn:
        domain = await store.group_domain(conn, project_id)
    # a domain admin learns nothing of another domain's projects: the same answer as no project
    if domain is None or (not _reads_everything(req) and domain != req.domain_name):
        raise errors.GroupNotFound("No such project.")
    return store.Scope(group_ids=(project_id,))


def _num(value: Decimal) -> float:
    return float(value)


async def _series(ctx: ManagerContext, scope: store.Scope, window: SeriesWindow) -> list[dict[str, Any]]:
    async with ctx.db.connect() as conn:
        used = {b.index: b for b in await store.binned_use(
            conn, scope, start=window.start, interval=window.interval, count=window.count, now=window.now)}
    width = Decimal(window.interval)
    series = []
    for i in range(window.count):
        b = used.get(i)
        sessions, cpu, mem, gpu = (0, Decimal(0), Decimal(0), Decimal(0)) if b is None else (
            b.sessions, b.cpu_seconds / width, b.mem_byte_seconds / width, b.gpu_seconds / width)
        series.append({
            "date": window.start + i * window.interval,
            "num_sessions": {"value": sessions, "unit_hint": "count"},
            "cpu_allocated": {"value": _num(cpu), "unit_hint": "count"},
            "mem_allocated": {"value": int(mem.to_integral_value()), "unit_hint": "bytes"},
            "gpu_allocated": {"value": _num(gpu), "unit_hint": "count"},
        })
    return series


async def user_series(ctx: ManagerContext, req: Requester, window: SeriesWindow) -> list[dict[str, Any]]:
    """The caller's own use."""
    return await _series(ctx, store.Scope(user_uuid=req.user_uuid), window)


async def admin_series(ctx: ManagerContext, req: Requester, window: SeriesWindow) -> list[dict[str, Any]]:
    """Everyone's use the caller may see (a domain admin: their domain's)."""
    return await _series(ctx, _admin_scope(req), window)


async def project_series(ctx: ManagerContext, req: Requester, project_id: uuid.UUID,
                         window: SeriesWindow) -> list[dict[str, Any]]:
    return await _series(ctx, await _project_scope(ctx, req, project_id), window)


# ---------------------------------------------------------------- the usage report


def parse_day(value: str, name: str) -> datetime:
    try:
        return datetime.strptime(value, "%Y%m%d").replace(tzinfo=UTC)
    except ValueError:
        raise errors.InvalidAPIParameters(f"{name} is not a valid date (yyyymmdd)") from None


def period_bounds(start_date: str, end_date: str) -> tuple[datetime, datetime]:
    """``[start_date 00:00, end_date + 1 day)`` in UTC, at most MAX_PERIOD_DAYS long."""
    start = parse_day(start_date, "start_date")
    end = parse_day(end_date, "end_date") + timedelta(days=1)  # the end date is included
    if end <= start:
        raise errors.InvalidAPIParameters("end_date must not be earlier than start_date")
    if end - start > timedelta(days=MAX_PERIOD_DAYS):
        raise errors.InvalidAPIParameters(f"Cannot query more than {MAX_PERIOD_DAYS} days")
    return start, end


def month_bounds(month: str) -> tuple[datetime, datetime]:
    try:
        start = datetime.strptime(month, "%Y%m").replace(tzinfo=UTC)
    except ValueError:
        raise errors.InvalidAPIParameters("month is not a valid month (yyyymm)") from None
    days = calendar.monthrange(start.year, start.month)[1]
    return start, start + timedelta(days=days)


def _report_scope(req: Requester, group_ids: tuple[uuid.UUID, ...] | None) -> store.Scope:
    """Admins see their scope's kernels; anyone else only their own."""
    if _reads_everything(req):
        return store.Scope(group_ids=group_ids)
    if req.role == "admin":
        return store.Scope(group_ids=group_ids, domain_name=req.domain_name)
    return store.Scope(group_ids=group_ids, user_uuid=req.user_uuid)


def _get(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, Mapping):
            return None
        doc = doc.get(key)
    return doc


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _container(row: Any) -> dict[str, Any]:
    slots = row.occupied_slots or {}
    stat = row.last_stat or {}
    ended = row.terminated_at
    gpu = sum(_number(v) for k, v in slots.items() if k.startswith("cuda."))
    mounts = row.vfolder_mounts or []
    nfs = sorted({str(m["name"]) for m in mounts if isinstance(m, Mapping) and m.get("name")})
    return {
        "id": str(row.id), "session_id": str(row.session_id), "container_id": row.container_id,
        "domain_name": row.domain_name, "group_id": str(row.group_id), "group_name": row.group_name,
        "name": row.session_name, "access_key": row.access_key, "email": row.email,
        "full_name": row.full_name, "agent": row.agent,
        "cpu_allocated": _number(slots.get("cpu", 0)),
        "cpu_used": _number(_get(stat, "cpu_used", "current")),
        "mem_allocated": int(_number(slots.get("mem", 0))),
        "mem_used": int(_number(_get(stat, "mem", "capacity"))),
        "shared_memory": int(_number(_get(row.resource_opts, "shmem"))),
        "disk_allocated": 0, "disk_used": 0,
        "io_read": int(_number(_get(stat, "io_read", "current"))),
        "io_write": int(_number(_get(stat, "io_write", "current"))),
        "used_time": None if ended is None else str(ended - row.created_at),
        "used_days": None if ended is None else ended.toordinal() - row.created_at.toordinal() + 1,
        "device_type": [], "smp": 0.0, "gpu_mem_allocated": 0.0, "gpu_allocated": gpu,
        "nfs": nfs or None, "image_id": row.image, "image_name": row.image,
        "created_at": str(row.created_at), "terminated_at": str(ended),
        "status": row.status, "status_info": row.status_info, "status_changed": str(row.status_changed),
        "status_history": row.status_history or {}, "cluster_mode": row.cluster_mode,
    }


_SUMMED = (("g_cpu_allocated", "cpu_allocated"), ("g_cpu_used", "cpu_used"), ("g_mem_allocated", "mem_allocated"),
           ("g_mem_used", "mem_used"), ("g_shared_memory", "shared_memory"), ("g_disk_allocated", "disk_allocated"),
           ("g_disk_used", "disk_used"), ("g_io_read", "io_read"), ("g_io_write", "io_write"), ("g_smp", "smp"),
           ("g_gpu_mem_allocated", "gpu_mem_allocated"), ("g_gpu_allocated", "gpu_allocated"))


async def usage_report(ctx: ManagerContext, req: Requester, start: datetime, end: datetime,
                       group_ids: tuple[uuid.UUID, ...] | None) -> list[dict[str, Any]]:
    """Per project, its totals and one entry per kernel that ran in ``[start, end)`` (the
    original's shape, which the official client's ``admin resource usage-per-*`` prints)."""
    async with ctx.db.connect() as conn:
        rows = await store.kernels_in_period(conn, _report_scope(req, group_ids), start, end)
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        c = _container(row)
        g = groups.get(c["group_id"])
        if g is None:
            g = groups[c["group_id"]] = {"domain_name": c["domain_name"], "g_id": c["group_id"],
                                         "g_name": c["group_name"], "g_device_type": [], "c_infos": [],
                                         **{gk: 0 for gk, _ in _SUMMED}}
        for gk, ck in _SUMMED:
            g[gk] += c[ck]
        g["c_infos"].append(c)
    return list(groups.values())
