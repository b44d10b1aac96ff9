"""Container arguments of the CUDA plugin, with and without the NVIDIA container toolkit: a pure
function of the host facts, which are themselves read from ldconfig output and /dev, /proc trees
laid out as on the captured H100 host (env.txt)."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

from bai.agent.compute.cuda.docker_args import (
    CONTAINER_LD_LIBRARY_PATH,
    HeldGPUs,
    HostFacts,
    docker_args,
    host_facts_from,
    mig_cap_minor,
    parse_ldconfig,
)
from bai.agent.compute.cuda.nvml import NVML
from bai.agent.compute.cuda.plugin import CUDAPlugin
from tests.fixtures.fake_nvml import H100_DIR, FakeNVML, with_copies, with_mig

# The "## libs" section of env.txt is `ldconfig -p | grep nvidia/cuda` on the H100 host.
ENV_TXT = (H100_DIR / "env.txt").read_text()
LDCONFIG = ENV_TXT.split("## libs\n", 1)[1].split("##", 1)[0] + (
    "\tlibcuda.so.1 (libc6) => /usr/lib32/libcuda.so.1\n"                      # 32-bit: skipped
    "\tlibnvidia-ptxjitcompiler.so.1 (libc6,x86-64) => /lib/libnvidia-ptxjitcompiler.so.1\n"
    "\tlibz.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libz.so.1\n"          # not the driver's
)
DEV_NODES = ["nvidia0", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-caps/nvidia-cap1",
             "nvidia-caps/nvidia-cap2"]


def test_parse_ldconfig_takes_the_first_64_bit_entry_of_driver_libraries():
    assert parse_ldconfig(LDCONFIG) == {
        "libnvidia-ml.so.1": "/usr/local/nvidia/lib64/libnvidia-ml.so.1",
        "libnvidia-ml.so": "/usr/local/nvidia/lib64/libnvidia-ml.so",
        "libcuda.so.1": "/usr/local/nvidia/lib64/libcuda.so.1",
        "libcuda.so": "/usr/local/nvidia/lib64/libcuda.so",
        "libnvidia-ptxjitcompiler.so.1": "/lib/libnvidia-ptxjitcompiler.so.1",
    }
    assert parse_ldconfig("") == {}


def fake_host(tmp_path: Path, with_mig_caps: bool = False) -> tuple[Path, Path, Path]:
    dev, proc, bin_dir = tmp_path / "dev", tmp_path / "proc", tmp_path / "bin"
    for node in DEV_NODES:
        (dev / node).parent.mkdir(parents=True, exist_ok=True)
        (dev / node).touch()
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").touch(mode=0o755)
    if with_mig_caps:
        gi = proc / "driver/nvidia/capabilities/gpu0/mig/gi1"
        (gi / "ci0").mkdir(parents=True)
        (gi / "access").write_text("DeviceFileMinor: 12\nDeviceFileMode: 292\nDeviceFileModify: 1\n")
        (gi / "ci0/access").write_text("DeviceFileMinor: 13\nDeviceFileMode: 292\nDeviceFileModify: 1\n")
    return dev, proc, bin_dir


def test_host_facts_from_a_host_tree(tmp_path):
    dev, proc, bin_dir = fake_host(tmp_path)
    facts = host_facts_from(LDCONFIG, [], ["runc", "io.containerd.runc.v2"], dev_root=dev, proc_root=proc,
                            binary_path=[str(bin_dir)])
    assert facts.device_nodes == {f"/dev/{n}" for n in DEV_NODES}
    assert facts.binaries == {"nvidia-smi": os.path.realpath(bin_dir / "nvidia-smi")}
    assert "libcuda.so.1" in facts.libraries
    assert facts.nvidia_runtime is False
    assert host_facts_from("", [], ["runc", "nvidia"], dev_root=dev, proc_root=proc).nvidia_runtime is True


def h100(count: int = 1):
    nvml = NVML(with_copies(FakeNVML.from_nvml_json(), count) if count > 1 else FakeNVML.from_nvml_json())
    nvml.open()
    return nvml.devices()


def test_without_toolkit_devices_binds_and_env(tmp_path):
    dev, proc, bin_dir = fake_host(tmp_path)
    facts = host_facts_from(LDCONFIG, [], ["runc"], dev_root=dev, proc_root=proc, binary_path=[str(bin_dir)])
    gpus = h100(2)
    args = docker_args(HeldGPUs(gpus=[gpus[1]]), facts)
    uuid = gpus[1].uuid
    assert args["Env"] == [f"CUDA_VISIBLE_DEVICES={uuid}", f"NVIDIA_VISIBLE_DEVICES={uuid}",
                           f"LD_LIBRARY_PATH={CONTAINER_LD_LIBRARY_PATH}"]
    nodes = [d["PathOnHost"] for d in args["HostConfig"]["Devices"]]
    # Control nodes, then only the held GPU's node (minor 1), never /dev/nvidia0 or the MIG caps.
    assert nodes == ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia1"]
    assert all(d["PathInContainer"] == d["PathOnHost"] and d["CgroupPermissions"] == "rwm"
               for d in args["HostConfig"]["Devices"])
    binds = args["HostConfig"]["Binds"]
    assert all(b.endswith(":ro") for b in binds)
    assert "/usr/local/nvidia/lib64/libcuda.so.1:/usr/local/nvidia/lib64/libcuda.so.1:ro" in binds
    assert f"{os.path.realpath(bin_dir / 'nvidia-smi')}:/usr/local/nvidia/bin/nvidia-smi:ro" in binds
    assert "DeviceRequests" not in args["HostConfig"]


def test_with_toolkit_device_requests(tmp_path):
    gpus = h100(2)
    facts = HostFacts(device_nodes=frozenset({"/dev/nvidiactl"}), nvidia_runtime=True,
                      libraries={"libcuda.so.1": "/lib/libcuda.so.1"})
    args = docker_args(HeldGPUs(gpus=gpus), facts)
    ids = [g.uuid for g in gpus]
    assert args == {
        "Env": [f"CUDA_VISIBLE_DEVICES={','.join(ids)}", f"NVIDIA_VISIBLE_DEVICES={','.join(ids)}",
                "NVIDIA_DRIVER_CAPABILITIES=compute,utility"],
        "HostConfig": {"DeviceRequests": [{"Driver": "nvidia", "Count": 0, "DeviceIDs": ids,
                                           "Capabilities": [["gpu", "compute", "utility"]], "Options": {}}]},
    }
    # A kernel without GPUs on a toolkit host: an image's NVIDIA_VISIBLE_DEVICES=all is overridden.
    assert docker_args(HeldGPUs(), facts) == {"Env": ["NVIDIA_VISIBLE_DEVICES=void"]}
    assert docker_args(HeldGPUs(), HostFacts()) == {}


def test_mig_slice_gets_its_parent_node_and_its_caps(tmp_path):
    dev, proc, _ = fake_host(tmp_path, with_mig_caps=True)
    fake = with_mig(FakeNVML.from_nvml_json(), 0, ["1g.10gb", "2g.20gb"])   # SYNTHESISED MIG layout
    nvml = NVML(fake)
    nvml.open()
    (gpu,) = nvml.devices()
    first, second = gpu.mig_devices
    assert (first.gpu_instance_id, first.compute_instance_id) == (1, 0)
    facts = host_facts_from(LDCONFIG, gpu.mig_devices, [], dev_root=dev, proc_root=proc)
    assert facts.mig_caps[first.uuid] == ("/dev/nvidia-caps/nvidia-cap12", "/dev/nvidia-caps/nvidia-cap13")
    assert facts.mig_caps[second.uuid] == ()          # no access files for gi2 in this tree
    args = docker_args(HeldGPUs(migs=[first]), facts)
    assert args["Env"][:2] == [f"CUDA_VISIBLE_DEVICES={first.uuid}", f"NVIDIA_VISIBLE_DEVICES={first.uuid}"]
    nodes = [d["PathOnHost"] for d in args["HostConfig"]["Devices"]]
    assert nodes[-3:] == ["/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap12", "/dev/nvidia-caps/nvidia-cap13"]
    toolkit = docker_args(HeldGPUs(migs=[first]), HostFacts(nvidia_runtime=True))
    assert toolkit["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == [first.uuid]
    assert mig_cap_minor("DeviceFileMinor: 7\n") == 7 and mig_cap_minor("garbage") is None


async def test_plugin_args_for_an_allocation(tmp_path):
    dev, proc, bin_dir = fake_host(tmp_path)
    facts = host_facts_from(LDCONFIG, [], [], dev_root=dev, proc_root=proc, binary_path=[str(bin_dir)])
    plugin = CUDAPlugin({}, None, nvml_lib=FakeNVML.from_nvml_json(), host_facts=facts)
    await plugin.init()
    taken = plugin.create_alloc_map().allocate({"cuda.device": Decimal(1)})
    args = await plugin.generate_docker_args(taken)
    assert args == docker_args(HeldGPUs(gpus=plugin.gpus), facts)
    assert "/dev/nvidia0" in [d["PathOnHost"] for d in args["HostConfig"]["Devices"]]
    await plugin.cleanup()
