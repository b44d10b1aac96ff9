"""Agent selection: which agent takes a session, per resource group's
``scheduler_opts.agent_selection_strategy`` (dispersed, concentrated, legacy, roundrobin) or, for
the ``mof`` scheduler, the least occupied agent."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bai.common.types import ResourceSlots

from .model import AgentCapacity

STRATEGIES = ("dispersed", "concentrated", "legacy", "roundrobin")
DEFAULT_STRATEGY = "dispersed"  # the original's default
#: Devices compared first (the original's ``agent-selection-resource-priority`` default); a
#: device's sub-slots (``cuda.device``, ``cuda.shares``) follow it, unknown slots come last.
DEVICE_PRIORITY = ("cuda", "rocm", "tpu", "cpu", "mem")


def slot_priority(slots: set[str], priority: Sequence[str] = DEVICE_PRIORITY) -> list[str]:
    """``slots`` in comparison order: by ``priority`` (``[manager] agent-selection-resource-priority``)
    of their device, a device's sub-slots right after it, unknown devices last."""
    def rank(slot: str) -> tuple[int, str]:
        device = slot.split(".", 1)[0]
        idx = priority.index(device) if device in priority else len(priority)
        return idx, slot
    return sorted(slots, key=rank)


def _num_extras(agent: AgentCapacity, request: ResourceSlots) -> int:
    """Device kinds the agent has but the session does not ask for: such agents come last, so
    that GPU nodes stay free for GPU sessions."""
    return sum(1 for slot, amount in agent.available.items()
               if amount > 0 and request.get(slot, Decimal(0)) == 0 and slot not in ("cpu", "mem"))


#: A strategy's preference: (agent, its free slots, slot comparison order) -> larger is better.
_Key = Callable[[AgentCapacity, ResourceSlots, list[str]], tuple[Any, ...]]


def _pick_by(candidates: Sequence[AgentCapacity], request: ResourceSlots, key: _Key,
             priority: Sequence[str], kernels: int) -> AgentCapacity | None:
    # free() once per agent: this runs for every session of a pass over every candidate
    wanted = [(slot, amount) for slot, amount in request.items() if amount > 0]
    fitting = []
    for agent in candidates:
        if not agent.has_room_for(kernels):
            continue
        free = agent.free()
        if all(amount <= free.get(slot, _ZERO) for slot, amount in wanted) and agent.fits_devices(request, kernels):
            fitting.append((agent, free))
    if not fitting:
        return None
    order = slot_priority({s for a, _ in fitting for s in a.available}, priority)
    # ties go to the lowest agent id, so placements are reproducible
    return max(sorted(fitting, key=lambda af: af[0].id, reverse=True),
               key=lambda af: (-_num_extras(af[0], request), *key(af[0], af[1], order)))[0]


_ZERO = Decimal(0)


def _dispersed(a: AgentCapacity, free: ResourceSlots, order: list[str]) -> tuple[Any, ...]:
    return tuple(free.get(s, _ZERO) for s in order)


def _concentrated(a: AgentCapacity, free: ResourceSlots, order: list[str]) -> tuple[Any, ...]:
    return tuple(-free.get(s, _ZERO) for s in order)


def _legacy(a: AgentCapacity, free: ResourceSlots, order: list[str]) -> tuple[Any, ...]:
    return tuple(a.available.get(s, _ZERO) for s in order)


def _least_occupied(a: AgentCapacity, free: ResourceSlots, order: list[str]) -> tuple[Any, ...]:
    return tuple(-a.occupied.get(s, _ZERO) for s in order)


_KEYS: dict[str, _Key] = {"dispersed": _dispersed, "concentrated": _concentrated, "legacy": _legacy,
                          "mof": _least_occupied}


@dataclass
class RoundRobinState:
    """Where the next round-robin pick starts, for one set of agents (``schedulable_group_id``:
    a digest of their ids; when the set changes, the rotation starts over)."""

    schedulable_group_id: str
    next_index: int

    def to_json(self) -> dict[str, Any]:
        return {"schedulable_group_id": self.schedulable_group_id, "next_index": self.next_index}


def agent_set_id(candidates: Sequence[AgentCapacity]) -> str:
    return hashlib.md5("#".join(sorted(a.id for a in candidates)).encode(), usedforsecurity=False).hexdigest()


def pick_round_robin(candidates: Sequence[AgentCapacity], request: ResourceSlots,
                     state: RoundRobinState | None, kernels: int = 1,
                     eligible: Collection[str] | None = None
                     ) -> tuple[AgentCapacity | None, RoundRobinState | None]:
    """The next agent (by id order) from the saved position that fits, and the new state.
    ``eligible``: the ids of the only agents that may take it (those holding an image nothing
    can pull); the rotation still runs over every candidate, so such sessions do not restart it."""
    agents = sorted(candidates, key=lambda a: a.id)
    if not agents:
        return None, state
    set_id = agent_set_id(agents)
    start = state.next_index if state is not None and state.schedulable_group_id == set_id else 0
    for step in range(len(agents)):
        idx = (start + step) % len(agents)
        if (eligible is None or agents[idx].id in eligible) and agents[idx].fits(request, kernels):
            return agents[idx], RoundRobinState(set_id, (idx + 1) % len(agents))
    return None, state


def pick_agent(strategy: str, candidates: Sequence[AgentCapacity], request: ResourceSlots,
               priority: Sequence[str] = DEVICE_PRIORITY, kernels: int = 1) -> AgentCapacity | None:
    """``strategy``: one of the non-round-robin STRATEGIES, or ``mof``; ``priority``: the
    devices compared first (``[manager] agent-selection-resource-priority``); ``kernels``: the
    containers it would add to the agent."""
    return _pick_by(candidates, request, _KEYS.get(strategy, _KEYS[DEFAULT_STRATEGY]), priority, kernels)
