"""Placement with accelerator slots: a session asking for ``cuda.device`` or ``cuda.shares`` goes
only to an agent that has them, and with any strategy; one that asks for none prefers agents
without accelerators (the original's ``num_extras`` rule)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bai.manager.services.scheduling.model import AgentCapacity
from bai.manager.services.scheduling.selectors import STRATEGIES, pick_agent, pick_round_robin

D = Decimal


def agents() -> list[AgentCapacity]:
    return [
        AgentCapacity("a-cpu", "http://a", {"cpu": D(64), "mem": D(2**40)}, {}),
        AgentCapacity("b-gpu", "http://b", {"cpu": D(8), "mem": D(2**36), "cuda.device": D(2)},
                      {"cuda.device": D(1)}),
        AgentCapacity("c-frac", "http://c", {"cpu": D(8), "mem": D(2**36), "cuda.shares": D(1)}, {}),
    ]


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "roundrobin"] + ["mof"])
def test_accelerator_requests_go_only_where_the_slot_is(strategy: str) -> None:
    base = {"cpu": D(1), "mem": D(2**30)}
    chosen = pick_agent(strategy, agents(), {**base, "cuda.device": D(1)})
    assert chosen is not None and chosen.id == "b-gpu"
    assert pick_agent(strategy, agents(), {**base, "cuda.device": D(2)}) is None    # one is occupied
    chosen = pick_agent(strategy, agents(), {**base, "cuda.shares": D("0.5")})
    assert chosen is not None and chosen.id == "c-frac"
    assert pick_agent(strategy, agents(), {**base, "cuda.shares": D("1.5")}) is None
    assert pick_agent(strategy, agents(), {**base, "rocm.device": D(1)}) is None


def test_cpu_only_sessions_prefer_agents_without_accelerators() -> None:
    chosen = pick_agent("concentrated", agents(), {"cpu": D(1), "mem": D(2**30)})
    assert chosen is not None and chosen.id == "a-cpu"


def test_round_robin_skips_agents_without_the_slot() -> None:
    chosen, _ = pick_round_robin(agents(), {"cpu": D(1), "cuda.shares": D("0.25")}, None)
    assert chosen is not None and chosen.id == "c-frac"
