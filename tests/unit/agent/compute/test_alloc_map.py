"""The alloc maps: exact, all-or-nothing, never over-allocating, strategies as documented."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bai.agent.compute.alloc_map import DiscreteAllocMap, FractionAllocMap, merge_allocations
from bai.agent.compute.base import AllocationError

D = Decimal


def cores(n: int) -> dict[str, dict[str, Decimal]]:
    return {"cpu": {str(i): D(1) for i in range(n)}}


def test_discrete_takes_lowest_free_cores_and_frees_them() -> None:
    amap = DiscreteAllocMap(cores(4))
    first = amap.allocate({"cpu": D(2)})
    assert first == {"cpu": {"0": D(1), "1": D(1)}}
    second = amap.allocate({"cpu": D(1)})
    assert second == {"cpu": {"2": D(1)}}
    assert amap.used() == {"cpu": D(3)} and amap.capacity() == {"cpu": D(4)}
    amap.free(first)
    assert amap.allocate({"cpu": D(2)}) == {"cpu": {"0": D(1), "1": D(1)}}


def test_discrete_numeric_ids_sort_numerically() -> None:
    amap = DiscreteAllocMap(cores(12))
    amap.allocate({"cpu": D(10)})
    assert amap.allocate({"cpu": D(2)}) == {"cpu": {"10": D(1), "11": D(1)}}


def test_discrete_refuses_too_much_and_changes_nothing() -> None:
    amap = DiscreteAllocMap({"cuda.device": {"a": D(1), "b": D(1)}, "cpu": {"0": D(1)}})
    with pytest.raises(AllocationError, match="not enough cuda.device: requested 3, free 2"):
        amap.allocate({"cpu": D(1), "cuda.device": D(3)})
    assert amap.used() == {"cuda.device": D(0), "cpu": D(0)}


def test_discrete_refuses_fractions_negative_and_unknown_slots() -> None:
    amap = DiscreteAllocMap(cores(2))
    with pytest.raises(AllocationError, match="whole units"):
        amap.allocate({"cpu": D("0.5")})
    with pytest.raises(AllocationError, match="invalid amount"):
        amap.allocate({"cpu": D(-1)})
    with pytest.raises(AllocationError, match="no device provides cuda.device"):
        amap.allocate({"cuda.device": D(1)})
    assert amap.allocate({"cuda.device": D(0)}) == {}   # zero of a foreign slot asks for nothing
    assert amap.used() == {"cpu": D(0)}


def test_discrete_unique_slots_take_distinct_devices() -> None:
    mig = "cuda.device:1g.10gb-mig"
    amap = DiscreteAllocMap({mig: {"MIG-a": D(2), "MIG-b": D(2)}}, unique_slots={mig})
    assert amap.allocate({mig: D(2)}) == {mig: {"MIG-a": D(1), "MIG-b": D(1)}}
    assert amap.allocate({mig: D(2)}) == {mig: {"MIG-a": D(1), "MIG-b": D(1)}}
    with pytest.raises(AllocationError):
        amap.allocate({mig: D(1)})


def test_discrete_fill_vs_evenly_on_multi_unit_devices() -> None:
    devices = {"x": {"a": D(4), "b": D(4)}}
    fill = DiscreteAllocMap(devices, "fill")
    assert fill.allocate({"x": D(3)}) == {"x": {"a": D(3)}}
    evenly = DiscreteAllocMap(devices, "evenly")
    assert evenly.allocate({"x": D(3)}) == {"x": {"a": D(2), "b": D(1)}}


def test_discrete_rejects_fractional_capacity_and_bad_strategy() -> None:
    with pytest.raises(ValueError, match="whole"):
        DiscreteAllocMap({"cpu": {"0": D("0.5")}})
    with pytest.raises(ValueError, match="strategy"):
        DiscreteAllocMap(cores(1), "random")  # type: ignore[arg-type]


def test_fraction_fill_packs_and_evenly_spreads() -> None:
    devices = {"cuda.shares": {"0": D(1), "1": D(1)}}
    fill = FractionAllocMap(devices)
    assert fill.allocate({"cuda.shares": D("0.5")}) == {"cuda.shares": {"0": D("0.5")}}
    assert fill.allocate({"cuda.shares": D("0.3")}) == {"cuda.shares": {"0": D("0.3")}}
    assert fill.allocate({"cuda.shares": D("0.5")}) == {"cuda.shares": {"1": D("0.5")}}
    assert fill.allocate({"cuda.shares": D("0.2")}) == {"cuda.shares": {"0": D("0.2")}}  # best fit

    evenly = FractionAllocMap(devices, strategy="evenly")
    assert evenly.allocate({"cuda.shares": D("0.5")}) == {"cuda.shares": {"0": D("0.5")}}
    assert evenly.allocate({"cuda.shares": D("0.5")}) == {"cuda.shares": {"1": D("0.5")}}


def test_fraction_spans_devices_when_one_is_not_enough() -> None:
    devices = {"cuda.shares": {"0": D(1), "1": D(1), "2": D(1)}}
    fill = FractionAllocMap(devices)
    assert fill.allocate({"cuda.shares": D("1.5")}) == {"cuda.shares": {"0": D(1), "1": D("0.5")}}
    evenly = FractionAllocMap(devices, strategy="evenly")
    assert evenly.allocate({"cuda.shares": D("1.5")}) == {"cuda.shares": {"0": D("0.75"), "1": D("0.75")}}
    # No equal split fits the left-overs (0.25, 0.25, 1): fall back to the fewest devices.
    assert evenly.allocate({"cuda.shares": D("1.01")}) == {"cuda.shares": {"2": D(1), "0": D("0.01")}}


def test_fraction_quantum_rounds_down_never_below_one_step() -> None:
    amap = FractionAllocMap({"s": {"0": D(1)}}, quantum=D("0.1"))
    assert amap.allocate({"s": D("0.37")}) == {"s": {"0": D("0.3")}}
    assert amap.allocate({"s": D("0.01")}) == {"s": {"0": D("0.1")}}
    assert amap.used() == {"s": D("0.4")}


def test_fraction_exact_decimals_fill_a_device_completely() -> None:
    amap = FractionAllocMap({"s": {"0": D(1)}})
    for _ in range(3):
        amap.allocate({"s": D("0.33")})
    amap.allocate({"s": D("0.01")})
    assert amap.used() == {"s": D(1)}
    with pytest.raises(AllocationError, match="free 0"):
        amap.allocate({"s": D("0.01")})


def test_apply_may_overcommit_and_free_restores() -> None:
    amap = DiscreteAllocMap(cores(2))
    held = amap.allocate({"cpu": D(2)})
    readopted = {"cpu": {"1": D(1)}, "gone": {"x": D(1)}}
    amap.apply(readopted)            # a container re-adopted after a restart keeps what it holds
    assert amap.used()["cpu"] == D(3)
    with pytest.raises(AllocationError):
        amap.allocate({"cpu": D(1)})
    amap.free(readopted)
    amap.free(held)
    assert amap.used() == {"cpu": D(0), "gone": D(0)}
    assert amap.allocate({"cpu": D(2)}) == held


def test_merge_allocations() -> None:
    merged = merge_allocations([{"cpu": {"0": D(1)}}, {"cpu": {"0": D(1), "1": D(1)}, "mem": {"root": D(5)}}])
    assert merged == {"cpu": {"0": D(2), "1": D(1)}, "mem": {"root": D(5)}}


def _check_invariants(amap: DiscreteAllocMap | FractionAllocMap,
                      holdings: list[dict[str, dict[str, Decimal]]]) -> None:
    # Never above any device's capacity, and exactly the sum of what is held.
    for slot, per_device in amap.device_capacity.items():
        for dev, cap in per_device.items():
            held = sum((h.get(slot, {}).get(dev, D(0)) for h in holdings), D(0))
            assert amap.allocations[slot][dev] == held
            assert held <= cap, (slot, dev, held, cap)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), strategy=st.sampled_from(["fill", "evenly"]),
       fraction=st.booleans())
def test_random_allocate_free_sequences_never_exceed_capacity(seed: int, strategy: str, fraction: bool) -> None:
    rng = random.Random(seed)
    ndev = rng.randint(1, 5)
    if fraction:
        devices = {"s": {str(i): D(rng.randint(1, 400)) / 100 for i in range(ndev)}}
        amap: DiscreteAllocMap | FractionAllocMap = FractionAllocMap(devices, strategy=strategy)  # type: ignore[arg-type]
    else:
        devices = {"s": {str(i): D(rng.randint(1, 4)) for i in range(ndev)},
                   "u": {f"m{i}": D(1) for i in range(rng.randint(0, 3))}}
        amap = DiscreteAllocMap(devices, strategy, unique_slots={"u"})  # type: ignore[arg-type]
    holdings: list[dict[str, dict[str, Decimal]]] = []
    for _ in range(60):
        if holdings and rng.random() < 0.4:
            amap.free(holdings.pop(rng.randrange(len(holdings))))
        else:
            if fraction:
                request = {"s": D(rng.randint(1, 250)) / 100}
            else:
                request = {"s": D(rng.randint(0, 5)), "u": D(rng.randint(0, 2))}
            before = {k: dict(v) for k, v in amap.allocations.items()}
            free_total = {slot: sum(amap.free_per_device(slot).values(), D(0)) for slot in devices}
            try:
                got = amap.allocate(request)
            except AllocationError:
                assert amap.allocations == before        # all or nothing
                # it was refused only because it did not fit (fraction: after quantising down)
                assert any(
                    request[slot] > free_total[slot] or (slot == "u" and request[slot] > sum(
                        1 for a in amap.free_per_device("u").values() if a > 0))
                    for slot in request if request[slot] > 0)
            else:
                for slot, amount in request.items():
                    taken = sum(got.get(slot, {}).values(), D(0))
                    expected = amount if not fraction else (amount / D("0.01")).to_integral_value() * D("0.01")
                    assert taken == (expected if amount > 0 else 0)
                if "u" in got:
                    assert all(v == 1 for v in got["u"].values())
                holdings.append(got)
        _check_invariants(amap, holdings)
    for held in holdings:
        amap.free(held)
    assert all(v == 0 for v in amap.used().values())
