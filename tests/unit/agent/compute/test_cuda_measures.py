"""cuda_util / cuda_mem for live_stat: node and container measures from the H100 readings."""

from __future__ import annotations

from decimal import Decimal

from bai.agent.compute.cuda.docker_args import HostFacts
from bai.agent.compute.cuda.plugin import CUDAPlugin, container_pids
from tests.fixtures.fake_nvml import FakeNVML, with_copies, with_mig

H100_MEM = 85520809984
USED = 503316480                     # nvml.json: memory used in its samples


class NoMPS:
    async def start(self, uuid, dirs): ...

    async def send(self, dirs, commands):
        return ""

    async def stop(self, dirs): ...


async def plugin_for(fake, tmp_path, **config) -> CUDAPlugin:
    plugin = CUDAPlugin({"mps_root": str(tmp_path / "mps"), **config}, None, nvml_lib=fake,
                        mps_control=NoMPS(), host_facts=HostFacts(), cgroup_root=tmp_path / "cgroup")
    await plugin.init()
    return plugin


def by_key(measures):
    return {m.key: m for m in measures}


async def test_node_measures_from_the_capture(tmp_path):
    fake = with_copies(FakeNVML.from_nvml_json(), 2)
    fake.gpus[1].gpu_util = 87              # as under load (the capture missed the load window)
    plugin = await plugin_for(fake, tmp_path)
    measures = by_key(await plugin.gather_node_measures())
    a, b = (g.uuid for g in plugin.gpus)
    util = measures["cuda_util"]
    assert (util.current, util.capacity, util.unit) == (Decimal(87), Decimal(200), "%")
    assert util.per_device == {a: Decimal(0), b: Decimal(87)}
    mem = measures["cuda_mem"]
    assert (mem.current, mem.capacity, mem.unit) == (Decimal(2 * USED), Decimal(2 * H100_MEM), "bytes")
    assert mem.per_device == {a: Decimal(USED), b: Decimal(USED)}


async def test_node_measures_from_nvidia_smi_xml(tmp_path):
    plugin = await plugin_for(FakeNVML.from_smi_xml(), tmp_path)
    measures = by_key(await plugin.gather_node_measures())
    assert measures["cuda_util"].current == 0
    assert measures["cuda_mem"].current == 0 and measures["cuda_mem"].capacity == H100_MEM


async def test_container_measures_of_a_whole_gpu_and_a_mig_slice(tmp_path):
    fake = with_mig(with_copies(FakeNVML.from_nvml_json(), 2), 1, ["3g.40gb"])   # SYNTHESISED MIG
    fake.gpus[0].gpu_util = 40
    plugin = await plugin_for(fake, tmp_path)
    whole = plugin.gpus[0].uuid
    measures = by_key(await plugin.gather_container_measures("c1", {"cuda.device": {whole: Decimal(1)}}))
    assert measures["cuda_util"].per_device == {whole: Decimal(40)}
    assert measures["cuda_mem"].per_device == {whole: Decimal(USED)}
    (mig,) = plugin.gpus[1].mig_devices
    measures = by_key(await plugin.gather_container_measures(
        "c2", {"cuda.device:3g.40gb-mig": {mig.uuid: Decimal(1)}}))
    assert "cuda_util" not in measures             # NVML has no utilisation for a MIG slice
    assert measures["cuda_mem"].per_device == {mig.uuid: Decimal(13 * 2**20)}
    assert measures["cuda_mem"].capacity == mig.memory_total
    assert await plugin.gather_container_measures("c3", {}) == []


async def test_container_measures_on_a_shared_gpu_count_its_own_processes(tmp_path):
    fake = FakeNVML.from_nvml_json()
    fake.gpus[0].processes = [(4100, 3 * 2**30), (4200, 5 * 2**30)]    # two kernels' MPS clients
    plugin = await plugin_for(fake, tmp_path, mode="fractional")
    uuid = plugin.gpus[0].uuid
    scope = tmp_path / "cgroup/system.slice/docker-abc123.scope"
    scope.mkdir(parents=True)
    (scope / "cgroup.procs").write_text("4100\n4101\n")
    allocation = {"cuda.shares": {uuid: Decimal(2)}}
    measures = by_key(await plugin.gather_container_measures("abc123", allocation))
    assert measures["cuda_mem"].per_device == {uuid: Decimal(3 * 2**30)}
    # cgroupfs driver layout
    other = tmp_path / "cgroup/docker/def456"
    other.mkdir(parents=True)
    (other / "cgroup.procs").write_text("4200\n")
    measures = by_key(await plugin.gather_container_measures("def456", allocation))
    assert measures["cuda_mem"].current == 5 * 2**30
    # Unknown container: the device's figure rather than nothing.
    measures = by_key(await plugin.gather_container_measures("gone", allocation))
    assert measures["cuda_mem"].current == USED


def test_container_pids_refuses_odd_ids(tmp_path):
    assert container_pids("../../etc", tmp_path) is None
    assert container_pids("", tmp_path) is None
    assert container_pids("nothing-here", tmp_path) is None
