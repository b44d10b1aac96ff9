"""Create-time checks of the scheduling limits (the scheduler's predicates check them again on
every pass, as policies may change while a session waits): ``default_for_unspecified =
LIMITED`` and the keypair's pending-session limits, refused with 412 quota-exceeded as the
original does; and ``starts_at``, parsed once and stored as a time."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncConnection

from bai.common.types import ResourceSlots, slots_from_json
from bai.manager import errors
from bai.manager.store import agents as agent_store
from bai.manager.store import sessions as session_store
from bai.manager.store.keypairs import Requester

from . import devices
from .model import add_slots, humanize
from .starts_at import parse_starts_at


def starts_at_of(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parse_starts_at(value, datetime.now(UTC))
    except ValueError as exc:
        raise errors.InvalidAPIParameters("Input validation error", {"starts_at": str(exc)}) from None


async def check_capacity(conn: AsyncConnection, scaling_group: str, architecture: str,
                         per_kernel: ResourceSlots, cluster_mode: str, cluster_size: int,
                         holders: Collection[str] | None = None, image: str = "") -> None:
    """Refuse (400, naming the slots) a request no ALIVE agent of the resource group could ever
    hold, even empty: a single-node session needs all its kernels on one agent, a multi-node one
    each kernel on some agent, and each kernel's amount of a single-device slot (cuda.shares) must
    fit one device. With no ALIVE agent in the group the session may wait for one. ``holders``:
    the only agents that may take it (``image`` cannot be pulled: scheduling/images.py)."""
    rows = await agent_store.capacities_with_plugins_in_group(conn, scaling_group, architecture, holders)
    if not rows:
        return
    agents_of = f"No agent of resource group {scaling_group!r}" + (
        f" holding the image {image}" if holders is not None else "")
    agents = [slots for slots, _ in rows]
    pieces = 1 if cluster_mode == "multi-node" else max(cluster_size, 1)
    needed = dict(per_kernel) if cluster_mode == "multi-node" else \
        {slot: amount * cluster_size for slot, amount in per_kernel.items()}
    needed = {slot: amount for slot, amount in needed.items() if amount > 0}
    by_total = [(slots, plugins) for slots, plugins in rows
                if all(amount <= slots.get(slot, Decimal(0)) for slot, amount in needed.items())]
    empty = {str(i): devices.one_device_slots_of(plugins, "placement_capacity") for i, (_, plugins) in enumerate(by_total)}
    if any(devices.fits_devices(one, needed, pieces) for one in empty.values()):
        return
    if by_total and (per_device := devices.shortfall_message(empty, needed, pieces, ever=True)) is not None:
        raise errors.InvalidAPIParameters(f"{agents_of} could ever hold this request ({per_device}).")
    largest = {slot: max(agent.get(slot, Decimal(0)) for agent in agents) for slot in needed}
    over = [f"{slot}: {humanize(slot, needed[slot])} > {humanize(slot, largest[slot])}"
            for slot in sorted(needed) if needed[slot] > largest[slot]]
    detail = "; ".join(over) if over else "no single agent has all of " + ", ".join(
        f"{slot}={humanize(slot, needed[slot])}" for slot in sorted(needed))
    raise errors.InvalidAPIParameters(f"{agents_of} could ever hold this request ({detail}).")


async def check_create_limits(conn: AsyncConnection, owner: Requester, request: ResourceSlots) -> None:
    """``request``: the whole session's slots (all kernels)."""
    policy = owner.policy
    if policy.default_for_unspecified == "LIMITED":
        unlisted = sorted(s for s, v in request.items() if v > 0 and s not in policy.total_resource_slots)
        if unlisted:
            raise errors.QuotaExceeded(
                f"The keypair resource policy {policy.name!r} allows none of: {', '.join(unlisted)} "
                "(default_for_unspecified is LIMITED).")
    count_limit, slots_limit = policy.max_pending_session_count, policy.max_pending_session_resource_slots
    if count_limit is None and not slots_limit:
        return  # the common case: no query
    pending = await session_store.pending_requests_of_keypair(conn, owner.access_key)
    if count_limit is not None and len(pending) >= count_limit:
        raise errors.QuotaExceeded(f"You cannot create more than {count_limit} pending session(s).")
    if slots_limit:
        total: ResourceSlots = dict(request)
        for slots in pending:
            add_slots(total, slots_from_json(slots))
        if any(amount > slots_limit[slot] for slot, amount in total.items() if slot in slots_limit):
            raise errors.QuotaExceeded("Your pending session quota is exceeded. ({})".format(
                " ".join(f"{slot}={humanize(slot, slots_limit[slot])}" for slot in sorted(slots_limit)
                         if slots_limit[slot] < Decimal("Infinity"))))
