"""Session and kernel rows: creation, lookup by reference, status transitions."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from bai.common.types import KernelStatus, SessionStatus, SessionTypes

from . import filters as qf
from . import tables as t

DEAD = (SessionStatus.TERMINATED.value, SessionStatus.CANCELLED.value)
#: Every kernel column but the kept container log (up to 1 MiB each), read only on its own.
KERNEL_COLUMNS = tuple(c for c in t.kernels.c if c.name != "container_log")


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


async def session_of_kernel(conn: AsyncConnection, kernel_id: uuid.UUID) -> uuid.UUID | None:
    """The session a kernel belongs to (None: no such kernel)."""
    found: uuid.UUID | None = (await conn.execute(
        sa.select(t.kernels.c.session_id).where(t.kernels.c.id == kernel_id))).scalar()
    return found


async def kernels_of(conn: AsyncConnection, session_id: uuid.UUID) -> list[sa.Row[Any]]:
    q = sa.select(*KERNEL_COLUMNS).where(t.kernels.c.session_id == session_id).order_by(t.kernels.c.cluster_idx)
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


async def rename_running(conn: AsyncConnection, session_id: uuid.UUID, new_name: str) -> bool:
    """Rename a RUNNING session and its kernels; False when it is not RUNNING (any more).
    DuplicateSessionName when the owner has another live session of that name (the unique
    index says so, so two renames cannot race past each other); the transaction is aborted."""
    try:
        changed = await conn.execute(t.sessions.update().where(
            t.sessions.c.id == session_id, t.sessions.c.status == SessionStatus.RUNNING.value).values(name=new_name))
    except IntegrityError as exc:
        if t.UNIQUE_LIVE_SESSION_NAME in str(exc.orig):
            raise DuplicateSessionName(new_name) from exc
        raise
    if not changed.rowcount:
        return False
    await conn.execute(t.kernels.update().where(t.kernels.c.session_id == session_id).values(session_name=new_name))
    return True


async def lock_session(conn: AsyncConnection, session_id: uuid.UUID) -> None:
    """Lock the session's row until the transaction ends (closing takes it before its kernels)."""
    await conn.execute(sa.select(t.sessions.c.id).where(t.sessions.c.id == session_id).with_for_update())


async def set_status_info(conn: AsyncConnection, session_id: uuid.UUID, info: str) -> None:
    await conn.execute(t.sessions.update().where(t.sessions.c.id == session_id).values(status_info=info))


async def set_occupying_slots(conn: AsyncConnection, session_id: uuid.UUID, slots: Any) -> None:
    await conn.execute(t.sessions.update().where(t.sessions.c.id == session_id).values(occupying_slots=slots))


async def note_kernel_exit(conn: AsyncConnection, session_id: uuid.UUID, kernel_id: uuid.UUID,
                           exit_code: int | None, reason: str) -> None:
    """Record on the session which kernel ended it, how, and the result that follows."""
    await conn.execute(t.sessions.update().where(t.sessions.c.id == session_id).values(
        status_data={"kernel": {"id": str(kernel_id), "exit_code": exit_code, "reason": reason}},
        result="FAILURE" if exit_code not in (0, None) else "SUCCESS"))


async def count_query(conn: AsyncConnection, session_id: uuid.UUID) -> None:
    await conn.execute(t.sessions.update().where(t.sessions.c.id == session_id)
                       .values(num_queries=t.sessions.c.num_queries + 1))


async def add_query_counts(conn: AsyncConnection, counts: dict[uuid.UUID, int]) -> None:
    """Add many sessions' execute counts in one statement (and to their main kernels)."""
    if not counts:
        return
    s_, k_ = t.sessions, t.kernels
    delta = sa.values(sa.column("sid", sa.Uuid), sa.column("n", sa.BigInteger), name="delta").data(
        list(counts.items()))
    await conn.execute(s_.update().where(s_.c.id == delta.c.sid).values(num_queries=s_.c.num_queries + delta.c.n))
    await conn.execute(k_.update().where(k_.c.session_id == delta.c.sid, k_.c.cluster_role == "main")
                       .values(num_queries=k_.c.num_queries + delta.c.n))


#: Where a batch session may be when its result comes: RUNNING, or still on its way there when
#: another manager handles the kernel's kernel_started at the same time.
BATCH_RESULT_FROM = ("SCHEDULED", "PREPARING", "PULLING", "RUNNING")


async def set_batch_result(conn: AsyncConnection, session_id: uuid.UUID, result: str) -> bool:
    """A batch session's result, once, while it runs; False when it has ended or is ending
    (a destroy came first) or already has one (a repeated report)."""
    changed = await conn.execute(t.sessions.update().where(
        t.sessions.c.id == session_id, t.sessions.c.status.in_(BATCH_RESULT_FROM),
        t.sessions.c.result == "UNDEFINED").values(result=result))
    if not changed.rowcount:
        return False
    await conn.execute(t.kernels.update().where(t.kernels.c.session_id == session_id).values(result=result))
    return True


async def save_container_log(conn: AsyncConnection, kernel_id: uuid.UUID, text: str) -> None:
    await conn.execute(t.kernels.update().where(t.kernels.c.id == kernel_id).values(container_log=text))


async def container_log(conn: AsyncConnection, session_id: uuid.UUID) -> str | None:
    """The log kept of the session's main kernel (None when none was kept)."""
    q = sa.select(t.kernels.c.container_log).where(
        t.kernels.c.session_id == session_id).order_by(t.kernels.c.cluster_role != "main", t.kernels.c.cluster_idx)
    value: str | None = (await conn.execute(q.limit(1))).scalar()
    return value


# ------------------------------------------------------------------ GraphQL reads

SESSION_RESULTS = frozenset({"UNDEFINED", "SUCCESS", "FAILURE"})
_s = t.sessions.c

#: What a compute_session_list ``filter`` / ``order`` may name.
SESSION_FIELDS: dict[str, qf.Field] = {
    "id": qf.Field(_s.id, "uuid"),
    "session_id": qf.Field(_s.id, "uuid"),
    "type": qf.enum(_s.session_type, (st.value for st in SessionTypes), str.lower),
    "name": qf.Field(_s.name, "str"),
    "image": qf.Field(_s.image, "str"),
    "architecture": qf.Field(_s.architecture, "str"),
    "tag": qf.Field(_s.tag, "str"),
    "domain_name": qf.Field(_s.domain_name, "str"),
    "group_id": qf.Field(_s.group_id, "uuid"),
    "group_name": qf.Field(t.groups.c.name, "str"),
    "user_email": qf.Field(t.users.c.email, "str"),
    "user_id": qf.Field(_s.user_uuid, "uuid"),
    "full_name": qf.Field(t.users.c.full_name, "str"),
    "access_key": qf.Field(_s.access_key, "str"),
    "scaling_group": qf.Field(_s.scaling_group_name, "str"),
    "cluster_mode": qf.enum(_s.cluster_mode, ("single-node", "multi-node"),
                           lambda v: v.lower().replace("_", "-")),
    "cluster_size": qf.Field(_s.cluster_size, "int"),
    "status": qf.enum(_s.status, SessionStatus),
    "status_info": qf.Field(_s.status_info, "str"),
    "result": qf.enum(_s.result, SESSION_RESULTS),
    "created_at": qf.Field(_s.created_at, "datetime"),
    "terminated_at": qf.Field(_s.terminated_at, "datetime"),
    "starts_at": qf.Field(_s.starts_at, "datetime"),
    "scheduled_at": qf.Field(qf.history_time(_s.status_history, "SCHEDULED"), "datetime"),
    "startup_command": qf.Field(_s.startup_command, "str"),
    "num_queries": qf.Field(_s.num_queries, "int"),
}


@dataclass(frozen=True)
class SessionScope:
    """What the caller may see, after role scoping: None means unrestricted."""

    domain_name: str | None = None
    group_id: uuid.UUID | None = None
    access_key: str | None = None


_main = t.kernels.alias("main_kernel")
_listing_from = (
    t.sessions.join(t.groups, t.groups.c.id == _s.group_id)
    .join(t.users, t.users.c.uuid == _s.user_uuid)
    .outerjoin(_main, sa.and_(_main.c.session_id == _s.id, _main.c.cluster_role == "main"))
    .outerjoin(t.keypairs, t.keypairs.c.access_key == _s.access_key)
    .outerjoin(t.keypair_resource_policies,
               t.keypair_resource_policies.c.name == t.keypairs.c.resource_policy)
)
_listing_select = sa.select(
    t.sessions,
    t.groups.c.name.label("group_name"),
    t.users.c.email.label("user_email"),
    t.users.c.full_name.label("full_name"),
    _main.c.id.label("main_kernel_id"),
    _main.c.registry.label("main_registry"),
    _main.c.architecture.label("main_architecture"),
    _main.c.service_ports.label("main_service_ports"),
    t.keypair_resource_policies.c.max_session_lifetime,
).select_from(_listing_from)

#: The original's default: most recently created or terminated first.
DEFAULT_LISTING_ORDER = (sa.func.greatest(_s.created_at, _s.terminated_at).desc(), _s.id)


def _listing_conds(scope: SessionScope, statuses: Sequence[str] | None,
                   filter_: str | None) -> list[sa.ColumnElement[bool]]:
    conds: list[sa.ColumnElement[bool]] = []
    if scope.domain_name is not None:
        conds.append(_s.domain_name == scope.domain_name)
    if scope.group_id is not None:
        conds.append(_s.group_id == scope.group_id)
    if scope.access_key is not None:
        conds.append(_s.access_key == scope.access_key)
    if statuses is not None:
        conds.append(_s.status.in_(list(statuses)))
    if filter_ is not None:
        conds.append(qf.where(filter_, SESSION_FIELDS))
    return conds


async def session_page(
    conn: AsyncConnection, scope: SessionScope, *, limit: int, offset: int,
    statuses: Sequence[str] | None = None, filter_: str | None = None, order: str | None = None,
) -> tuple[list[sa.Row[Any]], int]:
    """One page of sessions (with group, user, main kernel and policy columns) and the total
    count. A bad ``filter_`` or ``order`` raises QueryError before any SQL runs."""
    conds = _listing_conds(scope, statuses, filter_)
    if filter_ is None and order is None:
        # The common listing (`ps`): every condition and the order are on sessions alone, so count
        # and pick the page there and join the other tables for that page's rows only. (The inner
        # joins are on required foreign keys: they neither drop nor repeat a session.)
        total = await conn.scalar(sa.select(sa.func.count()).select_from(t.sessions).where(*conds))
        page = (sa.select(_s.id).where(*conds).order_by(*DEFAULT_LISTING_ORDER)
                .limit(limit).offset(offset).scalar_subquery())
        q = _listing_select.where(_s.id.in_(page)).order_by(*DEFAULT_LISTING_ORDER)
        return list((await conn.execute(q)).all()), int(total or 0)
    ordering = [*qf.order_by(order, SESSION_FIELDS), _s.id] if order else list(DEFAULT_LISTING_ORDER)
    total = await conn.scalar(sa.select(sa.func.count()).select_from(_listing_from).where(*conds))
    q = _listing_select.where(*conds).order_by(*ordering).limit(limit).offset(offset)
    return list((await conn.execute(q)).all()), int(total or 0)


async def session_in_scope(conn: AsyncConnection, session_id: uuid.UUID, scope: SessionScope) -> sa.Row[Any] | None:
    """The session with session_page's columns, or None when absent or outside ``scope``."""
    q = _listing_select.where(_s.id == session_id, *_listing_conds(scope, None, None))
    return (await conn.execute(q.limit(1))).first()


async def kernels_by_session(conn: AsyncConnection, session_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[sa.Row[Any]]]:
    """Every kernel of the given sessions in one query, grouped by session, main kernel first."""
    out: dict[uuid.UUID, list[sa.Row[Any]]] = {sid: [] for sid in session_ids}
    if not session_ids:
        return out
    k = t.kernels.c
    q = (sa.select(*KERNEL_COLUMNS).where(k.session_id.in_(list(session_ids)))
         .order_by(k.session_id, (k.cluster_role != "main"), k.cluster_idx, k.local_rank))
    for row in await conn.execute(q):
        out.setdefault(row.session_id, []).append(row)
    return out


async def count_active(conn: AsyncConnection) -> int:
    """Sessions not yet TERMINATED or CANCELLED, in every domain."""
    return int(await conn.scalar(
        sa.select(sa.func.count()).select_from(t.sessions).where(t.sessions.c.status.not_in(DEAD))) or 0)


async def active_sessions(conn: AsyncConnection) -> list[Any]:
    """``id, name, access_key`` of every session not yet TERMINATED or CANCELLED."""
    return list((await conn.execute(
        sa.select(t.sessions.c.id, t.sessions.c.name, t.sessions.c.access_key)
        .where(t.sessions.c.status.not_in(DEAD)).order_by(t.sessions.c.created_at))).all())


# ------------------------------------------------------------------ scheduling pass (bulk reads and writes)

#: Session statuses whose requested slots count against their owner's limits.
OCCUPYING_SESSION_STATUSES = ("SCHEDULED", "PREPARING", "PULLING", "RUNNING", "RESTARTING", "RUNNING_DEGRADED")


async def scheduling_owners(conn: AsyncConnection, access_keys: Sequence[str]) -> list[Any]:
    """For each active keypair of an active user among ``access_keys``: its resource policy and
    the policy of its user's main keypair (``main_*`` columns; NULL when there is none)."""
    kp, main_kp = t.keypairs, t.keypairs.alias("main_kp")
    pol, main_pol = t.keypair_resource_policies, t.keypair_resource_policies.alias("main_pol")
    q = (
        sa.select(kp.c.access_key, pol.c.name.label("policy_name"), pol.c.default_for_unspecified,
                  pol.c.total_resource_slots, pol.c.max_concurrent_sessions, pol.c.max_concurrent_sftp_sessions,
                  pol.c.max_pending_session_count, pol.c.max_pending_session_resource_slots,
                  main_pol.c.default_for_unspecified.label("main_default_for_unspecified"),
                  main_pol.c.total_resource_slots.label("main_total_resource_slots"))
        .select_from(
            kp.join(t.users, t.users.c.uuid == kp.c.user)
            .join(pol, pol.c.name == kp.c.resource_policy)
            .outerjoin(main_kp, main_kp.c.access_key == t.users.c.main_access_key)
            .outerjoin(main_pol, main_pol.c.name == main_kp.c.resource_policy))
        .where(kp.c.access_key.in_(list(access_keys)), kp.c.is_active.is_(True), t.users.c.status == "active")
    )
    return list((await conn.execute(q)).all())


#: occupancy_totals: GROUPING() of (access_key, user_uuid, group_id, domain_name) -> the dimension
#: a row sums by (a set bit: that column is not grouped on).
_OCCUPANCY_DIMENSIONS = {0b0111: "keypair", 0b1011: "user", 0b1101: "group", 0b1110: "domain"}


async def occupancy_totals(
    conn: AsyncConnection, access_keys: Sequence[str], users: Sequence[uuid.UUID],
    groups: Sequence[uuid.UUID], domains: Sequence[str],
) -> tuple[list[tuple[str, Any, str, Any]], list[Any]]:
    """What resource-holding sessions occupy, summed by PostgreSQL per keypair, user, project and
    domain (only those given): ``(dimension, key, slot, amount)`` rows, whatever the number of
    sessions; and ``(access_key, private, count)`` of the given keypairs' sessions."""
    s = t.sessions
    slot = sa.func.jsonb_each_text(s.c.requested_slots).table_valued("key", "value").lateral("slot")
    dims = (s.c.access_key, s.c.user_uuid, s.c.group_id, s.c.domain_name)
    q = (sa.select(*dims, slot.c.key, sa.func.sum(sa.cast(slot.c.value, sa.Numeric)).label("amount"),
                   sa.func.grouping(*dims).label("dims"))
         .select_from(s.join(slot, sa.true()))
         .where(s.c.status.in_(OCCUPYING_SESSION_STATUSES),
                sa.or_(s.c.access_key.in_(list(access_keys)), s.c.user_uuid.in_(list(users)),
                       s.c.group_id.in_(list(groups)), s.c.domain_name.in_(list(domains))))
         .group_by(sa.func.grouping_sets(*(sa.tuple_(d, slot.c.key) for d in dims))))
    totals = []
    for row in await conn.execute(q):
        dim = _OCCUPANCY_DIMENSIONS[row.dims]
        key = {"keypair": row.access_key, "user": row.user_uuid, "group": row.group_id,
               "domain": row.domain_name}[dim]
        totals.append((dim, key, row.key, row.amount))
    private = s.c.session_type == "system"
    counts = await conn.execute(
        sa.select(s.c.access_key, private.label("private"), sa.func.count().label("count"))
        .where(s.c.status.in_(OCCUPYING_SESSION_STATUSES), s.c.access_key.in_(list(access_keys)))
        .group_by(s.c.access_key, private))
    return totals, list(counts.all())


async def slot_limits_of(conn: AsyncConnection, group_ids: Sequence[uuid.UUID],
                         domains: Sequence[str]) -> tuple[dict[uuid.UUID, Any], dict[str, Any]]:
    """``total_resource_slots`` of the given projects and domains."""
    groups = await conn.execute(sa.select(t.groups.c.id, t.groups.c.total_resource_slots)
                                .where(t.groups.c.id.in_(list(group_ids))))
    doms = await conn.execute(sa.select(t.domains.c.name, t.domains.c.total_resource_slots)
                              .where(t.domains.c.name.in_(list(domains))))
    return {r.id: r.total_resource_slots for r in groups}, {r.name: r.total_resource_slots for r in doms}


async def mark_scheduled(conn: AsyncConnection,
                         placements: Sequence[tuple[uuid.UUID, str, str, dict[str, Any]]],
                         kernel_agents: Sequence[tuple[uuid.UUID, int, str, str]] = ()) -> None:
    """PENDING -> SCHEDULED for each ``(session id, agent id, agent address, status_data)``, with
    all the session's kernels on that agent -- except the kernels ``kernel_agents`` places one by
    one (multi-node sessions: ``(session id, local rank, agent id, agent address)``). Two
    statements (three with multi-node sessions), whatever the number of sessions: each takes its
    per-row values from one JSON object keyed by id (a row-per-parameter executemany cost about
    half a millisecond per session at 2,000)."""
    if not placements:
        return
    now = datetime.now(UTC)
    k = t.kernels.c
    scheduled = dict(status="SCHEDULED", status_changed=now, status_history=sa.func.jsonb_set(
        k.status_history, sa.text("'{SCHEDULED}'"), sa.func.to_jsonb(now.isoformat())))
    if kernel_agents:
        by_rank = {f"{sid}/{rank}": [agent, addr] for sid, rank, agent, addr in kernel_agents}
        key = sa.cast(k.session_id, sa.Text) + "/" + sa.cast(k.local_rank, sa.Text)
        await conn.execute(t.kernels.update().where(
            k.session_id == _any_of("mn_sids", {sid for sid, *_ in kernel_agents}), k.status == "PENDING").values(
            agent=_json_arg("by_rank", by_rank, key, 0), agent_addr=_json_arg("by_rank", by_rank, key, 1),
            **scheduled))
    by_session = {str(sid): [agent, addr] for sid, agent, addr, _ in placements}
    key = sa.cast(k.session_id, sa.Text)
    await conn.execute(t.kernels.update().where(
        k.session_id == _any_of("k_sids", [sid for sid, *_ in placements]), k.status == "PENDING").values(
        agent=_json_arg("by_session", by_session, key, 0), agent_addr=_json_arg("by_session", by_session, key, 1),
        **scheduled))
    data = _jsonb_arg("data", {str(sid): d for sid, _, _, d in placements})
    await conn.execute(
        t.sessions.update().where(t.sessions.c.id == _any_of("s_sids", [sid for sid, *_ in placements]),
                                  t.sessions.c.status == "PENDING")
        .values(status="SCHEDULED", status_info="scheduled", status_data=data[sa.cast(t.sessions.c.id, sa.Text)],
                status_history=_history("SCHEDULED", now)))


def _json_arg(name: str, values: dict[str, list[str]], key: sa.ColumnElement[Any], idx: int) -> Any:
    """``values[key][idx]`` as text, ``values`` being one JSONB parameter."""
    return _jsonb_arg(name, values)[key][idx].astext


def _any_of(name: str, ids: Iterable[uuid.UUID]) -> Any:
    """``= ANY(<one array parameter>)``: any number of ids, one parameter (IN would take one each)."""
    return sa.any_(sa.bindparam(name, list(ids), type_=ARRAY(UUID(as_uuid=True))))


def _jsonb_arg(name: str, values: Any) -> Any:
    # the cast makes the parameter an expression, so [key] is JSONB subscripting, not an array type
    return sa.cast(sa.bindparam(name, values, type_=JSONB), JSONB)


async def note_unscheduled(conn: AsyncConnection, notes: Sequence[tuple[uuid.UUID, str, dict[str, Any]]]) -> None:
    """Why each ``(session id, status_info, status_data)`` stays PENDING, in one statement."""
    if not notes:
        return
    by_session = _jsonb_arg("notes", {str(sid): [info, data] for sid, info, data in notes})
    key = sa.cast(t.sessions.c.id, sa.Text)
    await conn.execute(
        t.sessions.update().where(t.sessions.c.id == _any_of("n_sids", [sid for sid, *_ in notes]),
                                  t.sessions.c.status == "PENDING")
        .values(status_info=by_session[key][0].astext, status_data=by_session[key][1]))


async def pending_requests_of_keypair(conn: AsyncConnection, access_key: str) -> list[Any]:
    """``requested_slots`` of the keypair's PENDING non-system sessions."""
    s = t.sessions.c
    q = sa.select(s.requested_slots).where(s.access_key == access_key, s.status == "PENDING",
                                           s.session_type != "system")
    return list((await conn.scalars(q)).all())
