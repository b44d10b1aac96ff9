"""Agent rows: heartbeats, liveness and the slots each agent has left."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from bai.common.types import ResourceSlots, slots_from_json, slots_to_json

from . import filters as qf
from . import tables as t

OCCUPYING_KERNEL_STATUSES = ("SCHEDULED", "PREPARING", "PULLING", "RUNNING", "RESTARTING", "TERMINATING")


#: An agent whose protocol version the manager cannot work with (bai.common.protocol): it is
#: recorded with its heartbeats, shown with the reason, and nothing is scheduled onto it.
INCOMPATIBLE = "INCOMPATIBLE"
#: ``agents.version`` holds the agent's version and its protocol version: "0.1.0;protocol=1.1".
_PROTOCOL_SUFFIX = ";protocol="


def encode_version(version: str | None, protocol: str) -> str:
    return f"{(version or '')[:40]}{_PROTOCOL_SUFFIX}{protocol[:16]}"


def decode_version(stored: str | None) -> tuple[str | None, str | None]:
    """``(version, protocol)`` of an ``agents.version`` value (protocol None: recorded before
    protocol versions were)."""
    if not stored or _PROTOCOL_SUFFIX not in stored:
        return stored, None
    version, _, protocol = stored.rpartition(_PROTOCOL_SUFFIX)
    return version or None, protocol


async def upsert_heartbeat(conn: AsyncConnection, agent_id: str, info: dict[str, Any], *,
                           protocol: str | None = None, status: str = "ALIVE") -> bool:
    """Record a heartbeat; return True when the agent is new or came back from LOST."""
    now = datetime.now(UTC)
    prev = await conn.scalar(sa.select(t.agents.c.status).where(t.agents.c.id == agent_id))
    version = info.get("version") if protocol is None else encode_version(info.get("version"), protocol)
    values = dict(
        status=status, region=info.get("region"), scaling_group=info.get("scaling_group") or "default",
        available_slots=info.get("resource_slots") or {}, addr=info["addr"],
        architecture=info.get("architecture") or "x86_64", version=version,
        compute_plugins=info.get("compute_plugins") or {}, lost_at=None, last_seen=now,
    )
    stmt = insert(t.agents).values(id=agent_id, status_changed=now, **values)
    update = dict(values)
    if prev != status:
        update["status_changed"] = now
    await conn.execute(stmt.on_conflict_do_update(index_elements=[t.agents.c.id], set_=update))
    return prev != status


async def mark_terminated(conn: AsyncConnection, agent_id: str) -> None:
    await conn.execute(t.agents.update().where(t.agents.c.id == agent_id).values(
        status="TERMINATED", status_changed=datetime.now(UTC)))


async def mark_lost(conn: AsyncConnection, max_silence: float) -> list[str]:
    """Mark ALIVE agents whose last heartbeat is older than ``max_silence`` seconds as LOST."""
    now = datetime.now(UTC)
    rows = await conn.execute(
        t.agents.update()
        .where(t.agents.c.status.in_(("ALIVE", INCOMPATIBLE)),
               t.agents.c.last_seen < now - timedelta(seconds=max_silence))
        .values(status="LOST", status_changed=now, lost_at=now)
        .returning(t.agents.c.id)
    )
    return [r.id for r in rows]


async def occupied_slots(conn: AsyncConnection, agent_id: str) -> ResourceSlots:
    rows = await conn.execute(
        sa.select(t.kernels.c.requested_slots).where(
            t.kernels.c.agent == agent_id, t.kernels.c.status.in_(OCCUPYING_KERNEL_STATUSES)
        )
    )
    total: ResourceSlots = {}
    for (slots,) in rows:
        for k, v in slots_from_json(slots).items():
            total[k] = total.get(k, Decimal(0)) + v
    return total


async def refresh_occupied(conn: AsyncConnection, agent_id: str) -> None:
    await set_occupied_slots(conn, agent_id, await occupied_slots(conn, agent_id))


async def set_occupied_slots(conn: AsyncConnection, agent_id: str, slots: ResourceSlots) -> None:
    await conn.execute(t.agents.update().where(t.agents.c.id == agent_id).values(occupied_slots=slots_to_json(slots)))


async def refresh_all_occupied(conn: AsyncConnection) -> list[str]:
    """``refresh_occupied`` for every agent, whatever its status (the original's recalculate-usage:
    a lost agent's leftovers are zeroed too). The rows are locked in id order, as the scheduler
    locks them, so a placement running meanwhile waits instead of being overwritten."""
    ids = list((await conn.execute(sa.select(t.agents.c.id).order_by(t.agents.c.id).with_for_update())).scalars())
    for agent_id in ids:
        await refresh_occupied(conn, agent_id)
    return ids


async def alive_in_group(conn: AsyncConnection, scaling_group: str, architecture: str,
                         lock: bool = False) -> list[sa.Row[Any]]:
    q = sa.select(t.agents).where(
        t.agents.c.status == "ALIVE", t.agents.c.schedulable.is_(True),
        t.agents.c.scaling_group == scaling_group, t.agents.c.architecture == architecture,
    ).order_by(t.agents.c.id)
    if lock:
        q = q.with_for_update()
    return list((await conn.execute(q)).all())


async def capacities_in_group(conn: AsyncConnection, scaling_group: str, architecture: str) -> list[ResourceSlots]:
    """``available_slots`` of every ALIVE agent of the group for the architecture (schedulable or
    not: an excluded agent may be included again)."""
    rows = await conn.execute(sa.select(t.agents.c.available_slots).where(
        t.agents.c.status == "ALIVE", t.agents.c.scaling_group == scaling_group,
        t.agents.c.architecture == architecture))
    return [slots_from_json(slots) for (slots,) in rows]


async def capacities_with_plugins_in_group(conn: AsyncConnection, scaling_group: str, architecture: str,
                                           only: Collection[str] | None = None
                                           ) -> list[tuple[ResourceSlots, Any]]:
    """As :func:`capacities_in_group`, each with the agent's ``compute_plugins`` (per-device
    capacities of single-device slots: scheduling/devices.py); of the agents ``only`` when given."""
    q = sa.select(t.agents.c.available_slots, t.agents.c.compute_plugins).where(
        t.agents.c.status == "ALIVE", t.agents.c.scaling_group == scaling_group,
        t.agents.c.architecture == architecture)
    if only is not None:
        q = q.where(t.agents.c.id.in_(list(only)))
    rows = await conn.execute(q)
    return [(slots_from_json(slots), plugins) for slots, plugins in rows]


async def known_slot_types(conn: AsyncConnection) -> set[str]:
    rows = await conn.execute(sa.select(t.agents.c.available_slots).where(t.agents.c.status == "ALIVE"))
    names = {"cpu", "mem"}
    for (slots,) in rows:
        names.update(slots)
    return names



async def alive_addrs(conn: AsyncConnection) -> list[tuple[str, str]]:
    """``(id, RPC address)`` of every ALIVE agent."""
    rows = await conn.execute(sa.select(t.agents.c.id, t.agents.c.addr).where(t.agents.c.status == "ALIVE")
                              .order_by(t.agents.c.id))
    return [(r.id, r.addr) for r in rows]


# ------------------------------------------------------------------ GraphQL reads

AGENT_STATUSES = frozenset({"ALIVE", "LOST", "RESTARTING", "TERMINATED", INCOMPATIBLE})
_a = t.agents.c

#: What an agent_list ``filter`` / ``order`` may name.
AGENT_FIELDS: dict[str, qf.Field] = {
    "id": qf.Field(_a.id, "str"),
    "status": qf.enum(_a.status, AGENT_STATUSES),
    "status_changed": qf.Field(_a.status_changed, "datetime"),
    "region": qf.Field(_a.region, "str"),
    "scaling_group": qf.Field(_a.scaling_group, "str"),
    "schedulable": qf.Field(_a.schedulable, "bool"),
    "addr": qf.Field(_a.addr, "str"),
    "architecture": qf.Field(_a.architecture, "str"),
    "version": qf.Field(_a.version, "str"),
    "first_contact": qf.Field(_a.first_contact, "datetime"),
    "lost_at": qf.Field(_a.lost_at, "datetime"),
}

_container_count = (
    sa.select(sa.func.count()).select_from(t.kernels)
    .where(t.kernels.c.agent == _a.id, t.kernels.c.status.in_(OCCUPYING_KERNEL_STATUSES))
    .scalar_subquery()
)


async def agent_page(
    conn: AsyncConnection, *, limit: int, offset: int, scaling_group: str | None = None,
    statuses: Sequence[str] | None = None, filter_: str | None = None, order: str | None = None,
) -> tuple[list[sa.Row[Any]], int]:
    """One page of agents (with their count of resource-holding kernels) and the total count. A
    bad ``filter_`` or ``order`` raises QueryError before any SQL runs."""
    conds: list[sa.ColumnElement[bool]] = []
    if scaling_group is not None:
        conds.append(_a.scaling_group == scaling_group)
    if statuses is not None:
        conds.append(_a.status.in_(list(statuses)))
    if filter_ is not None:
        conds.append(qf.where(filter_, AGENT_FIELDS))
    ordering = [*qf.order_by(order, AGENT_FIELDS), _a.id] if order else [_a.id]
    total = await conn.scalar(sa.select(sa.func.count()).select_from(t.agents).where(*conds))
    q = (sa.select(t.agents, _container_count.label("container_count"))
         .where(*conds).order_by(*ordering).limit(limit).offset(offset))
    return list((await conn.execute(q)).all()), int(total or 0)


# ------------------------------------------------------------------ superadmin writes and capacity

async def modify_agent(conn: AsyncConnection, agent_id: str, values: dict[str, Any]) -> bool:
    """Whether the agent exists (it is changed when ``values`` has anything)."""
    if not values:
        return bool(await conn.scalar(sa.select(sa.func.count()).select_from(t.agents).where(_a.id == agent_id)))
    return (await conn.execute(t.agents.update().where(_a.id == agent_id).values(**values))).rowcount > 0


class Placement(NamedTuple):
    """What moving an agent to another resource group needs to know of it."""

    status: str
    addr: str
    scaling_group: str


async def placement(conn: AsyncConnection, agent_id: str) -> Placement | None:
    row = (await conn.execute(sa.select(_a.status, _a.addr, _a.scaling_group).where(_a.id == agent_id))).first()
    return None if row is None else Placement(str(row.status), str(row.addr), str(row.scaling_group))


async def free_capacity(conn: AsyncConnection, scaling_groups: Sequence[str]) -> dict[str, list[ResourceSlots]]:
    """Per resource group, the free slots (available - occupied) of each ALIVE, schedulable agent."""
    rows = await conn.execute(
        sa.select(_a.scaling_group, _a.available_slots, _a.occupied_slots)
        .where(_a.status == "ALIVE", _a.schedulable.is_(True), _a.scaling_group.in_(list(scaling_groups)))
        .order_by(_a.id))
    free: dict[str, list[ResourceSlots]] = {name: [] for name in scaling_groups}
    for row in rows:
        available, occupied = slots_from_json(row.available_slots), slots_from_json(row.occupied_slots)
        free[row.scaling_group].append(
            {k: v - occupied.get(k, Decimal(0)) for k, v in available.items()})
    return free


async def existing_ids(conn: AsyncConnection, agent_ids: Sequence[str]) -> set[str]:
    return set((await conn.scalars(sa.select(_a.id).where(_a.id.in_(list(agent_ids))))).all())


async def set_schedulable(conn: AsyncConnection, agent_ids: Sequence[str], schedulable: bool) -> None:
    await conn.execute(t.agents.update().where(_a.id.in_(list(agent_ids))).values(schedulable=schedulable))


async def agent_row(conn: AsyncConnection, agent_id: str) -> sa.Row[Any] | None:
    """One agent as ``agent_page`` gives it (with its count of resource-holding kernels)."""
    q = sa.select(t.agents, _container_count.label("container_count")).where(_a.id == agent_id)
    return (await conn.execute(q)).first()


# ------------------------------------------------------------------ scheduling pass (bulk reads and writes)

async def scheduler_settings(conn: AsyncConnection, scaling_groups: Sequence[str]) -> dict[str, Any]:
    """``scheduler`` and ``scheduler_opts`` of the given active resource groups, by name."""
    sg = t.scaling_groups.c
    rows = await conn.execute(sa.select(sg.name, sg.scheduler, sg.scheduler_opts)
                              .where(sg.name.in_(list(scaling_groups)), sg.is_active.is_(True)))
    return {r.name: r for r in rows}


async def schedulable_in_groups(conn: AsyncConnection, scaling_groups: Sequence[str],
                                lock: bool = False) -> list[Any]:
    """ALIVE, schedulable agents of the given groups (any architecture), by id."""
    q = sa.select(_a.id, _a.addr, _a.scaling_group, _a.architecture, _a.available_slots, _a.compute_plugins).where(
        _a.status == "ALIVE", _a.schedulable.is_(True), _a.scaling_group.in_(list(scaling_groups)),
    ).order_by(_a.id)
    if lock:
        q = q.with_for_update()
    return list((await conn.execute(q)).all())


async def occupied_by_agent(conn: AsyncConnection, agent_ids: Sequence[str]) -> dict[str, ResourceSlots]:
    """What the resource-holding kernels on each of ``agent_ids`` requested, in one query."""
    return (await occupancy_by_agent(conn, agent_ids))[0]


async def occupancy_by_agent(conn: AsyncConnection, agent_ids: Sequence[str]
                             ) -> tuple[dict[str, ResourceSlots], dict[str, int]]:
    """What the resource-holding kernels on each of ``agent_ids`` requested, and how many they
    are (the agent's containers), in one query."""
    out: dict[str, ResourceSlots] = {a: {} for a in agent_ids}
    counts = dict.fromkeys(agent_ids, 0)
    rows = await conn.execute(sa.select(t.kernels.c.agent, t.kernels.c.requested_slots).where(
        t.kernels.c.agent.in_(list(agent_ids)), t.kernels.c.status.in_(OCCUPYING_KERNEL_STATUSES)))
    for agent, slots in rows:
        counts[agent] += 1
        total = out[agent]
        for k, v in slots_from_json(slots).items():
            total[k] = total.get(k, Decimal(0)) + v
    return out, counts


async def unconfirmed_by_agent(conn: AsyncConnection, agent_ids: Sequence[str], margin: timedelta
                               ) -> dict[str, list[ResourceSlots]]:
    """What each agent's last heartbeat may not show yet (scheduling/devices.py): the slots of
    each of its resource-holding kernels that is not RUNNING, or RUNNING only since ``margin``
    before that heartbeat was recorded, in one query."""
    out: dict[str, list[ResourceSlots]] = {a: [] for a in agent_ids}
    k = t.kernels.c
    rows = await conn.execute(
        sa.select(k.agent, k.requested_slots).select_from(t.kernels.join(t.agents, _a.id == k.agent)).where(
            k.agent.in_(list(agent_ids)), k.status.in_(OCCUPYING_KERNEL_STATUSES),
            sa.or_(k.status != "RUNNING", k.status_changed.is_(None), _a.last_seen.is_(None),
                   k.status_changed >= _a.last_seen - margin)))
    for agent, slots in rows:
        out[agent].append(slots_from_json(slots))
    return out


async def set_occupied_slots_many(conn: AsyncConnection, occupied: dict[str, ResourceSlots]) -> None:
    if occupied:
        await conn.execute(t.agents.update().where(_a.id == sa.bindparam("aid")).values(
            occupied_slots=sa.bindparam("slots")),
            [{"aid": a, "slots": slots_to_json(s)} for a, s in occupied.items()])
