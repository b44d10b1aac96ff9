"""Fractional GPUs through MPS: the arithmetic of the limits, the control lines sent, the daemon
bookkeeping (the daemon itself needs a GPU: the process seam records what it is asked), and the
kernel's container arguments."""

from __future__ import annotations

import stat
from decimal import Decimal

import pytest

from bai.agent.compute.base import AllocationError
from bai.agent.compute.cuda import mps
from bai.agent.compute.cuda.docker_args import HostFacts
from bai.agent.compute.cuda.plugin import CUDAPlugin
from tests.fixtures.fake_nvml import FakeNVML, with_copies

GiB, MiB = 2**30, 2**20
H100_MEM = 85520809984
H100_SHARES = Decimal("39.82")


class RecordingControl:
    """The MPS process seam, recording; ``servers`` is what get_server_list answers."""

    def __init__(self, servers: str = "") -> None:
        self.servers = servers
        self.started: list[str] = []
        self.sent: list[tuple[str, list[str]]] = []
        self.stopped: list[str] = []

    async def start(self, uuid, dirs):
        assert dirs.pipe.is_dir() and dirs.log.is_dir() and dirs.shm.is_dir()
        self.started.append(uuid)

    async def send(self, dirs, commands):
        self.sent.append((dirs.root.name, list(commands)))
        return self.servers if commands == ["get_server_list"] else ""

    async def stop(self, dirs):
        self.stopped.append(dirs.root.name)


def test_share_capacity():
    assert mps.device_share_capacity(H100_MEM, 2 * GiB) == H100_SHARES
    assert mps.device_share_capacity(16 * GiB, 2 * GiB) == Decimal(8)
    assert mps.device_share_capacity(GiB, 2 * GiB) == Decimal("0.5")


@pytest.mark.parametrize(("shares", "pct", "mem"), [
    (Decimal("0.5"), 2, GiB),                      # 100 * 0.5 / 39.82 = 1.26 -> 2 %
    (Decimal("1"), 3, 2 * GiB),
    (Decimal("10"), 26, 20 * GiB),                 # 25.1 -> 26 %
    (Decimal("0.01"), 1, 21474836 // MiB * MiB),   # 0.01 * 2 GiB, rounded down to MiB
    (H100_SHARES, 100, H100_MEM // MiB * MiB),     # the whole GPU: capped at its memory
])
def test_client_limits(shares, pct, mem):
    limits = mps.client_limits(shares, H100_SHARES, H100_MEM, 2 * GiB)
    assert limits == mps.ClientLimits(pct, mem)


def test_client_limits_edges():
    tiny = mps.client_limits(Decimal("0.0001"), H100_SHARES, H100_MEM, 2 * GiB)
    assert tiny == mps.ClientLimits(1, MiB)          # never 0 %, never 0 bytes
    with pytest.raises(ValueError):
        mps.client_limits(Decimal(0), H100_SHARES, H100_MEM, 2 * GiB)


def test_client_env_and_control_commands():
    limits = mps.ClientLimits(26, 20 * GiB)
    assert mps.client_env(limits) == [
        "CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps",
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=26",
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=20480M",
    ]
    assert mps.control_commands(limits) == [
        "set_default_active_thread_percentage 26",
        "set_default_device_pinned_mem_limit 0 20480M",
    ]
    assert mps.control_commands(limits, [4242])[2:] == [
        "set_active_thread_percentage 4242 26",
        "set_device_pinned_mem_limit 4242 0 20480M",
    ]
    assert mps.parse_server_list("4242\n4343\n") == [4242, 4343]
    assert mps.parse_server_list("") == []
    assert mps.ceiling_of([mps.ClientLimits(2, 4 * GiB), mps.ClientLimits(26, GiB)]) == mps.ClientLimits(26, 4 * GiB)
    assert mps.ceiling_of([]) is None


async def test_daemons_start_once_and_follow_the_largest_holder(tmp_path):
    control = RecordingControl(servers="777\n")
    daemons = mps.MPSDaemons(control, tmp_path)
    small, large = mps.ClientLimits(2, GiB), mps.ClientLimits(26, 20 * GiB)
    dirs = await daemons.attach("GPU-a", small)
    assert control.started == ["GPU-a"]
    assert dirs.binds() == [f"{tmp_path}/GPU-a/pipe:/tmp/nvidia-mps:rw", f"{tmp_path}/GPU-a/shm:/dev/shm:rw"]
    assert stat.S_IMODE(dirs.shm.stat().st_mode) == 0o1777
    assert control.sent == [("GPU-a", ["get_server_list"]), ("GPU-a", mps.control_commands(small, [777]))]
    await daemons.attach("GPU-a", large)
    assert control.started == ["GPU-a"]                       # one daemon per GPU
    assert control.sent[-1] == ("GPU-a", mps.control_commands(large, [777]))
    control.sent.clear()
    await daemons.attach("GPU-a", small)                      # below the ceiling: nothing to send
    assert control.sent == []
    await daemons.detach("GPU-a", large)                      # the large kernel ended: ceiling lowers
    assert control.sent[-1] == ("GPU-a", mps.control_commands(small, [777]))
    assert daemons.holders("GPU-a") == {small: 2}
    await daemons.detach("GPU-a", large)                      # unknown: ignored
    await daemons.attach("GPU-b", small)
    assert daemons.running == {"GPU-a", "GPU-b"}
    await daemons.stop_all()
    assert control.stopped == ["GPU-a", "GPU-b"]
    assert daemons.running == frozenset()


async def test_a_refusing_daemon_is_logged_not_raised(tmp_path, caplog):
    class Refusing(RecordingControl):
        async def send(self, dirs, commands):
            raise RuntimeError("nvidia-cuda-mps-control exited 1")

    daemons = mps.MPSDaemons(Refusing(), tmp_path)
    await daemons.attach("GPU-a", mps.ClientLimits(2, GiB))
    assert "refused the limits" in caplog.text


async def fractional_plugin(tmp_path, control, gpus: int = 1, isolation: str = "gpu") -> CUDAPlugin:
    fake = FakeNVML.from_nvml_json() if gpus == 1 else with_copies(FakeNVML.from_nvml_json(), gpus)
    plugin = CUDAPlugin({"mode": "fractional", "mps-root": str(tmp_path / "mps"), "mps-isolation": isolation},
                        None, nvml_lib=fake,
                        mps_control=control, host_facts=HostFacts(device_nodes=frozenset({"/dev/nvidiactl"})))
    await plugin.init()
    return plugin


async def test_plugin_gives_a_kernel_its_mps_limits(tmp_path):
    control = RecordingControl()
    plugin = await fractional_plugin(tmp_path, control)
    alloc_map = plugin.create_alloc_map()
    taken = alloc_map.allocate({"cuda.shares": Decimal("0.5")})
    args = await plugin.generate_docker_args(taken)
    uuid = plugin.gpus[0].uuid
    assert control.started == [uuid]
    assert args["Env"] == [
        f"CUDA_VISIBLE_DEVICES={uuid}", f"NVIDIA_VISIBLE_DEVICES={uuid}",
        "CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=2",
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=1024M",
    ]
    root = tmp_path / "mps" / uuid
    assert args["HostConfig"]["Binds"] == [f"{root}/pipe:/tmp/nvidia-mps:rw", f"{root}/shm:/dev/shm:rw"]
    assert [d["PathOnHost"] for d in args["HostConfig"]["Devices"]] == ["/dev/nvidiactl", "/dev/nvidia0"]
    (attached,) = plugin.get_attached_devices(taken)
    assert attached["data"]["shares"] == "0.5"
    assert attached["data"]["mps"] == {"thread_percentage": 2, "pinned_mem": GiB}
    await plugin.release(taken)
    assert plugin.mps.holders(uuid) == {}
    await plugin.restore(taken)                        # an agent restart re-registers the kernel
    assert plugin.mps.holders(uuid) == {mps.ClientLimits(2, GiB): 1}
    await plugin.cleanup()
    assert control.stopped == [uuid]


async def test_shares_over_two_gpus_are_refused(tmp_path):
    control = RecordingControl()
    plugin = await fractional_plugin(tmp_path, control, gpus=2)
    a, b = (g.uuid for g in plugin.gpus)
    with pytest.raises(AllocationError, match="one GPU"):
        await plugin.generate_docker_args({"cuda.shares": {a: Decimal(30), b: Decimal(30)}})
    assert control.started == []                        # nothing started for a refused kernel
    # The alloc map keeps a request that fits one GPU on one GPU, and refuses one that only a
    # split over GPUs would fit, changing nothing.
    alloc_map = plugin.create_alloc_map()
    taken = alloc_map.allocate({"cuda.shares": Decimal(30)})
    assert len(taken["cuda.shares"]) == 1
    with pytest.raises(AllocationError, match="no single GPU has 40 shares free"):
        alloc_map.allocate({"cuda.shares": Decimal(40)})
    assert alloc_map.used() == {"cuda.shares": Decimal(30)}
    assert len(alloc_map.allocate({"cuda.shares": Decimal(39)})["cuda.shares"]) == 1   # the other GPU
