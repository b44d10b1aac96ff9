"""The CUDA plugin inside the agent's real compute registry (entry points, allocation across
plugins, exclusive slot types, merged container arguments, heartbeat facts)."""

from __future__ import annotations

from decimal import Decimal as D
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from bai.agent.compute.cuda.docker_args import HostFacts
from bai.agent.compute.cuda.plugin import CUDAPlugin
from bai.agent.compute.registry import ENTRY_POINT_GROUP, ComputeRegistry, InvalidSlotRequest
from bai.agent.config import AgentConfig
from tests.fixtures.fake_nvml import FakeNVML, with_copies, with_mig

INTRINSIC = {"cpu": "bai.agent.compute.intrinsic:CpuPlugin", "mem": "bai.agent.compute.intrinsic:MemoryPlugin"}


class NoMPS:
    async def start(self, uuid: str, dirs: Any) -> None: ...

    async def send(self, dirs: Any, commands: Any) -> str:
        return ""

    async def stop(self, dirs: Any) -> None: ...


class H100HostCUDAPlugin(CUDAPlugin):
    """The real plugin on a SYNTHESISED host: two captured H100s, the second with MIG on."""

    def __init__(self, plugin_config: Any, agent_config: Any) -> None:
        fake = with_mig(with_copies(FakeNVML.from_nvml_json(), 2), 1, ["3g.40gb", "3g.40gb"])
        super().__init__(plugin_config, agent_config, nvml_lib=fake, mps_control=NoMPS(),
                         host_facts=HostFacts(device_nodes=frozenset({"/dev/nvidiactl", "/dev/nvidia-uvm"})))


def eps(**names: str) -> list[metadata.EntryPoint]:
    return [metadata.EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in names.items()]


def config(tmp_path: Path, **cuda: Any) -> AgentConfig:
    return AgentConfig.model_validate({"resource": {"reserved-cpu": 0},
                                       "plugins": {"cuda": {"mps-root": str(tmp_path / "mps"), **cuda}}})


def test_cuda_entry_point_is_declared() -> None:
    pyproject = (Path(__file__).resolve().parents[4] / "pyproject.toml").read_text()
    assert 'cuda = "bai.agent.compute.cuda.plugin:CUDAPlugin"' in pyproject
    assert '"nvidia-ml-py>=12,<14"' in pyproject


async def test_registry_with_the_cuda_plugin(tmp_path: Path) -> None:
    registry = await ComputeRegistry.load(config(tmp_path), {}, eps(
        **INTRINSIC, cuda=f"{__name__}:H100HostCUDAPlugin"))
    try:
        assert list(registry.plugins) == ["cuda", "cpu", "mem"]          # [resource] allocation-order
        assert registry.slot_types["cuda.device"] == "count"
        assert registry.slot_types["cuda.device:3g.40gb-mig"] == "unique"
        assert registry.available["cuda.device"] == 1 and registry.available["cuda.device:3g.40gb-mig"] == 2
        held = registry.allocate({"cpu": D(1), "mem": D(2**28), "cuda.device": D(1)})
        whole = registry.plugins["cuda"].gpus[0].uuid                   # type: ignore[attr-defined]
        assert held["cuda"] == {"cuda.device": {whole: D(1)}}
        args = await registry.docker_args(held)
        assert f"CUDA_VISIBLE_DEVICES={whole}" in args["Env"]
        assert args["HostConfig"]["Memory"] == 2**28                    # the mem plugin's part kept
        assert [d["PathOnHost"] for d in args["HostConfig"]["Devices"]] == [
            "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia0"]
        assert registry.attached_devices(held)["cuda"][0]["device_id"] == whole
        with pytest.raises(InvalidSlotRequest, match="cannot be mixed"):
            registry.allocate({"cuda.device": D(1), "cuda.device:3g.40gb-mig": D(1)})
        slices = registry.allocate({"cuda.device:3g.40gb-mig": D(2)})
        assert len(slices["cuda"]["cuda.device:3g.40gb-mig"]) == 2
        infos = await registry.extra_infos("9.9")
        assert infos["cuda"] == {"version": "1.0", "driver": "580.159.04", "cuda_version": "13.0",
                                 "mode": "discrete"}
    finally:
        await registry.cleanup()


async def test_registry_fractional_from_etcd(tmp_path: Path) -> None:
    registry = await ComputeRegistry.load(config(tmp_path), {"accelerator/cuda/allocation_mode": "fractional"},
                                          eps(**INTRINSIC, cuda=f"{__name__}:H100HostCUDAPlugin"))
    try:
        assert registry.slot_types["cuda.shares"] == "count"
        assert registry.available["cuda.shares"] == D("39.82")
        held = registry.allocate({"cuda.shares": D("0.25")})
        args = await registry.docker_args(held)
        assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=1" in args["Env"]
        assert "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=512M" in args["Env"]
    finally:
        await registry.cleanup()


async def test_the_real_plugin_on_this_gpu_less_host(tmp_path: Path) -> None:
    # The entry point as installed: real nvidia-ml-py, no libnvidia-ml here -> loaded, nothing offered.
    registry = await ComputeRegistry.load(config(tmp_path), {}, eps(
        **INTRINSIC, cuda="bai.agent.compute.cuda.plugin:CUDAPlugin"))
    try:
        assert "cuda" in registry.plugins
        assert not any(slot.startswith("cuda") for slot in registry.slot_types)
        assert not any(slot.startswith("cuda") for slot in registry.available)
        held = registry.allocate({"cpu": D(1)})
        assert "cuda" not in held
        args = await registry.docker_args(held)
        assert not any(e.startswith(("CUDA_", "NVIDIA_")) for e in args.get("Env", []))
        with pytest.raises(InvalidSlotRequest, match="no slot type cuda.device"):
            registry.allocate({"cuda.device": D(1)})
    finally:
        await registry.cleanup()


async def test_released_and_restored_allocations_reach_the_mps_limits(tmp_path: Path) -> None:
    # The registry's release/restore hooks (called by the agent after freeing a kernel's devices and
    # after re-applying a re-adopted container's) keep the GPU's MPS holders in step.
    registry = await ComputeRegistry.load(config(tmp_path, **{"mps-isolation": "gpu"}),
                                          {"accelerator/cuda/allocation_mode": "fractional"},
                                          eps(**INTRINSIC, cuda=f"{__name__}:H100HostCUDAPlugin"))
    try:
        plugin = registry.plugins["cuda"]
        daemons = plugin.mps                                            # type: ignore[attr-defined]
        small = registry.allocate({"cuda.shares": D("0.25")})
        big = registry.allocate({"cuda.shares": D("2")})
        await registry.docker_args(small)
        await registry.docker_args(big)
        (uuid,) = daemons.running
        assert sum(daemons.holders(uuid).values()) == 2
        registry.free(big)
        await registry.released(big)
        assert sum(daemons.holders(uuid).values()) == 1
        registry.apply(big)
        await registry.restored(big)
        assert sum(daemons.holders(uuid).values()) == 2
        await registry.released({"gone": {"cuda.shares": {uuid: D(1)}}})  # a plugin that is not loaded: ignored
    finally:
        await registry.cleanup()
