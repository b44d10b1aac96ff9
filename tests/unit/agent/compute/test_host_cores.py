"""Two agents on one host share their pinned cores through a claims directory: a core one agent
pins whole is never pinned by the other (it may still book part of it, and then runs unpinned)."""

from __future__ import annotations

import json
import logging
import os
from decimal import Decimal as D
from pathlib import Path

import pytest

from bai.agent.compute.host_cores import HostCoreClaims, open_claims
from bai.agent.compute.intrinsic import CpuAllocMap, CpuPlugin, cpuset_string, pinned_cores
from bai.agent.config import AgentConfig

CORES = {"cpu": {"0": D(1), "1": D(1), "2": D(1)}}


def test_agents_never_pin_the_same_core(tmp_path: Path) -> None:
    a = CpuAllocMap(CORES, HostCoreClaims("agent-a", tmp_path))
    b = CpuAllocMap(CORES, HostCoreClaims("agent-b", tmp_path))
    first = a.allocate({"cpu": D(2)})
    assert pinned_cores(first) == [0, 1]
    assert json.loads((tmp_path / "agent-a.json").read_text())["cores"] == [0, 1]
    second = b.allocate({"cpu": D(1)})
    assert pinned_cores(second) == [2]                               # not 0: agent-a pins it
    # no core left that nobody pins: booked on agent-a's cores (the plugin will not pin it there)
    third = b.allocate({"cpu": D(1)})
    assert set(third["cpu"]) <= {"0", "1"} and sum(third["cpu"].values()) == 1
    assert json.loads((tmp_path / "agent-b.json").read_text())["cores"] == sorted([2, *map(int, third["cpu"])])
    b.free(third)
    a.free(first)                                                    # agent-a's kernel ends
    assert json.loads((tmp_path / "agent-a.json").read_text())["cores"] == []
    assert pinned_cores(b.allocate({"cpu": D(1)})) == [0]


async def test_the_plugin_does_not_pin_a_core_another_agent_pins(tmp_path: Path) -> None:
    def plugin(agent_id: str) -> CpuPlugin:
        config = AgentConfig.model_validate({"agent": {"id": agent_id}, "resource": {"reserved-cpu": 0}})
        return CpuPlugin({"pinned-cores-dir": str(tmp_path)}, config)

    a, b = plugin("agent-a"), plugin("agent-b")
    await a.init()
    await b.init()
    try:
        a_map, b_map = a.create_alloc_map(), b.create_alloc_map()
        every = D(len(a.cores))
        held = a_map.allocate({"cpu": every})                           # agent-a pins every core
        assert (await a.generate_docker_args(held))["HostConfig"]["CpusetCpus"] == cpuset_string(a.cores)
        assert a.generate_resource_data(held)["CPU_PINNED"] == cpuset_string(a.cores)
        # agent-b's kernel asks for every core too: it runs, within its quota, pinned to none
        taken = b_map.allocate({"cpu": every})
        args = await b.generate_docker_args(taken)
        assert args["HostConfig"]["NanoCpus"] == int(every) * 10**9
        assert b.pinning(taken) is None and b.generate_resource_data(taken)["CPU_PINNED"] == ""
        a_map.free(held)
        assert b.pinning(taken) == a.cores                              # nobody else pins them now
    finally:
        await a.cleanup()
        await b.cleanup()
    assert sorted(os.listdir(tmp_path)) == [".lock"]


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
