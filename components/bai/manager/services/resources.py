"""What the caller may still allocate: the resource presets (GET /resource/presets) and, for
POST /resource/check-presets, the keypair's limits, use and remainder, the free capacity of each
resource group the caller may use, and which presets fit (the original's ``check_presets``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from bai.common.types import ResourceSlots, slots_from_json
from bai.manager import errors
from bai.manager.store import agents as agent_store
from bai.manager.store import keypairs as keypair_store
from bai.manager.store import policies as policy_store
from bai.manager.store import presets as preset_store
from bai.manager.store import scaling_groups as sgroup_store
from bai.manager.store import usage as usage_store
from bai.manager.store.keypairs import Requester

from . import admin_inputs
from .context import ManagerContext
from .privileges import require_superadmin_write

INF = Decimal("Infinity")
NAN = Decimal("NaN")


def _fmt(amount: Decimal) -> str:
    """The original's slot serialisation: ``"Infinity"``, ``"NaN"``, integers without decimals."""
    if amount.is_nan():
        return "NaN"
    if amount.is_infinite():
        return "Infinity" if amount > 0 else "-Infinity"
    return str(int(amount)) if amount == amount.to_integral_value() else str(amount.normalize())


def _wire(slots: Mapping[str, Decimal], known: Iterable[str]) -> dict[str, str]:
    """Every known slot, missing ones as 0; unknown ones dropped."""
    return {k: _fmt(slots.get(k, Decimal(0))) for k in known}


def _known_order(known: set[str]) -> list[str]:
    return sorted(known, key=lambda k: (k not in ("cpu", "mem"), k))


def _sub(a: Mapping[str, Decimal], b: Mapping[str, Decimal], known: Iterable[str]) -> ResourceSlots:
    return {k: a.get(k, Decimal(0)) - b.get(k, Decimal(0)) for k in known}


def _min(*maps: Mapping[str, Decimal], known: Iterable[str]) -> ResourceSlots:
    return {k: min(m.get(k, INF) for m in maps) for k in known}


def _fits(free: Mapping[str, Decimal], wanted: Mapping[str, Decimal]) -> bool:
    return all(free.get(k, Decimal(0)) >= v for k, v in wanted.items())


def _preset_slots(raw: Mapping[str, str] | None, known: Iterable[str]) -> ResourceSlots:
    slots = slots_from_json(dict(raw or {}))
    return {k: slots.get(k, Decimal(0)) for k in known}


async def slot_types(ctx: ManagerContext) -> dict[str, str]:
    """Every slot an alive agent offers (and the intrinsic ones), with its type (``count`` or
    ``bytes``), cpu and mem first: the original's ``GET /config/resource-slots``."""
    async with ctx.db.connect() as conn:
        known = _known_order(await agent_store.known_slot_types(conn))
    return {slot: admin_inputs.slot_type(slot) for slot in known}


async def recalculate_usage(ctx: ManagerContext, req: Requester) -> list[str]:
    """Recount what every agent's kernels occupy from the kernel rows (the original's
    ``recalculate-usage``, for when a missed event left an agent's count wrong); the agents
    recounted. A keypair's concurrency needs no recount here: it is always counted from the rows."""
    require_superadmin_write(req)
    async with ctx.db.begin() as conn:
        agents = await agent_store.refresh_all_occupied(conn)
    ctx.request_schedule()  # room freed by the recount may fit a pending session now
    return agents


async def presets(ctx: ManagerContext) -> list[dict[str, Any]]:
    """Every preset, its slots normalised to the known slot set."""
    async with ctx.db.connect() as conn:
        known = _known_order(await agent_store.known_slot_types(conn))
        rows = await preset_store.resource_presets(conn)
    return [{"name": r.name, "shared_memory": None if r.shared_memory is None else str(r.shared_memory),
             "resource_slots": _wire(_preset_slots(r.resource_slots, known), known)} for r in rows]


async def check_presets(ctx: ManagerContext, req: Requester, *, scaling_group: str | None,
                        group: str) -> dict[str, Any]:
    async with ctx.db.connect() as conn:
        known = _known_order(await agent_store.known_slot_types(conn))
        group_id = await keypair_store.resolve_group(conn, req.domain_name, group, req.user_uuid)
        if group_id is None:
            raise errors.InvalidAPIParameters(f"Unknown project (user group): {group!r}")
        allowed = [r.name for r in await sgroup_store.allowed_scaling_groups(
            conn, req.domain_name, group_id, req.access_key)]
        if scaling_group is not None and scaling_group not in allowed:
            raise errors.InvalidAPIParameters(f"Unknown scaling group: {scaling_group!r}")
        names = [scaling_group] if scaling_group is not None else allowed
        (policy,) = await policy_store.keypair_policies(conn, name=req.policy.name)
        keypair_using = await usage_store.occupied(conn, access_key=req.access_key)
        group_limits, domain_limits = await usage_store.slot_limits(conn, group_id, req.domain_name)
        group_using = await usage_store.occupied(conn, group_id=group_id)
        domain_using = await usage_store.occupied(conn, domain_name=req.domain_name)
        sgroup_using = {n: await usage_store.occupied(conn, user_uuid=req.user_uuid, scaling_group=n)
                        for n in names}
        free = await agent_store.free_capacity(conn, names)
        preset_rows = await preset_store.resource_presets(conn)

    unspecified = INF if policy.default_for_unspecified == "UNLIMITED" else Decimal(0)
    explicit = slots_from_json(policy.total_resource_slots)
    keypair_limits = {k: explicit.get(k, unspecified) for k in known}
    # missing project / domain limits mean "unlimited"
    group_remaining = _sub({k: slots_from_json(group_limits).get(k, INF) for k in known}, group_using, known)
    domain_remaining = _sub({k: slots_from_json(domain_limits).get(k, INF) for k in known}, domain_using, known)
    keypair_remaining = _min(_sub(keypair_limits, keypair_using, known), group_remaining, domain_remaining,
                             known=known)

    per_group: dict[str, dict[str, dict[str, str]]] = {}
    total_free: ResourceSlots = {k: Decimal(0) for k in known}
    for name in names:
        group_free: ResourceSlots = {k: Decimal(0) for k in known}
        for agent_free in free[name]:
            for k in known:
                group_free[k] += agent_free.get(k, Decimal(0))
        for k in known:
            total_free[k] += group_free[k]
        per_group[name] = {"using": _wire(sgroup_using[name], known),
                           "remaining": _wire(_min(group_free, keypair_remaining, known=known), known)}

    agents_free = [agent for name in names for agent in free[name]]
    preset_list = []
    for row in preset_rows:
        wanted = _preset_slots(row.resource_slots, known)
        allocatable = _fits(keypair_remaining, wanted) and any(_fits(a, wanted) for a in agents_free)
        preset_list.append({"name": row.name, "resource_slots": _wire(wanted, known),
                            "shared_memory": None if row.shared_memory is None else str(row.shared_memory),
                            "allocatable": allocatable})
    hidden = {k: NAN for k in known}  # project figures are shown only with group_resource_visibility
    return {
        "keypair_limits": _wire(keypair_limits, known),
        "keypair_using": _wire(keypair_using, known),
        "keypair_remaining": _wire(keypair_remaining, known),
        "scaling_group_remaining": _wire(_min(total_free, keypair_remaining, known=known), known),
        "scaling_groups": per_group,
        "presets": preset_list,
        "group_limits": _wire(hidden, known),
        "group_using": _wire(hidden, known),
        "group_remaining": _wire(hidden, known),
    }
