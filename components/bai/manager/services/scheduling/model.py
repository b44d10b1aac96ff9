"""What one scheduling pass knows: pending sessions, agents with their free capacity, owners'
limits and the occupancy that counts against them. Loaded once per pass, in bulk."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from bai.common.types import ResourceSlots

from .dependencies import Dependency
from .devices import OneDeviceFree, fits_devices

INFINITY = Decimal("Infinity")


def add_slots(total: ResourceSlots, more: ResourceSlots) -> None:
    for slot, amount in more.items():
        total[slot] = total.get(slot, Decimal(0)) + amount


@dataclass
class PendingSession:
    id: uuid.UUID
    name: str
    access_key: str
    user_uuid: uuid.UUID
    group_id: uuid.UUID
    domain_name: str
    scaling_group: str
    architecture: str
    session_type: str
    created_at: datetime
    starts_at: datetime | None
    requested: ResourceSlots
    status_info: str | None
    status_data: dict[str, Any]
    cluster_mode: str = "single-node"
    cluster_size: int = 1
    #: the image's canonical name (where it may run: scheduling/images.py)
    image: str = ""

    @property
    def is_multi_node(self) -> bool:
        return self.cluster_mode == "multi-node" and self.cluster_size > 1

    def per_kernel(self) -> ResourceSlots:
        """What each kernel asks for (``requested`` is the session's total; kernels are alike)."""
        size = max(self.cluster_size, 1)
        return {k: v / size for k, v in self.requested.items()}

    @property
    def retries(self) -> int:
        value = (self.status_data.get("scheduler") or {}).get("retries", 0)
        return value if isinstance(value, int) else 0

    @property
    def is_private(self) -> bool:
        """System (SFTP) sessions: counted apart and exempt from the resource-limit predicates."""
        return self.session_type == "system"


@dataclass
class AgentCapacity:
    id: str
    addr: str
    available: ResourceSlots
    occupied: ResourceSlots
    #: its kernels (containers) now, and the most it may have (etcd ``config/agent/max-container-count``)
    containers: int = 0
    max_containers: int | None = None
    #: Slots one kernel takes from one device, with what each device has free (scheduling/devices.py).
    one_device: dict[str, OneDeviceFree] = field(default_factory=dict)

    def free(self) -> ResourceSlots:
        return {k: v - self.occupied.get(k, Decimal(0)) for k, v in self.available.items()}

    def has_room_for(self, kernels: int) -> bool:
        return self.max_containers is None or self.containers + kernels <= self.max_containers

    def fits(self, request: ResourceSlots, kernels: int = 1) -> bool:
        return self.fits_total(request, kernels) and self.fits_devices(request, kernels)

    def fits_total(self, request: ResourceSlots, kernels: int = 1) -> bool:
        """Room for ``request`` by the agent's totals (not asking whether single devices hold it)."""
        free = self.free()
        return self.has_room_for(kernels) and all(
            amount <= free.get(slot, Decimal(0)) for slot, amount in request.items() if amount > 0)

    def fits_devices(self, request: ResourceSlots, kernels: int = 1) -> bool:
        return not self.one_device or fits_devices(self.one_device, request, kernels)

    def reserve(self, request: ResourceSlots, kernels: int = 1) -> None:
        add_slots(self.occupied, request)
        self.containers += kernels
        for slot, state in self.one_device.items():
            state.take(request.get(slot, Decimal(0)), kernels)

    def unreserve(self, request: ResourceSlots, kernels: int = 1) -> None:
        for slot, amount in request.items():
            self.occupied[slot] = self.occupied.get(slot, Decimal(0)) - amount
            if slot in self.one_device:
                self.one_device[slot].give_back(amount, kernels)
        self.containers -= kernels


@dataclass(frozen=True)
class SlotLimits:
    """Per-slot maxima; a slot not listed is unlimited, or 0 when ``unspecified_is_zero``
    (a keypair policy's ``default_for_unspecified = LIMITED``)."""

    slots: ResourceSlots
    unspecified_is_zero: bool = False

    def limit(self, slot: str) -> Decimal:
        if slot in self.slots:
            return self.slots[slot]
        return Decimal(0) if self.unspecified_is_zero else INFINITY

    def exceeded(self, used: ResourceSlots, request: ResourceSlots) -> bool:
        return any(used.get(slot, Decimal(0)) + amount > self.limit(slot)
                   for slot, amount in request.items() if amount > 0)


@dataclass(frozen=True)
class OwnerLimits:
    """A keypair's policy, and that of its user's main keypair (``user_resource_limit``)."""

    access_key: str
    policy_name: str
    keypair: SlotLimits
    main_keypair: SlotLimits
    max_concurrent_sessions: int
    max_concurrent_sftp_sessions: int
    max_pending_session_count: int | None
    max_pending_session_resource_slots: ResourceSlots | None


@dataclass
class Ledger:
    """Occupancy by keypair, user, project and domain, and live-session counts per keypair;
    updated as the pass schedules sessions so later decisions see earlier ones."""

    by_keypair: dict[str, ResourceSlots] = field(default_factory=dict)
    by_user: dict[uuid.UUID, ResourceSlots] = field(default_factory=dict)
    by_group: dict[uuid.UUID, ResourceSlots] = field(default_factory=dict)
    by_domain: dict[str, ResourceSlots] = field(default_factory=dict)
    sessions: dict[str, int] = field(default_factory=dict)
    sftp_sessions: dict[str, int] = field(default_factory=dict)

    def add(self, access_key: str, user: uuid.UUID, group: uuid.UUID, domain: str, slots: ResourceSlots,
            private: bool) -> None:
        add_slots(self.by_keypair.setdefault(access_key, {}), slots)
        add_slots(self.by_user.setdefault(user, {}), slots)
        add_slots(self.by_group.setdefault(group, {}), slots)
        add_slots(self.by_domain.setdefault(domain, {}), slots)
        counts = self.sftp_sessions if private else self.sessions
        counts[access_key] = counts.get(access_key, 0) + 1


@dataclass
class Snapshot:
    """Everything the predicates read, for every pending session of the pass."""

    now: datetime
    owners: dict[str, OwnerLimits]
    group_limits: dict[uuid.UUID, SlotLimits]
    domain_limits: dict[str, SlotLimits]
    ledger: Ledger
    #: Each keypair's PENDING sessions, oldest first (the pending-session limits' view).
    pending_by_keypair: dict[str, list[PendingSession]]
    #: Sessions scheduled earlier in this pass (no longer pending).
    scheduled: set[uuid.UUID] = field(default_factory=set)
    #: The sessions each pending session depends on, as they are now (``dependencies``).
    dependencies: dict[uuid.UUID, list[Dependency]] = field(default_factory=dict)


def humanize(slot: str, amount: Decimal) -> str:
    """``mem=8g`` rather than 8589934592 in the messages users read."""
    if amount.is_infinite():
        return "Infinity"
    if slot == "mem" or slot.endswith(".mem"):
        for suffix, unit in (("t", 2**40), ("g", 2**30), ("m", 2**20), ("k", 2**10)):
            if amount >= unit and amount % unit == 0:
                return f"{int(amount // unit)}{suffix}"
    return str(int(amount)) if amount == amount.to_integral_value() else str(amount.normalize())


def describe(limits: SlotLimits, slots: ResourceSlots) -> str:
    """The limits that matter for ``slots``, as ``cpu=4 mem=8g``."""
    names = sorted(set(limits.slots) | {s for s, v in slots.items() if v > 0})
    return " ".join(f"{s}={humanize(s, limits.limit(s))}" for s in names)
