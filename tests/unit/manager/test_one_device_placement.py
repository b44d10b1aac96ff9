"""Placing slots of which one kernel's amount must lie on one device (cuda.shares through MPS),
by the per-device free amounts agents report: a lower bound that assumes the worst about what
the report may not show yet, so a placed kernel always finds a device."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from bai.manager.services.scheduling.devices import (
    MAX_DEVICES,
    OneDeviceFree,
    one_device_slots,
    parse_placement,
    shortfall_message,
)
from bai.manager.services.scheduling.model import AgentCapacity
from bai.manager.services.scheduling.selectors import STRATEGIES, pick_agent, pick_round_robin


@pytest.mark.parametrize(("free", "unconfirmed", "largest"), [
    ((D(4), D(1)), D(0), D(4)),
    ((D(4), D(1)), D(1), D(3)),           # taken from the fullest device
    ((D(4), D(1)), D(3), D(1)),           # down to the next one's level
    ((D(4), D(1)), D(4), D("0.5")),       # then from both
    ((D(4), D(1)), D(5), D(0)),
    ((D(4), D(1)), D(9), D(0)),
    ((), D(0), D(0)),
    ((D("0.5"), D("0.5"), D("0.5")), D(0), D("0.5")),
])
def test_largest_is_the_worst_case(free: tuple[D, ...], unconfirmed: D, largest: D) -> None:
    assert OneDeviceFree(free, [unconfirmed]).largest() == largest


def test_alike_kernels_are_counted_in_pieces() -> None:
    state = OneDeviceFree((D(1), D(1)))
    assert state.fits(D("0.5"), 4)            # exact with nothing unconfirmed: two per device
    assert not state.fits(D("0.5"), 5)
    assert state.fits(D("0.6"), 2) and not state.fits(D("0.6"), 3)
    # an unconfirmed 0.1 may have landed on either GPU: it costs one 0.5 piece (ceil(0.1/0.5))...
    state.unconfirmed.append(D("0.1"))
    assert state.fits(D("0.5"), 3) and not state.fits(D("0.5"), 4)
    # ... it lies on one GPU, so the other still has all of its 1
    assert state.fits(D(1), 1) and not state.fits(D(1), 2)
    # liquid bound alone: 0.1 taken from the fullest leaves 0.9 for sure
    assert OneDeviceFree((D(1),), [D("0.1")]).fits(D("0.9")) and not OneDeviceFree((D(1),), [D("0.1")]).fits(D(1))


def test_parse_placement_keeps_only_well_formed_reports() -> None:
    good = {"cuda": {"version": "1", "placement": {"cuda.shares": {"GPU-a": "0.5", "GPU-b": "3"}}}}
    assert parse_placement(good) == {"cuda.shares": (D("0.5"), D(3))}
    for bad in (None, [], {"cuda": "x"}, {"cuda": {"placement": []}},
                {"cuda": {"placement": {"cuda.shares": {"a": "-1"}}}},
                {"cuda": {"placement": {"cuda.shares": {"a": "NaN"}}}},
                {"cuda": {"placement": {"cuda.shares": {"a": "abc"}}}},
                {"cuda": {"placement": {"cuda.shares": {str(i): "1" for i in range(MAX_DEVICES + 1)}}}}):
        assert parse_placement(bad) == {}, bad


def fragmented_and_fitting() -> list[AgentCapacity]:
    base = {"cpu": D(8), "mem": D(2**36)}
    return [
        # 1 share free in total, but 0.5 + 0.5 on two GPUs
        AgentCapacity("a-fragmented", "http://a", {**base, "cuda.shares": D(4)}, {"cuda.shares": D(3)},
                      one_device=one_device_slots(
                          {"cuda": {"placement": {"cuda.shares": {"g0": "0.5", "g1": "0.5"}}}}, {})),
        # 0.8 free, all of it on one GPU
        AgentCapacity("b-fitting", "http://b", {**base, "cuda.shares": D(2)}, {"cuda.shares": D("1.2")},
                      one_device=one_device_slots(
                          {"cuda": {"placement": {"cuda.shares": {"g2": "0", "g3": "0.8"}}}}, {})),
    ]


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "roundrobin"] + ["mof"])
def test_every_strategy_picks_the_agent_where_one_device_fits(strategy: str) -> None:
    agents = fragmented_and_fitting()
    # dispersed alone would prefer a-fragmented (more free shares in total)
    chosen = pick_agent(strategy, agents, {"cpu": D(1), "cuda.shares": D("0.8")})
    assert chosen is not None and chosen.id == "b-fitting"
    chosen.reserve({"cpu": D(1), "cuda.shares": D("0.8")})
    assert pick_agent(strategy, agents, {"cpu": D(1), "cuda.shares": D("0.8")}) is None   # no over-allocation
    chosen = pick_agent(strategy, agents, {"cpu": D(1), "cuda.shares": D("0.5")})
    assert chosen is not None and chosen.id == "a-fragmented"


def test_round_robin_skips_the_fragmented_agent() -> None:
    chosen, _ = pick_round_robin(fragmented_and_fitting(), {"cuda.shares": D("0.8")}, None)
    assert chosen is not None and chosen.id == "b-fitting"


def test_unconfirmed_kernels_count_against_the_fullest_device() -> None:
    agents = fragmented_and_fitting()
    # a 0.5-share kernel scheduled after b's heartbeat may sit on g3: 0.3 left there for sure
    agents[1].one_device["cuda.shares"].unconfirmed = [D("0.5")]
    assert pick_agent("dispersed", agents, {"cuda.shares": D("0.8")}) is None
    assert pick_agent("dispersed", agents[1:], {"cuda.shares": D("0.3")}) is not None


def test_reserve_and_unreserve_keep_the_device_view() -> None:
    agent = fragmented_and_fitting()[1]
    agent.reserve({"cuda.shares": D("0.5")})
    assert not agent.fits({"cuda.shares": D("0.8")})
    agent.unreserve({"cuda.shares": D("0.5")})
    assert agent.fits({"cuda.shares": D("0.8")})


def test_single_node_cluster_kernels_each_need_a_device() -> None:
    agent = fragmented_and_fitting()[0]           # 0.5 + 0.5
    assert agent.fits({"cuda.shares": D(1)}, kernels=2)       # two kernels of 0.5
    assert not agent.fits({"cuda.shares": D(1)}, kernels=1)   # one kernel of 1


def test_the_pending_reason_names_the_slot_and_the_best_device() -> None:
    agents = fragmented_and_fitting()
    msg = shortfall_message({a.id: a.one_device for a in agents}, {"cpu": D(1), "cuda.shares": D("0.9")}, 1)
    assert msg == ("No agent has 0.9 cuda.shares free on a single device (one kernel's cuda.shares must "
                   "lie on one device; the most one device has free now: 0.8)")
    assert shortfall_message({a.id: a.one_device for a in agents}, {"cuda.shares": D("0.8")}, 1) is None
    assert shortfall_message({"x": {}}, {"cuda.shares": D(9)}, 1) is None     # agents without reports
