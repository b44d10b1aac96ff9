"""Agent selection strategies and session orders over in-memory agents (the placement policy;
tests/component/manager/test_scheduling.py runs it over a real database)."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from bai.manager.services.scheduling import selectors
from bai.manager.services.scheduling.model import AgentCapacity
from bai.manager.services.scheduling.starts_at import parse_starts_at


def agent(name: str, cpu: int, used: int, **extra: int) -> AgentCapacity:
    available = {"cpu": D(cpu), "mem": D(8 * 2**30), **{k.replace("_", "."): D(v) for k, v in extra.items()}}
    return AgentCapacity(name, f"http://{name}", available, {"cpu": D(used)})


REQ = {"cpu": D(2), "mem": D(2**30)}


def test_concentrated_picks_busiest_that_fits() -> None:
    agents = [agent("a", 8, 1), agent("b", 8, 6), agent("c", 8, 7)]
    picked = selectors.pick_agent("concentrated", agents, REQ)
    assert picked is not None and picked.id == "b"   # c has only 1 free core


def test_dispersed_picks_emptiest_and_legacy_the_largest() -> None:
    agents = [agent("a", 8, 1), agent("b", 8, 6), agent("c", 16, 10)]
    assert selectors.pick_agent("dispersed", agents, REQ).id == "a"  # type: ignore[union-attr]
    assert selectors.pick_agent("legacy", agents, REQ).id == "c"  # type: ignore[union-attr]
    assert selectors.pick_agent("mof", agents, REQ).id == "a"  # type: ignore[union-attr]


def test_agents_with_unrequested_devices_come_last() -> None:
    agents = [agent("gpu", 64, 0, cuda_device=4), agent("cpu-only", 8, 4)]
    assert selectors.pick_agent("dispersed", agents, REQ).id == "cpu-only"  # type: ignore[union-attr]
    gpu_req = {**REQ, "cuda.device": D(1)}
    assert selectors.pick_agent("dispersed", agents, gpu_req).id == "gpu"  # type: ignore[union-attr]


def test_nothing_fits() -> None:
    assert selectors.pick_agent("concentrated", [agent("a", 2, 2)], {"cpu": D(1)}) is None


def test_unknown_slot_never_fits() -> None:
    assert selectors.pick_agent("dispersed", [agent("a", 8, 0)], {"cuda.device": D(1)}) is None


def test_round_robin_rotates_and_restarts_when_the_agent_set_changes() -> None:
    agents = [agent("c", 8, 0), agent("a", 8, 0), agent("b", 8, 7)]
    state = None
    picks = []
    for _ in range(3):
        picked, state = selectors.pick_round_robin(agents, REQ, state)
        assert picked is not None
        picks.append(picked.id)
    assert picks == ["a", "c", "a"]  # by id; b is too full and is passed over
    picked, state = selectors.pick_round_robin(agents[:2], REQ, state)
    assert picked is not None and picked.id == "a" and state is not None and state.next_index == 1


def test_starts_at_forms() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_starts_at("3s", now) == now + timedelta(seconds=3)
    assert parse_starts_at("1m", now) == now + timedelta(minutes=1)
    assert parse_starts_at("1h30m", now) == now + timedelta(hours=1, minutes=30)
    assert parse_starts_at("1.5d", now) == now + timedelta(days=1.5)
    assert parse_starts_at("2026-01-02T03:04:05+09:00", now) == datetime(2026, 1, 1, 18, 4, 5, tzinfo=UTC)
    assert parse_starts_at("2026-01-02T00:00:00", now) == datetime(2026, 1, 2, tzinfo=UTC)
    for bad in ("", "soon", "3x", "1h-2m", "99999d", "9" * 30 + "d", "99999999d", "9999-12-31T23:59:59+00:00"):
        with pytest.raises(ValueError):
            parse_starts_at(bad, now)
