"""Agent selection: which agent takes a session, per resource group's
``scheduler_opts.agent_selection_strategy`` (dispersed, concentrated, legacy, roundrobin) or, for
the ``mof`` scheduler, the least occupied agent."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
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


def slot_priority(slots: set[str]) -> list[str]:
    def rank(slot: str) -> tuple[int, str]:
        device = slot.split(".", 1)[0]
        idx = DEVICE_PRIORITY.index(device) if device in DEVICE_PRIORITY else len(DEVICE_PRIORITY)
        return idx, slot
    return sorted(slots, key=rank)


def _num_extras(agent: AgentCapacity, request: ResourceSlots) -> int:
    """Device kinds the agent has but the session does not ask for: such agents come last, so
    that GPU nodes stay free for GPU sessions."""
    return sum(1 for slot, amount in agent.available.items()
               if amount > 0 and request.get(slot, Decimal(0)) == 0 and slot not in ("cpu", "mem"))


def _pick_by(candidates: Sequence[AgentCapacity], request: ResourceSlots,
             key: Callable[[AgentCapacity, list[str]], tuple[Any, ...]]) -> AgentCapacity | None:
    fitting = [a for a in candidates if a.fits(request)]
    if not fitting:
        return None
    order = slot_priority({s for a in fitting for s in a.available})
    # ties go to the lowest agent id, so placements are reproducible
    return max(sorted(fitting, key=lambda a: a.id, reverse=True),
               key=lambda a: (-_num_extras(a, request), *key(a, order)))


def _dispersed(a: AgentCapacity, order: list[str]) -> tuple[Any, ...]:
    free = a.free()
    return tuple(free.get(s, Decimal(0)) for s in order)


def _concentrated(a: AgentCapacity, order: list[str]) -> tuple[Any, ...]:
    free = a.free()
    return tuple(-free.get(s, Decimal(0)) for s in order)


def _legacy(a: AgentCapacity, order: list[str]) -> tuple[Any, ...]:
    return tuple(a.available.get(s, Decimal(0)) for s in order)


def _least_occupied(a: AgentCapacity, order: list[str]) -> tuple[Any, ...]:
    return tuple(-a.occupied.get(s, Decimal(0)) for s in order)


_KEYS = {"dispersed": _dispersed, "concentrated": _concentrated, "legacy": _legacy, "mof": _least_occupied}


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
                     state: RoundRobinState | None) -> tuple[AgentCapacity | None, RoundRobinState | None]:
    """The next agent (by id order) from the saved position that fits, and the new state."""
    agents = sorted(candidates, key=lambda a: a.id)
    if not agents:
        return None, state
    set_id = agent_set_id(agents)
    start = state.next_index if state is not None and state.schedulable_group_id == set_id else 0
    for step in range(len(agents)):
        idx = (start + step) % len(agents)
        if agents[idx].fits(request):
            return agents[idx], RoundRobinState(set_id, (idx + 1) % len(agents))
    return None, state


def pick_agent(strategy: str, candidates: Sequence[AgentCapacity], request: ResourceSlots) -> AgentCapacity | None:
    """``strategy``: one of the non-round-robin STRATEGIES, or ``mof``."""
    return _pick_by(candidates, request, _KEYS.get(strategy, _KEYS[DEFAULT_STRATEGY]))
