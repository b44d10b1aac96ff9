"""The cpu, mem and mock plugins and the registry that loads them: slots, allocation across
plugins, container arguments, configuration parsing."""

from __future__ import annotations

import os
import textwrap
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from bai.agent.compute.base import AllocationError
from bai.agent.compute.intrinsic import CpuAllocMap, CpuPlugin, MemoryPlugin, cpuset_string, usable_cores
from bai.agent.compute.mock import MockConfigError, MockPlugin, device_shares, load_mock_config
from bai.agent.compute.registry import (
    ENTRY_POINT_GROUP,
    ComputeRegistry,
    InvalidSlotRequest,
    allocated_slots,
    allocation_from_json,
    allocation_to_json,
    merge_docker_args,
)
from bai.agent.config import AgentConfig

D = Decimal

MOCK_TOML = """
slot_name = "cuda"
device_plugin_name = "CUDADevice"
[attributes]
nvidia_driver = "550.54.15"
[[devices]]
mother_uuid = "GPU-aaaa"
model_name = "Mock H100"
numa_node = 0
subproc_count = 132
memory_size = "80g"
is_mig_device = false
[[devices]]
mother_uuid = "GPU-bbbb"
model_name = "Mock H100"
numa_node = 1
subproc_count = 132
memory_size = "80g"
is_mig_device = false
[[devices]]
mother_uuid = "MIG-cccc"
model_name = "Mock H100 MIG"
subproc_count = 16
memory_size = "10g"
is_mig_device = true
mig_profile = "1g.10gb"
"""


def agent_config(tmp_path: Path, toml: str = MOCK_TOML, **resource: Any) -> AgentConfig:
    path = tmp_path / "mock-accelerator.toml"
    path.write_text(toml)
    return AgentConfig.model_validate({
        "agent": {"allow-compute-plugins": ["mock"]},
        "resource": {"reserved-cpu": 0, "reserved-mem": "0", **resource},
        "plugins": {"mock": {"config-path": str(path)}},
    })


def own_claims(tmp_path: Path) -> dict[str, Any]:
    """The cpu plugin's own config with this test's claims directory: the machine's
    (/run/bai/pinned-cores) holds the installed agent's and other tests' pinned cores."""
    return {"pinned-cores-dir": str(tmp_path / "pinned")}


def test_cpu_helpers() -> None:
    assert cpuset_string([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert cpuset_string([3]) == "3"
    assert usable_cores([0, 1, 2, 3], [1], D(0)) == [0, 2, 3]
    assert usable_cores([0, 1, 2, 3], [1], D("1.5")) == [3]      # reserved-cpu rounds up
    assert usable_cores([0, 1], [], D(5)) == []


def test_cpu_alloc_map_pins_whole_requests_and_packs_fractions() -> None:
    amap = CpuAllocMap({"cpu": {str(i): D(1) for i in range(4)}})
    frac = amap.allocate({"cpu": D("0.5")})
    assert frac == {"cpu": {"0": D("0.5")}}
    assert amap.allocate({"cpu": D(2)}) == {"cpu": {"1": D(1), "2": D(1)}}    # whole free cores only
    assert amap.allocate({"cpu": D("0.25")}) == {"cpu": {"0": D("0.25")}}     # best fit: the used core
    assert amap.allocate({"cpu": D(1)}) == {"cpu": {"3": D(1)}}
    # No core is whole now: a whole request is booked on the rest of core 0 (and not pinned).
    assert amap.allocate({"cpu": D("0.25")}) == {"cpu": {"0": D("0.25")}}
    with pytest.raises(AllocationError):
        amap.allocate({"cpu": D(1)})
    amap.free(frac)
    assert amap.used() == {"cpu": D("3.5")}
    # No whole core free: a whole request is booked on the halves left (it runs unpinned).
    two = CpuAllocMap({"cpu": {"0": D(1), "1": D(1)}})
    two.apply({"cpu": {"0": D("0.5"), "1": D("0.5")}})
    assert two.allocate({"cpu": D(1)}) == {"cpu": {"0": D("0.5"), "1": D("0.5")}}


async def test_cpu_plugin_docker_args(tmp_path: Path) -> None:
    plugin = CpuPlugin(own_claims(tmp_path), agent_config(tmp_path))
    await plugin.init()
    cores = sorted(os.sched_getaffinity(0))
    assert await plugin.available_slots() == {"cpu": D(len(cores))}
    pinned = await plugin.generate_docker_args({"cpu": {str(cores[0]): D(1)}})
    assert pinned == {"HostConfig": {"CpusetCpus": str(cores[0]), "NanoCpus": 10**9}}
    shared = await plugin.generate_docker_args({"cpu": {str(cores[0]): D("0.5")}})
    assert shared == {"HostConfig": {"CpusetCpus": cpuset_string(cores), "NanoCpus": 5 * 10**8}}


async def test_cpu_plugin_honours_reserved_cores(tmp_path: Path) -> None:
    cores = sorted(os.sched_getaffinity(0))
    plugin = CpuPlugin(own_claims(tmp_path), agent_config(tmp_path, **{"reserved-cores": [cores[0]]}))
    await plugin.init()
    assert [d.device_id for d in await plugin.list_devices()] == [str(c) for c in cores[1:]]
    args = await plugin.generate_docker_args({"cpu": {}})
    assert args == {"HostConfig": {"CpusetCpus": cpuset_string(cores[1:])}}


async def test_memory_plugin(tmp_path: Path) -> None:
    plugin = MemoryPlugin({}, agent_config(tmp_path, **{"reserved-mem": "1g"}))
    await plugin.init()
    assert plugin.capacity == plugin.total - 2**30 > 0
    amap = plugin.create_alloc_map()
    held = amap.allocate({"mem": D(2**30)})
    assert await plugin.generate_docker_args(held) == {"HostConfig": {"Memory": 2**30, "MemorySwap": 2**30}}
    with pytest.raises(AllocationError):
        amap.allocate({"mem": D(plugin.capacity)})


def test_mock_config_parsing(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(MOCK_TOML)
    cfg = load_mock_config(path)
    assert cfg.slot_name == "cuda" and [d.mother_uuid for d in cfg.devices] == ["GPU-aaaa", "GPU-bbbb", "MIG-cccc"]
    assert cfg.devices[0].memory_size == 80 * 2**30 and cfg.unit_mem == 2 * 2**30 and cfg.unit_proc == 8
    # one share = 2 GiB and 8 SMs: 80 GiB -> 40, 132 SMs -> 16.5; the smaller wins
    assert device_shares(cfg.devices[0], cfg.unit_mem, cfg.unit_proc) == D("16.5")
    bad = {
        "is_mig_device is mandatory": MOCK_TOML.replace("is_mig_device = false\n", "", 1),
        "must be unique": MOCK_TOML.replace("GPU-bbbb", "GPU-aaaa"),
        "devices": 'slot_name = "cuda"\ndevices = []\n',
        "slot_name": MOCK_TOML.replace('slot_name = "cuda"', 'slot_name = "../x"'),
        "invalid size": MOCK_TOML.replace('memory_size = "80g"', 'memory_size = "lots"', 1),
        "Extra inputs": MOCK_TOML + "\nsurprise = 1\n",
    }
    for needle, text in bad.items():
        path.write_text(text)
        with pytest.raises(MockConfigError, match=needle):
            load_mock_config(path)
    with pytest.raises(MockConfigError, match="No such file"):
        load_mock_config(tmp_path / "missing.toml")


async def test_mock_discrete_mode(tmp_path: Path) -> None:
    plugin = MockPlugin(agent_config(tmp_path).plugins["mock"], agent_config(tmp_path))
    await plugin.init()
    assert plugin.key == "cuda"
    assert dict(plugin.slot_types) == {"cuda.device": "count", "cuda.device:1g.10gb-mig": "unique"}
    assert await plugin.available_slots() == {"cuda.device": D(2), "cuda.device:1g.10gb-mig": D(1)}
    amap = plugin.create_alloc_map()
    first = amap.allocate({"cuda.device": D(1)})
    second = amap.allocate({"cuda.device": D(1)})
    assert first == {"cuda.device": {"GPU-aaaa": D(1)}} and second == {"cuda.device": {"GPU-bbbb": D(1)}}
    with pytest.raises(AllocationError):
        amap.allocate({"cuda.device": D(1)})
    env = (await plugin.generate_docker_args(second))["Env"]
    assert env == ["BACKENDAI_MOCK_CUDA_DEVICES=GPU-bbbb", "BACKENDAI_MOCK_CUDA_DEVICE_COUNT=1",
                   "CUDA_VISIBLE_DEVICES=1"]
    mig = amap.allocate({"cuda.device:1g.10gb-mig": D(1)})
    assert mig == {"cuda.device:1g.10gb-mig": {"MIG-cccc": D(1)}}
    assert plugin.get_attached_devices(mig)[0]["device_id"] == "MIG-cccc"
    node = {m.key: m for m in await plugin.gather_node_measures()}
    assert node["cuda_util"].per_device == {"GPU-aaaa": D(50), "GPU-bbbb": D(50), "MIG-cccc": D(50)}
    info = await plugin.extra_info()
    assert info["nvidia_driver"] == "550.54.15" and info["allocation_mode"] == "discrete" and info["mock"] is True


async def test_mock_fractional_mode_from_etcd(tmp_path: Path) -> None:
    cfg = agent_config(tmp_path)
    plugin = MockPlugin({**cfg.plugins["mock"], "etcd": {"accelerator/cuda/allocation_mode": "fractional"}}, cfg)
    await plugin.init()
    assert dict(plugin.slot_types) == {"cuda.shares": "count", "cuda.device:1g.10gb-mig": "unique"}
    assert await plugin.available_slots() == {"cuda.shares": D(33), "cuda.device:1g.10gb-mig": D(1)}
    amap = plugin.create_alloc_map()
    half = amap.allocate({"cuda.shares": D("0.5")})
    assert half == {"cuda.shares": {"GPU-aaaa": D("0.5")}}
    env = (await plugin.generate_docker_args(half))["Env"]
    assert "BACKENDAI_MOCK_CUDA_SHARES=GPU-aaaa:0.5" in env and "BACKENDAI_MOCK_CUDA_DEVICE_COUNT=1" in env
    both = amap.allocate({"cuda.shares": D(20), "cuda.device:1g.10gb-mig": D(1)})   # spans two GPUs + MIG
    assert sum(both["cuda.shares"].values()) == 20 and set(both) == {"cuda.shares", "cuda.device:1g.10gb-mig"}
    with pytest.raises(AllocationError):      # all or nothing across the shares and the MIG map
        amap.allocate({"cuda.shares": D("0.5"), "cuda.device:1g.10gb-mig": D(1)})
    assert amap.used() == {"cuda.shares": D("20.5"), "cuda.device:1g.10gb-mig": D(1)}
    bad = MockPlugin({**cfg.plugins["mock"], "etcd": {"accelerator/cuda/allocation_mode": "random"}}, cfg)
    with pytest.raises(MockConfigError, match="allocation_mode"):
        await bad.init()


def _eps(**names: str) -> list[metadata.EntryPoint]:
    return [metadata.EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in names.items()]


INTRINSIC = {"cpu": "bai.agent.compute.intrinsic:CpuPlugin", "mem": "bai.agent.compute.intrinsic:MemoryPlugin"}


async def test_registry_entry_points_are_registered() -> None:
    names = {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert {"cpu", "mem", "mock"} <= names


async def test_registry_loads_allocates_and_skips_broken_plugins(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    cfg = agent_config(tmp_path)
    registry = await ComputeRegistry.load(cfg, {}, _eps(
        **INTRINSIC, mock="bai.agent.compute.mock:MockPlugin", broken="bai.agent.compute.nowhere:Plugin"))
    assert "compute plugin broken" in caplog.text and "skipped" in caplog.text
    assert list(registry.plugins) == ["cuda", "cpu", "mem"]               # allocation order
    assert registry.slot_types == {"cuda.device": "count", "cuda.device:1g.10gb-mig": "unique",
                                   "cpu": "count", "mem": "bytes"}
    assert registry.available["cuda.device"] == 2
    held = registry.allocate({"cpu": D(1), "mem": D(2**28), "cuda.device": D(1)})
    assert allocated_slots(held) == {"cpu": D(1), "mem": D(2**28), "cuda.device": D(1)}
    assert allocation_from_json(allocation_to_json(held)) == held
    args = await registry.docker_args(held)
    assert args["HostConfig"]["Memory"] == 2**28 and "CUDA_VISIBLE_DEVICES=0" in args["Env"]
    # not enough: nothing is taken from the plugins that had room
    before = registry.used()
    with pytest.raises(AllocationError):
        registry.allocate({"cpu": D(1), "mem": D(1), "cuda.device": D(5)})
    assert registry.used() == before
    with pytest.raises(InvalidSlotRequest, match="cannot be mixed"):
        registry.allocate({"cuda.device": D(1), "cuda.device:1g.10gb-mig": D(1)})
    with pytest.raises(InvalidSlotRequest, match="no slot type rocm.device"):
        registry.allocate({"rocm.device": D(1)})
    registry.free(held)
    registry.apply(held)       # a re-adopted container takes the same devices again
    again = registry.allocate({"cuda.device": D(1)})
    assert again["cuda"] == {"cuda.device": {"GPU-bbbb": D(1)}}
    await registry.cleanup()


async def test_registry_allow_and_block_lists(tmp_path: Path) -> None:
    mock = "bai.agent.compute.mock:MockPlugin"
    default = AgentConfig.model_validate({"plugins": agent_config(tmp_path).plugins})
    registry = await ComputeRegistry.load(default, {}, _eps(**INTRINSIC, mock=mock))
    assert list(registry.plugins) == ["cpu", "mem"]                       # the mock is opt-in
    blocked = AgentConfig.model_validate({
        "agent": {"allow-compute-plugins": ["mock"], "block-compute-plugins": ["mock", "cpu"]},
        "plugins": default.plugins})
    registry = await ComputeRegistry.load(blocked, {}, _eps(**INTRINSIC, mock=mock))
    assert list(registry.plugins) == ["cpu", "mem"]                       # cpu/mem cannot be blocked
    original_names = AgentConfig.model_validate({
        "agent": {"allow-compute-plugins": ["ai.backend.accelerator.mock"]}, "plugins": default.plugins})
    registry = await ComputeRegistry.load(original_names, {}, _eps(**INTRINSIC, mock=mock))
    assert list(registry.plugins) == ["cuda", "cpu", "mem"]                # the original's module name
    with pytest.raises(RuntimeError, match="intrinsic"):
        await ComputeRegistry.load(default, {}, _eps(mock=mock))


async def test_registry_skips_a_mock_without_its_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = AgentConfig.model_validate({"agent": {"allow-compute-plugins": ["mock"]},
                                      "plugins": {"mock": {"config-path": str(tmp_path / "none.toml")}}})
    registry = await ComputeRegistry.load(cfg, {}, _eps(**INTRINSIC, mock="bai.agent.compute.mock:MockPlugin"))
    assert list(registry.plugins) == ["cpu", "mem"] and "none.toml" in caplog.text


def test_merge_docker_args() -> None:
    body: dict[str, Any] = {"Env": ["A=1"], "HostConfig": {"Memory": 1, "Binds": ["x"]}}
    merge_docker_args(body, {"Env": ["B=2"], "HostConfig": {"Binds": ["y"], "CpusetCpus": "0"}})
    assert body == {"Env": ["A=1", "B=2"], "HostConfig": {"Memory": 1, "Binds": ["x", "y"], "CpusetCpus": "0"}}


def test_agent_toml_compute_keys() -> None:
    cfg = AgentConfig.model_validate(__import__("tomllib").loads(textwrap.dedent("""
        [agent]
        allow-compute-plugins = ["mock", "cuda"]
        block-compute-plugins = ["cuda"]
        [resource]
        reserved-cores = [0]
        allocation-order = ["cuda", "cpu", "mem"]
        [plugins.mock]
        config-path = "/etc/backend.ai/mock-accelerator.toml"
    """)))
    assert cfg.agent.allow_compute_plugins == ("mock", "cuda") and cfg.agent.block_compute_plugins == ("cuda",)
    assert cfg.resource.reserved_cores == (0,) and cfg.resource.allocation_order == ("cuda", "cpu", "mem")
    default = AgentConfig.model_validate({})
    assert default.agent.allow_compute_plugins is None and default.resource.allocation_order == (
        "cuda", "rocm", "tpu", "cpu", "mem")


@pytest.mark.parametrize("layout", ["v2-systemd", "v2-cgroupfs", "v1-cgroupfs"])
def test_container_usage_from_cgroup_v1_and_v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    from bai.agent.compute import intrinsic

    cid = "c0ffee"
    if layout == "v2-systemd":
        cpu_dir = mem_dir = tmp_path / "system.slice" / f"docker-{cid}.scope"
    elif layout == "v2-cgroupfs":
        cpu_dir = mem_dir = tmp_path / "docker" / cid
    else:
        cpu_dir, mem_dir = tmp_path / "cpuacct" / "docker" / cid, tmp_path / "memory" / "docker" / cid
    cpu_dir.mkdir(parents=True, exist_ok=True)
    mem_dir.mkdir(parents=True, exist_ok=True)
    if layout.startswith("v2"):
        (cpu_dir / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
        (mem_dir / "memory.current").write_text("4096\n")
    else:
        (cpu_dir / "cpuacct.usage").write_text("1500000\n")
        (mem_dir / "memory.usage_in_bytes").write_text("4096\n")
    monkeypatch.setattr(intrinsic, "CGROUP_ROOT", tmp_path)
    assert intrinsic.container_cpu_usec(cid) == 1500
    assert intrinsic.container_memory(cid) == 4096
    assert intrinsic.container_cpu_usec("other") is None and intrinsic.container_memory("other") is None


def test_measurement_json() -> None:
    from bai.agent.compute.base import Measurement
    from bai.agent.compute.registry import measurement_json

    assert measurement_json(Measurement("mem", D(512), D(2048), "bytes")) == {
        "current": "512", "capacity": "2048", "pct": "25", "unit_hint": "bytes", "version": 2}
    assert measurement_json(Measurement("cuda_util", D("12.50"), D(100), "%", {"GPU-a": D("12.50")})) == {
        "current": "12.5", "capacity": "100", "pct": "12.5", "unit_hint": "%", "version": 2,
        "devices": {"GPU-a": "12.5"}}
    assert measurement_json(Measurement("cpu_used", D(7)))["capacity"] is None
