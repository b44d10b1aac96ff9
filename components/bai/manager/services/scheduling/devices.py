"""Slots of which one kernel's amount must lie on one device (``cuda.shares`` through MPS: an MPS
client talks to one GPU's server), so an agent's total free amount is not enough to place it.

Agents report, for such slots, each device's free amount at their last heartbeat
(``compute_plugins.<plugin>.placement = {slot: {device_id: "free"}}``, decimal strings). The
report may not show kernels the agent allocated since; the scheduler counts those as
*unconfirmed* kernels (not yet RUNNING, or RUNNING only since about the heartbeat, and those
this pass places) and assumes the worst about where they went. Two lower bounds, either enough:

* as if their amounts were liquid, taken from the devices with the most free room first: the
  largest amount one device surely still has;
* counting pieces: ``k`` alike kernels of ``p`` fit when ``sum(floor(free_d / p))`` less
  ``ceil(c / p)`` for each unconfirmed kernel ``c`` is at least ``k`` (a kernel of ``c`` lies on
  one device, where it removes at most that many pieces; the agent puts each piece on any device
  that holds it, so it never gets stuck). Exact when nothing is unconfirmed.

So a kernel placed by them always finds a device on the agent; at worst a session waits one
heartbeat longer than it had to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

_ZERO = Decimal(0)
#: Devices per slot taken from a report (bounds the work on a hostile or broken heartbeat).
MAX_DEVICES = 1024


@dataclass
class OneDeviceFree:
    """One single-device slot of one agent: each device's free amount as last reported, and what
    may have been taken from them since (devices unknown)."""

    free: tuple[Decimal, ...]
    #: each unconfirmed kernel's amount
    unconfirmed: list[Decimal] = field(default_factory=list)

    def largest(self, taken: Decimal = _ZERO) -> Decimal:
        """The most any one device surely still has after the unconfirmed kernels and ``taken``
        were removed from the fullest devices first (the worst case, as if liquid)."""
        removed = sum(self.unconfirmed, _ZERO) + taken
        ordered = sorted(self.free, reverse=True)
        if not ordered:
            return _ZERO
        if removed <= 0:
            return ordered[0]
        total = _ZERO
        for k, amount in enumerate(ordered, start=1):
            total += amount
            level = (total - removed) / k
            below = ordered[k] if k < len(ordered) else _ZERO
            if level >= below:
                return max(level, _ZERO)
        return _ZERO

    def fits(self, piece: Decimal, pieces: int = 1) -> bool:
        """Whether ``pieces`` kernels of ``piece`` each surely find a device."""
        if piece <= 0:
            return True
        return self._fits_counting(piece, pieces) or self._fits_liquid(piece, pieces)

    def _fits_counting(self, piece: Decimal, pieces: int) -> bool:
        room = sum(int((f / piece).to_integral_value(ROUND_FLOOR)) for f in self.free)
        lost = sum(int((c / piece).to_integral_value(ROUND_CEILING)) for c in self.unconfirmed if c > 0)
        return room - lost >= pieces

    def _fits_liquid(self, piece: Decimal, pieces: int) -> bool:
        taken = _ZERO
        for _ in range(pieces):
            if self.largest(taken) < piece:
                return False
            taken += piece
        return True

    def take(self, amount: Decimal, kernels: int) -> None:
        """``kernels`` alike kernels of ``amount`` in all were placed here (devices unknown)."""
        if amount > 0:
            self.unconfirmed.extend([amount / max(kernels, 1)] * max(kernels, 1))

    def give_back(self, amount: Decimal, kernels: int) -> None:
        if amount > 0:
            for _ in range(max(kernels, 1)):
                self.unconfirmed.remove(amount / max(kernels, 1))


def parse_placement(compute_plugins: Any, key: str = "placement") -> dict[str, tuple[Decimal, ...]]:
    """``{slot: per-device free amounts}`` from an agent's ``compute_plugins`` (``key``
    ``placement_capacity``: the devices' whole capacities); anything malformed is left out (such
    a slot is then placed by the agent's total alone, as before)."""
    out: dict[str, tuple[Decimal, ...]] = {}
    if not isinstance(compute_plugins, Mapping):
        return out
    for info in compute_plugins.values():
        placement = info.get(key) if isinstance(info, Mapping) else None
        if not isinstance(placement, Mapping):
            continue
        for slot, per_device in placement.items():
            if not isinstance(slot, str) or not isinstance(per_device, Mapping) or len(per_device) > MAX_DEVICES:
                continue
            try:
                amounts = tuple(Decimal(str(v)) for v in per_device.values())
            except (InvalidOperation, ValueError):
                continue
            if all(a.is_finite() and a >= 0 for a in amounts):
                out[slot] = amounts
    return out


def one_device_slots(compute_plugins: Any, unconfirmed: Sequence[Mapping[str, Decimal]] = ()
                     ) -> dict[str, OneDeviceFree]:
    """The agent's single-device slots; ``unconfirmed``: each unconfirmed kernel's slots."""
    return {slot: OneDeviceFree(free, [k[slot] for k in unconfirmed if k.get(slot, _ZERO) > 0])
            for slot, free in parse_placement(compute_plugins).items()}


def one_device_slots_of(compute_plugins: Any, key: str) -> dict[str, OneDeviceFree]:
    """The single-device slots of a report under ``key`` (``placement_capacity``: empty devices)."""
    return {slot: OneDeviceFree(amounts) for slot, amounts in parse_placement(compute_plugins, key).items()}


def fits_devices(one_device: Mapping[str, OneDeviceFree], request: Mapping[str, Decimal], kernels: int) -> bool:
    """``request`` is what ``kernels`` alike kernels ask for together (one piece each)."""
    pieces = max(kernels, 1)
    return all(state.fits(request[slot] / pieces, pieces) for slot, state in one_device.items()
               if request.get(slot, _ZERO) > 0)


def shortfall_message(one_device_by_agent: Mapping[str, Mapping[str, OneDeviceFree]],
                      request: Mapping[str, Decimal], kernels: int, *, ever: bool = False) -> str | None:
    """The pending reason when agents have the room in total but on no single device, naming the
    slot and the largest amount one device offers; None when that is not why. ``ever``: the
    states are empty devices (the create-time check: no device could ever hold it)."""
    pieces = max(kernels, 1)
    for slot in sorted(request):
        if request[slot] <= 0:
            continue
        states = [states[slot] for states in one_device_by_agent.values() if slot in states]
        if not states or any(s.fits(request[slot] / pieces, pieces) for s in states):
            continue
        best = max(s.largest() for s in states)
        if ever:
            return (f"no single device holds {_plain(request[slot] / pieces)} {slot} (one kernel's {slot} "
                    f"must lie on one device; the largest has {_plain(best)})")
        return (f"No agent has {_plain(request[slot] / pieces)} {slot} free on a single device (one "
                f"kernel's {slot} must lie on one device; the most one device has free now: {_plain(best)})")
    return None


def _plain(amount: Decimal) -> str:
    return format(amount.normalize(), "f")
