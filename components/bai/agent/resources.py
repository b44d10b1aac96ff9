"""Flat slot accounting (the dummy backend's): what each kernel holds, checked against a capacity.
The Docker agent allocates through the compute plugins instead (:mod:`.compute`)."""

from __future__ import annotations

from decimal import Decimal

from bai.common.types import INTRINSIC_SLOTS, ResourceSlots


class InsufficientResources(Exception):
    pass


class SlotAllocator:
    """What each kernel holds, checked against the capacity (the manager schedules, but the agent
    still refuses to overcommit, as the original's alloc maps do)."""

    def __init__(self, capacity: ResourceSlots) -> None:
        self.capacity = dict(capacity)
        self._held: dict[str, ResourceSlots] = {}

    def used(self) -> ResourceSlots:
        total = {k: Decimal(0) for k in self.capacity}
        for slots in self._held.values():
            for key, value in slots.items():
                total[key] = total.get(key, Decimal(0)) + value
        return total

    def allocate(self, kernel_id: str, requested: ResourceSlots) -> ResourceSlots:
        slots = {k: v for k, v in requested.items() if v != 0 or k in INTRINSIC_SLOTS}
        unknown = [k for k in slots if k not in self.capacity]
        if unknown:
            raise InsufficientResources(f"this agent has no slot type {', '.join(sorted(unknown))}")
        used = self.used()
        for key, value in slots.items():
            if value < 0:
                raise InsufficientResources(f"negative amount for slot {key}")
            if used[key] + value > self.capacity[key]:
                raise InsufficientResources(
                    f"not enough {key}: requested {value}, free {self.capacity[key] - used[key]}"
                )
        self._held[kernel_id] = slots
        return slots

    def restore(self, kernel_id: str, slots: ResourceSlots) -> None:
        """Re-adopted kernels hold what they held before, even if that now overcommits."""
        self._held[kernel_id] = dict(slots)

    def release(self, kernel_id: str) -> None:
        self._held.pop(kernel_id, None)
