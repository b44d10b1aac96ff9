"""Two agents on one host share their pinned cores through a claims directory: a core one agent
pins whole is never pinned by the other (it may still book hundredths of it, unpinned)."""

from __future__ import annotations

import json
import logging
from decimal import Decimal as D
from pathlib import Path

import pytest

from bai.agent.compute.host_cores import HostCoreClaims, open_claims
from bai.agent.compute.intrinsic import CpuAllocMap, pinned_cores

CORES = {"cpu": {"0": D(1), "1": D(1), "2": D(1)}}


def test_agents_never_pin_the_same_core(tmp_path: Path) -> None:
    a = CpuAllocMap(CORES, HostCoreClaims("agent-a", tmp_path))
    b = CpuAllocMap(CORES, HostCoreClaims("agent-b", tmp_path))
    first = a.allocate({"cpu": D(2)})
    assert pinned_cores(first) == [0, 1]
    assert json.loads((tmp_path / "agent-a.json").read_text())["cores"] == [0, 1]
    second = b.allocate({"cpu": D(1)})
    assert pinned_cores(second) == [2]                               # not 0: agent-a pins it
    # no core left that nobody pins: a whole request is booked in hundredths, and not pinned
    third = b.allocate({"cpu": D(1)})
    assert pinned_cores(third) is None and sum(third["cpu"].values()) == 1
    assert json.loads((tmp_path / "agent-b.json").read_text())["cores"] == [2]
    b.free(third)
    a.free(first)                                                    # agent-a's kernel ends
    assert json.loads((tmp_path / "agent-a.json").read_text())["cores"] == []
    assert pinned_cores(b.allocate({"cpu": D(1)})) == [0]


def test_claims_of_gone_processes_and_garbage_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "gone.json").write_text(json.dumps({"pid": 2**22 + 12345, "cores": [0]}))
    (tmp_path / "garbage.json").write_text("{not json")
    (tmp_path / "odd.json").write_text(json.dumps({"pid": "x", "cores": [1]}))
    claims = HostCoreClaims("agent-a", tmp_path)
    with claims.locked():
        assert claims.others() == {}
    assert pinned_cores(CpuAllocMap(CORES, claims).allocate({"cpu": D(1)})) == [0]


def test_re_applied_kernels_are_claimed_and_close_withdraws(tmp_path: Path) -> None:
    claims = HostCoreClaims("agent-a", tmp_path)
    amap = CpuAllocMap(CORES, claims)
    amap.apply({"cpu": {"1": D(1)}})                                 # a re-adopted container after a restart
    other = HostCoreClaims("agent-b", tmp_path)
    with other.locked():
        assert other.others() == {1: "agent-a"}
    claims.close()
    claims.close()                                                   # twice: harmless
    with other.locked():
        assert other.others() == {}


def test_an_unusable_directory_turns_coordination_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with caplog.at_level(logging.WARNING):
        assert open_claims("agent-a", blocker / "sub") is None
        assert open_claims("../escape", tmp_path) is None
    assert "reserved-cores" in caplog.text
    assert CpuAllocMap(CORES).allocate({"cpu": D(1)}) == {"cpu": {"0": D(1)}}
