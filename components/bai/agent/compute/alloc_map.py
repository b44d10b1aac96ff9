"""Alloc maps: which device of a plugin holds how much of which slot.

Two kinds, as the original has:

* :class:`DiscreteAllocMap` hands out whole units per device: CPU cores (capacity 1 each),
  ``cuda.device`` (1 each), MIG slices (``unique`` slots: one unit of one device each).
* :class:`FractionAllocMap` hands out decimal shares of devices (``cuda.shares``), in steps of
  ``quantum``; a request may span several devices.

Both are exact (``Decimal``), never over-allocate through :meth:`allocate`, and are all-or-nothing:
a request that cannot be met in full raises :class:`AllocationError` and changes nothing. Only
:meth:`apply` (re-adopting a container's allocation after an agent restart) may overcommit, since
the container already runs with what it holds.

Strategies: ``"fill"`` packs onto the fewest devices (best fit: the fullest device that still
holds the request), ``"evenly"`` spreads kernels over devices (the emptiest device first; a request
larger than one device is split into equal parts over the fewest devices that hold them).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from decimal import ROUND_DOWN, Decimal
from typing import Literal

from .base import AllocationError, AllocMap, DeviceAllocation, DeviceId, SlotName

Strategy = Literal["fill", "evenly"]
STRATEGIES: tuple[Strategy, ...] = ("fill", "evenly")
_ZERO = Decimal(0)


def device_order(device_id: DeviceId) -> tuple[int, int | str]:
    """Numeric ids ("0", "10") in numeric order, then the rest by name: deterministic choices."""
    return (0, int(device_id)) if re.fullmatch(r"\d+", device_id) else (1, device_id)


def is_whole(value: Decimal) -> bool:
    return value == value.to_integral_value()


class _BaseAllocMap(AllocMap):
    #: True where one kernel's amount of a slot must lie on one device (cuda.shares through MPS):
    #: the agent then reports each device's free amount so that the manager places by it.
    single_device: bool = False

    def __init__(self, devices: Mapping[SlotName, Mapping[DeviceId, Decimal]],
                 strategy: Strategy = "fill") -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown allocation strategy {strategy!r} (one of {', '.join(STRATEGIES)})")
        self.strategy: Strategy = strategy
        self.device_capacity: dict[SlotName, dict[DeviceId, Decimal]] = {}
        for slot, per_device in devices.items():
            checked: dict[DeviceId, Decimal] = {}
            for device_id, amount in per_device.items():
                amount = Decimal(amount)
                if amount < 0 or not amount.is_finite():
                    raise ValueError(f"capacity of {slot} on device {device_id} must be >= 0: {amount}")
                checked[str(device_id)] = amount
            self.device_capacity[slot] = checked
        # What is held, per slot per device (devices unknown to the capacity may appear after apply).
        self.allocations: dict[SlotName, dict[DeviceId, Decimal]] = {
            slot: dict.fromkeys(per_device, _ZERO) for slot, per_device in self.device_capacity.items()
        }

    # -- what the agent reports ---------------------------------------------------------------

    def capacity(self) -> dict[SlotName, Decimal]:
        return {slot: sum(per_device.values(), _ZERO) for slot, per_device in self.device_capacity.items()}

    def used(self) -> dict[SlotName, Decimal]:
        return {slot: sum(per_device.values(), _ZERO) for slot, per_device in self.allocations.items()}

    def free_per_device(self, slot: SlotName) -> dict[DeviceId, Decimal]:
        held = self.allocations.get(slot, {})
        return {dev: max(cap - held.get(dev, _ZERO), _ZERO)
                for dev, cap in self.device_capacity.get(slot, {}).items()}

    # -- taking and giving back ---------------------------------------------------------------

    def allocate(self, requested: Mapping[SlotName, Decimal]) -> DeviceAllocation:
        wanted = {slot: Decimal(amount) for slot, amount in requested.items()}
        for slot, amount in wanted.items():
            if not amount.is_finite() or amount < 0:
                raise AllocationError(f"invalid amount for {slot}: {amount}")
            if amount > 0 and slot not in self.device_capacity:
                raise AllocationError(f"no device provides {slot}")
        # Plan every slot before touching anything: all or nothing.
        plan: DeviceAllocation = {}
        for slot, amount in wanted.items():
            if amount == 0:
                continue
            plan[slot] = self._plan(slot, amount)
        self._add(plan)
        return plan

    def apply(self, allocation: DeviceAllocation) -> None:
        self._add(allocation)

    def free(self, allocation: DeviceAllocation) -> None:
        for slot, per_device in allocation.items():
            held = self.allocations.get(slot)
            if held is None:
                continue
            for device_id, amount in per_device.items():
                if device_id not in held:
                    continue
                left = held[device_id] - Decimal(amount)
                if left > 0:
                    held[device_id] = left
                elif device_id in self.device_capacity.get(slot, {}):
                    held[device_id] = _ZERO
                else:   # a device that vanished: forget it once nothing holds it
                    del held[device_id]

    def _add(self, allocation: DeviceAllocation) -> None:
        for slot, per_device in allocation.items():
            held = self.allocations.setdefault(slot, {})
            for device_id, amount in per_device.items():
                held[device_id] = held.get(device_id, _ZERO) + Decimal(amount)

    def _plan(self, slot: SlotName, amount: Decimal) -> dict[DeviceId, Decimal]:
        raise NotImplementedError

    def _insufficient(self, slot: SlotName, amount: Decimal) -> AllocationError:
        free = sum(self.free_per_device(slot).values(), _ZERO)
        return AllocationError(f"not enough {slot}: requested {amount}, free {free}")


class DiscreteAllocMap(_BaseAllocMap):
    """Whole units per device. ``unique_slots`` (MIG profiles) give at most one unit of a device
    to one kernel, so ``2`` of a unique slot means two distinct devices."""

    def __init__(self, devices: Mapping[SlotName, Mapping[DeviceId, Decimal]],
                 strategy: Strategy = "fill", *, unique_slots: Collection[SlotName] = ()) -> None:
        super().__init__(devices, strategy)
        for slot, per_device in self.device_capacity.items():
            for device_id, cap in per_device.items():
                if not is_whole(cap):
                    raise ValueError(f"discrete capacity of {slot} on {device_id} must be whole: {cap}")
        self.unique_slots = frozenset(unique_slots)

    def _plan(self, slot: SlotName, amount: Decimal) -> dict[DeviceId, Decimal]:
        if not is_whole(amount):
            raise AllocationError(f"{slot} is allocated in whole units, not {amount}")
        free = {dev: avail for dev, avail in self.free_per_device(slot).items() if avail > 0}
        per_device_cap = Decimal(1) if slot in self.unique_slots else None
        usable = {dev: min(avail, per_device_cap) if per_device_cap is not None else avail
                  for dev, avail in free.items()}
        if sum(usable.values(), _ZERO) < amount:
            raise self._insufficient(slot, amount)
        if self.strategy == "fill":
            # Fewest devices: the largest free first; among equals, the lowest id.
            order = sorted(usable, key=lambda d: (-usable[d], device_order(d)))
            plan: dict[DeviceId, Decimal] = {}
            left = amount
            for dev in order:
                if left == 0:
                    break
                take = min(usable[dev], left)
                plan[dev] = take
                left -= take
            return plan
        # evenly: one unit at a time to the device with the most left, so kernels spread out.
        remaining = dict(usable)
        given: dict[DeviceId, Decimal] = {}
        for _ in range(int(amount)):
            dev = min((d for d in remaining if remaining[d] > 0),
                      key=lambda d: (-remaining[d], device_order(d)))
            remaining[dev] -= 1
            given[dev] = given.get(dev, _ZERO) + 1
        return given


class FractionAllocMap(_BaseAllocMap):
    """Decimal shares of devices, in steps of ``quantum``. A request is rounded down to the
    quantum (never below one quantum) before it is planned."""

    def __init__(self, devices: Mapping[SlotName, Mapping[DeviceId, Decimal]],
                 quantum: Decimal = Decimal("0.01"), strategy: Strategy = "fill") -> None:
        super().__init__(devices, strategy)
        quantum = Decimal(quantum)
        if quantum <= 0:
            raise ValueError(f"quantum must be > 0: {quantum}")
        self.quantum = quantum

    def quantize(self, amount: Decimal) -> Decimal:
        steps = (amount / self.quantum).to_integral_value(rounding=ROUND_DOWN)
        return max(steps, Decimal(1)) * self.quantum

    def _plan(self, slot: SlotName, amount: Decimal) -> dict[DeviceId, Decimal]:
        amount = self.quantize(amount)
        free = {dev: self._floor(avail) for dev, avail in self.free_per_device(slot).items()}
        free = {dev: avail for dev, avail in free.items() if avail > 0}
        if sum(free.values(), _ZERO) < amount:
            raise self._insufficient(slot, amount)
        fitting = [dev for dev, avail in free.items() if avail >= amount]
        if fitting:
            if self.strategy == "fill":    # best fit: keep the emptier devices for larger requests
                dev = min(fitting, key=lambda d: (free[d], device_order(d)))
            else:                          # spread: the emptiest device
                dev = min(fitting, key=lambda d: (-free[d], device_order(d)))
            return {dev: amount}
        by_free = sorted(free, key=lambda d: (-free[d], device_order(d)))
        if self.strategy == "evenly":
            plan = self._split_evenly(amount, by_free, free)
            if plan is not None:
                return plan
        # fill (or no equal split exists): greedily over the devices with most free, fewest devices.
        plan = {}
        left = amount
        for dev in by_free:
            if left == 0:
                break
            take = min(free[dev], left)
            plan[dev] = take
            left -= take
        return plan

    def _split_evenly(self, amount: Decimal, by_free: list[DeviceId],
                      free: Mapping[DeviceId, Decimal]) -> dict[DeviceId, Decimal] | None:
        steps = int(amount / self.quantum)
        for count in range(2, len(by_free) + 1):
            chosen = by_free[:count]
            base, extra = divmod(steps, count)
            parts = [(base + (1 if i < extra else 0)) * self.quantum for i in range(count)]
            if all(free[dev] >= part for dev, part in zip(chosen, parts, strict=True)):
                return {dev: part for dev, part in zip(chosen, parts, strict=True) if part > 0}
        return None

    def _floor(self, value: Decimal) -> Decimal:
        return (value / self.quantum).to_integral_value(rounding=ROUND_DOWN) * self.quantum


class CompositeAllocMap(AllocMap):
    """Several alloc maps behind one (a plugin with both shares and MIG slices): each slot is
    served by the map that has it; all or nothing across them."""

    def __init__(self, maps: Iterable[AllocMap]) -> None:
        self.maps = list(maps)
        self._owner: dict[SlotName, AllocMap] = {}
        for amap in self.maps:
            for slot in amap.capacity():
                if slot in self._owner:
                    raise ValueError(f"slot {slot} is served by two alloc maps")
                self._owner[slot] = amap

    def allocate(self, requested: Mapping[SlotName, Decimal]) -> DeviceAllocation:
        unknown = sorted(slot for slot, amount in requested.items() if amount != 0 and slot not in self._owner)
        if unknown:
            raise AllocationError(f"no device provides {', '.join(unknown)}")
        done: DeviceAllocation = {}
        try:
            for amap in self.maps:
                mine = {slot: amount for slot, amount in requested.items() if self._owner.get(slot) is amap}
                if mine:
                    done.update(amap.allocate(mine))
        except AllocationError:
            self.free(done)
            raise
        return done

    def _split(self, allocation: DeviceAllocation) -> list[tuple[AllocMap, DeviceAllocation]]:
        parts: dict[int, DeviceAllocation] = {}
        for slot, per_device in allocation.items():
            amap = self._owner.get(slot)
            if amap is not None:
                parts.setdefault(id(amap), {})[slot] = per_device
        return [(amap, parts[id(amap)]) for amap in self.maps if id(amap) in parts]

    def apply(self, allocation: DeviceAllocation) -> None:
        for amap, part in self._split(allocation):
            amap.apply(part)

    def free(self, allocation: DeviceAllocation) -> None:
        for amap, part in self._split(allocation):
            amap.free(part)

    def capacity(self) -> dict[SlotName, Decimal]:
        return {slot: amount for amap in self.maps for slot, amount in amap.capacity().items()}

    def used(self) -> dict[SlotName, Decimal]:
        return {slot: amount for amap in self.maps for slot, amount in amap.used().items()}


def single_device_free(amap: AllocMap, *, capacity: bool = False) -> dict[SlotName, dict[DeviceId, Decimal]]:
    """Per slot that one kernel must take from one device, each device's free amount now (the
    heartbeat's ``compute_plugins.<key>.placement``) or, with ``capacity``, its whole capacity
    (``placement_capacity``); empty for maps without such slots."""
    maps = amap.maps if isinstance(amap, CompositeAllocMap) else [amap]
    out: dict[SlotName, dict[DeviceId, Decimal]] = {}
    for part in maps:
        if isinstance(part, _BaseAllocMap) and part.single_device:
            for slot in part.device_capacity:
                out[slot] = dict(part.device_capacity[slot]) if capacity else part.free_per_device(slot)
    return out


def merge_allocations(allocations: Iterable[DeviceAllocation]) -> DeviceAllocation:
    """One plugin's allocations summed (a kernel that holds several slots of one plugin)."""
    merged: DeviceAllocation = {}
    for allocation in allocations:
        for slot, per_device in allocation.items():
            target = merged.setdefault(slot, {})
            for dev, amount in per_device.items():
                target[dev] = target.get(dev, _ZERO) + amount
    return merged
