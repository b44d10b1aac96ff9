"""CUDA plugin discovery and slots, from the real H100 readings through the fake NVML
(tests/fixtures/fake_nvml.py: the only fake, for the GPU that does not exist here)."""

from __future__ import annotations

import logging
from decimal import Decimal

import pynvml
import pytest

from bai.agent.compute.alloc_map import DiscreteAllocMap, FractionAllocMap
from bai.agent.compute.base import AllocationError
from bai.agent.compute.cuda.docker_args import HostFacts
from bai.agent.compute.cuda.nvml import NVML, cuda_version_text, mig_profile_of
from bai.agent.compute.cuda.plugin import CUDAPlugin, CUDASettings
from tests.fixtures.fake_nvml import FakeNVML, with_copies, with_mig

H100_UUID = "GPU-2ae65ffe-34ec-cd9b-efee-ac85ca8575f7"
H100_MEM = 85520809984          # nvml.json memory_total; nvidia-smi's 81559 MiB is the same


class RecordingControl:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.sent: list[list[str]] = []
        self.stopped: list[str] = []

    async def start(self, uuid, dirs):
        self.started.append(uuid)

    async def send(self, dirs, commands):
        self.sent.append(list(commands))
        return ""

    async def stop(self, dirs):
        self.stopped.append(dirs.root.name)


async def make_plugin(fake: FakeNVML, tmp_path, **config) -> CUDAPlugin:
    plugin = CUDAPlugin({"mps_root": str(tmp_path / "mps"), **config}, None, nvml_lib=fake,
                        mps_control=RecordingControl(), host_facts=HostFacts())
    await plugin.init()
    return plugin


@pytest.mark.parametrize("source", ["nvml.json", "nvidia-smi-q.xml"])
def test_discovery_from_each_capture(source):
    fake = FakeNVML.from_nvml_json() if source == "nvml.json" else FakeNVML.from_smi_xml()
    nvml = NVML(fake)
    assert nvml.open()
    assert nvml.driver_version() == "580.159.04"
    assert nvml.cuda_driver_version() == "13.0"
    (gpu,) = nvml.devices()
    assert gpu.uuid == H100_UUID
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.index == 0 and gpu.minor == 0
    assert gpu.memory_total == H100_MEM
    assert gpu.pci_bus_id == "00000000:00:06.0"
    assert gpu.numa_node is None           # NotSupported on that VM
    assert gpu.sm_count is None            # not readable for a whole GPU there
    assert (gpu.mig_current, gpu.mig_pending) == (False, False)
    assert gpu.mig_devices == ()
    # The JSON capture has the compute capability; nvidia-smi -q does not print it.
    assert gpu.compute_capability == ((9, 0) if source == "nvml.json" else None)
    nvml.close()
    assert fake.calls[-1] == "nvmlShutdown"


def test_readings_from_the_captures():
    nvml = NVML(FakeNVML.from_nvml_json())
    nvml.open()
    (gpu,) = nvml.devices()
    reading = nvml.reading(gpu.uuid)
    assert reading.gpu_util == 0 and reading.mem_util == 0
    assert reading.memory_used == 503316480          # the last sample of nvml.json
    assert reading.memory_total == H100_MEM
    xml = NVML(FakeNVML.from_smi_xml())
    xml.open()
    (gpu,) = xml.devices()
    assert xml.reading(gpu.uuid).memory_used == 0    # "0 MiB" in nvidia-smi -q


def test_helpers():
    assert cuda_version_text(13000) == "13.0"
    assert cuda_version_text(12040) == "12.4"
    assert mig_profile_of("NVIDIA H100 80GB HBM3 MIG 1g.10gb") == "1g.10gb"
    assert mig_profile_of("NVIDIA H100 80GB HBM3") is None


async def test_library_not_found_means_no_devices(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="bai.agent.compute.cuda.nvml")
    plugin = await make_plugin(FakeNVML.library_missing(), tmp_path)
    assert await plugin.available_slots() == {}
    assert plugin.slot_types == ()             # nothing announced to the manager
    assert await plugin.list_devices() == []
    assert await plugin.gather_node_measures() == []
    assert (await plugin.extra_info())["driver"] is None
    assert "libnvidia-ml not found" in caplog.text
    assert await plugin.generate_docker_args({}) == {}
    await plugin.cleanup()


async def test_real_pynvml_without_a_driver_means_no_devices(tmp_path):
    # The real nvidia-ml-py on this GPU-less machine: NVMLError_LibraryNotFound, not a failure.
    plugin = CUDAPlugin({"mps_root": str(tmp_path)}, None, host_facts=HostFacts())
    await plugin.init()
    assert await plugin.available_slots() == {}
    assert plugin.nvml.available is False
    await plugin.cleanup()


async def test_discrete_slots_and_devices(tmp_path):
    plugin = await make_plugin(FakeNVML.from_nvml_json(), tmp_path)
    assert await plugin.available_slots() == {"cuda.device": Decimal(1)}
    assert plugin.slot_types == (("cuda.device", "count"),)
    assert plugin.exclusive_slot_types == {"cuda.device", "cuda.shares", "cuda.device:*-mig"}
    (device,) = await plugin.list_devices()
    assert device.device_id == H100_UUID
    assert device.hw_location == "00000000:00:06.0"
    assert device.memory_size == H100_MEM
    assert device.numa_node is None
    assert device.extra["compute_capability"] == "9.0"
    assert await plugin.extra_info() == {"version": "1.0", "driver": "580.159.04", "cuda_version": "13.0",
                                         "mode": "discrete"}
    alloc_map = plugin.create_alloc_map()
    assert isinstance(alloc_map, DiscreteAllocMap)
    taken = alloc_map.allocate({"cuda.device": Decimal(1)})
    assert taken == {"cuda.device": {H100_UUID: Decimal(1)}}
    with pytest.raises(AllocationError):
        alloc_map.allocate({"cuda.device": Decimal(1)})
    assert plugin.get_attached_devices(taken) == [{
        "device_id": H100_UUID, "model_name": "NVIDIA H100 80GB HBM3",
        "data": {"smp": 0, "mem": H100_MEM, "index": 0, "pci_bus_id": "00000000:00:06.0"}}]
    assert plugin.generate_resource_data(taken) == {"CUDA_GLOBAL_DEVICE_IDS": H100_UUID}


async def test_fractional_slots(tmp_path):
    plugin = await make_plugin(with_copies(FakeNVML.from_nvml_json(), 2), tmp_path, mode="fractional")
    # 85520809984 / 2 GiB = 39.82 shares per H100 (rounded down to 0.01).
    assert await plugin.available_slots() == {"cuda.shares": Decimal("79.64")}
    assert plugin.slot_types == (("cuda.shares", "count"),)
    alloc_map = plugin.create_alloc_map()
    assert isinstance(alloc_map, FractionAllocMap)
    taken = alloc_map.allocate({"cuda.shares": Decimal("0.5")})
    (per_device,) = taken.values()
    assert list(per_device.values()) == [Decimal("0.5")]
    # unit_mem changes the share size; etcd's allocation_mode is accepted as well.
    bigger = await make_plugin(FakeNVML.from_nvml_json(), tmp_path, allocation_mode="fractional",
                               unit_mem="10g")
    assert await bigger.available_slots() == {"cuda.shares": Decimal("7.96")}


async def test_mig_enabled_gpu_offers_slices_not_itself(tmp_path):
    # SYNTHESISED: the captured H100 with MIG on, 3g.40gb + 2g.20gb + two 1g.10gb.
    fake = with_mig(FakeNVML.from_nvml_json(), 0, ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"])
    plugin = await make_plugin(fake, tmp_path)
    assert await plugin.available_slots() == {
        "cuda.device:3g.40gb-mig": Decimal(1), "cuda.device:2g.20gb-mig": Decimal(1),
        "cuda.device:1g.10gb-mig": Decimal(2)}
    assert dict(plugin.slot_types) == {"cuda.device:3g.40gb-mig": "unique", "cuda.device:2g.20gb-mig": "unique",
                                       "cuda.device:1g.10gb-mig": "unique"}
    devices = await plugin.list_devices()
    assert [d.extra["mig_profile"] for d in devices] == ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]
    assert all(d.device_id.startswith("MIG-") and d.extra["parent_uuid"] == H100_UUID for d in devices)
    assert devices[0].processing_units == 60
    alloc_map = plugin.create_alloc_map()
    taken = alloc_map.allocate({"cuda.device:1g.10gb-mig": Decimal(2)})
    assert len(taken["cuda.device:1g.10gb-mig"]) == 2          # two distinct slices
    with pytest.raises(AllocationError):
        alloc_map.allocate({"cuda.device": Decimal(1)})          # the parent is not offered whole
    # Fractional mode offers the same slices (MPS shares are for GPUs without MIG).
    fractional = await make_plugin(fake, tmp_path, mode="fractional")
    assert await fractional.available_slots() == await plugin.available_slots()


async def test_mixed_host(tmp_path):
    # SYNTHESISED: two captured H100s, the second with MIG on.
    fake = with_mig(with_copies(FakeNVML.from_nvml_json(), 2), 1, ["7g.80gb"])
    plugin = await make_plugin(fake, tmp_path)
    assert await plugin.available_slots() == {"cuda.device": Decimal(1), "cuda.device:7g.80gb-mig": Decimal(1)}
    fractional = await make_plugin(fake, tmp_path, mode="fractional")
    assert await fractional.available_slots() == {"cuda.shares": Decimal("39.82"),
                                                  "cuda.device:7g.80gb-mig": Decimal(1)}
    assert dict(fractional.slot_types) == {"cuda.shares": "count", "cuda.device:7g.80gb-mig": "unique"}
    alloc_map = fractional.create_alloc_map()
    (mig,) = fractional.gpus[1].mig_devices
    assert alloc_map.allocate({"cuda.device:7g.80gb-mig": Decimal(1)}) == {
        "cuda.device:7g.80gb-mig": {mig.uuid: Decimal(1)}}
    with pytest.raises(AllocationError):
        alloc_map.allocate({"cuda.device:7g.80gb-mig": Decimal("0.5")})    # a slice is not divisible
    taken = alloc_map.allocate({"cuda.shares": Decimal("1.5")})
    assert taken == {"cuda.shares": {fractional.gpus[0].uuid: Decimal("1.5")}}
    args = await fractional.generate_docker_args({"cuda.device:7g.80gb-mig": {mig.uuid: Decimal(1)}})
    assert f"CUDA_VISIBLE_DEVICES={mig.uuid}" in args["Env"]
    assert not any(e.startswith("CUDA_MPS_") for e in args["Env"])          # no MPS for a MIG slice


def test_settings_are_checked():
    assert CUDASettings.from_config({}) == CUDASettings()
    # etcd (config/plugins/..., handed in as "etcd") wins over agent.toml, as for the mock accelerator.
    etcd = {"accelerator/cuda/allocation_mode": "fractional", "accelerator/cuda/unit_mem": "4g"}
    settings = CUDASettings.from_config({"mode": "discrete", "unit_mem": "1g", "etcd": etcd})
    assert (settings.mode, settings.unit_mem) == ("fractional", 4 * 2**30)
    assert CUDASettings.from_config({"mode": "fractional", "etcd": {}}).mode == "fractional"
    assert CUDASettings.from_config({"unit-mem": "1g"}).unit_mem == 2**30
    for bad in ({"mode": "shared"}, {"unit_mem": "12"}, {"strategy": "random"}, {"unit_mem": "lots"}):
        with pytest.raises(ValueError):
            CUDASettings.from_config(bad)


async def test_unknown_device_in_an_allocation_is_refused(tmp_path):
    plugin = await make_plugin(FakeNVML.from_nvml_json(), tmp_path)
    with pytest.raises(AllocationError, match="no such CUDA device"):
        await plugin.generate_docker_args({"cuda.device": {"GPU-nope": Decimal(1)}})


async def test_a_lost_gpu_does_not_hide_the_others(tmp_path, caplog):
    class OneLost(FakeNVML):
        def nvmlDeviceGetHandleByIndex(self, index):
            if index == 0:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
            return super().nvmlDeviceGetHandleByIndex(index)

    two = with_copies(FakeNVML.from_nvml_json(), 2)
    plugin = await make_plugin(OneLost(two.driver, two.cuda_driver_version, two.gpus), tmp_path)
    assert [g.uuid for g in plugin.gpus] == [two.gpus[1].uuid]
    assert await plugin.available_slots() == {"cuda.device": Decimal(1)}
    assert "GPU 0 is not offered" in caplog.text
