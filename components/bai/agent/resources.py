"""Slot accounting: the host's capacity (cpu count, memory, minus the reserve) and what kernels hold."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

from bai.common.types import INTRINSIC_SLOTS, ResourceSlots


class InsufficientResources(Exception):
    pass


def host_cpu_count() -> int:
    # The CPUs this process may run on (respects taskset/cpusets), not the machine's total.
    return len(os.sched_getaffinity(0))


def host_memory(meminfo: Path = Path("/proc/meminfo")) -> int:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("MemTotal missing from /proc/meminfo")


def detect_capacity(reserved_cpu: Decimal, reserved_mem: int) -> ResourceSlots:
    return {
        "cpu": max(Decimal(host_cpu_count()) - reserved_cpu, Decimal(0)),
        "mem": Decimal(max(host_memory() - reserved_mem, 0)),
    }


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
