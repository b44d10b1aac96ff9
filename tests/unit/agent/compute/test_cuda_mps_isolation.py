"""``mps-isolation = "kernel"`` (the default): each kernel holding cuda.shares gets its own MPS
control daemon whose server-level limits are that kernel's own share (what MPS enforces; a
client's environment can only narrow them), its pipe directory mounted read-only into that
container alone; the daemon is stopped and its directories removed when the kernel ends, and a
restarted agent re-adopts it from the kernel's allocation (the container label). The daemon
itself needs a GPU: the process seam records what it is asked."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bai.agent.compute.cuda import mps
from bai.agent.compute.cuda.docker_args import HostFacts
from bai.agent.compute.cuda.plugin import CUDAPlugin, CUDASettings
from bai.agent.compute.registry import (
    ComputeRegistry,
    allocated_slots,
    allocation_from_json,
    allocation_to_json,
)
from tests.fixtures.fake_nvml import FakeNVML

from .test_cuda_mps import RecordingControl
from .test_cuda_registry import INTRINSIC, config, eps

GiB = 2**30
CONTROL = RecordingControl(servers="")


class OneH100(CUDAPlugin):
    """The real plugin on the captured H100, its MPS seam the module's recorder."""

    def __init__(self, plugin_config: Any, agent_config: Any) -> None:
        super().__init__(plugin_config, agent_config, nvml_lib=FakeNVML.from_nvml_json(), mps_control=CONTROL,
                         host_facts=HostFacts(device_nodes=frozenset({"/dev/nvidiactl"})))


def plugin(tmp_path: Path, control: RecordingControl) -> CUDAPlugin:
    return CUDAPlugin({"mode": "fractional", "mps-root": str(tmp_path / "mps")}, None,
                      nvml_lib=FakeNVML.from_nvml_json(), mps_control=control,
                      host_facts=HostFacts(device_nodes=frozenset({"/dev/nvidiactl"})))


def test_isolation_setting() -> None:
    assert CUDASettings.from_config({}).mps_isolation == "kernel"
    assert CUDASettings.from_config({"mps-isolation": "GPU"}).mps_isolation == "gpu"
    with pytest.raises(ValueError, match="mps-isolation must be kernel or gpu, not 'user'"):
        CUDASettings.from_config({"mps-isolation": "user"})


async def test_each_kernel_gets_its_own_daemon_with_its_own_limits(tmp_path: Path) -> None:
    control = RecordingControl(servers="4242\n")
    cuda = plugin(tmp_path, control)
    await cuda.init()
    uuid = cuda.gpus[0].uuid
    amap = cuda.create_alloc_map()
    small, big = amap.allocate({"cuda.shares": Decimal("0.5")}), amap.allocate({"cuda.shares": Decimal(8)})
    small_args, big_args = await cuda.generate_docker_args(small), await cuda.generate_docker_args(big)
    tokens = [mps.instance_token(a["cuda.shares"]) for a in (small, big)]
    assert None not in tokens and tokens[0] != tokens[1]
    assert control.started == [uuid, uuid]                          # two daemons on one GPU
    small_limits, big_limits = mps.ClientLimits(2, GiB), mps.ClientLimits(21, 16 * GiB)
    # each server's limits are its own kernel's, not the largest holder's
    assert control.sent == [(tokens[0], ["get_server_list"]), (tokens[0], mps.control_commands(small_limits, [4242])),
                            (tokens[1], ["get_server_list"]), (tokens[1], mps.control_commands(big_limits, [4242]))]
    assert mps.control_commands(small_limits)[:2] == ["set_default_active_thread_percentage 2",
                                                      "set_default_device_pinned_mem_limit 0 1024M"]
    root = tmp_path / "mps" / "kernels"
    assert small_args["HostConfig"]["Binds"] == [f"{root}/{tokens[0]}/pipe:/tmp/nvidia-mps:ro",
                                                 f"{root}/{tokens[0]}/shm:/dev/shm:rw"]
    assert f"{root}/{tokens[0]}/pipe:/tmp/nvidia-mps:ro" not in big_args["HostConfig"]["Binds"]
    assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=2" in small_args["Env"]
    # the token is a zero-amount entry: the kernel still holds 0.5 shares of one GPU
    assert small["cuda.shares"][uuid] == Decimal("0.5") and sum(small["cuda.shares"].values()) == Decimal("0.5")
    assert [d["device_id"] for d in cuda.get_attached_devices(small)] == [uuid]
    # the small kernel ends: only its daemon stops, its directories go
    amap.free(small)
    await cuda.release(small)
    assert control.stopped == [tokens[0]]
    assert not (root / tokens[0]).exists() and (root / tokens[1]).is_dir()
    assert set(cuda.kernel_mps.running) == {tokens[1]}
    assert amap.used() == {"cuda.shares": Decimal(8)}
    # agent shutdown leaves the remaining kernel's daemon running for it
    await cuda.cleanup()
    assert control.stopped == [tokens[0]]


async def test_a_daemon_that_refuses_the_limits_fails_the_kernel(tmp_path: Path) -> None:
    class Refusing(RecordingControl):
        async def send(self, dirs: Any, commands: Any) -> str:
            raise RuntimeError("nvidia-cuda-mps-control exited 1")

    control = Refusing()
    cuda = plugin(tmp_path, control)
    await cuda.init()
    taken = cuda.create_alloc_map().allocate({"cuda.shares": Decimal(1)})
    with pytest.raises(RuntimeError, match="exited 1"):
        await cuda.generate_docker_args(taken)
    token = mps.instance_token(taken["cuda.shares"])
    assert token is not None and control.stopped == [token]
    assert not (tmp_path / "mps" / "kernels" / token).exists() and cuda.kernel_mps.running == {}


def test_only_well_formed_tokens_name_a_daemon(tmp_path: Path) -> None:
    daemons = mps.KernelDaemons(RecordingControl(), tmp_path)
    assert mps.instance_token({"mps-instance:../../etc": Decimal(0)}) is None
    assert mps.instance_token({"GPU-1": Decimal(1)}) is None
    with pytest.raises(ValueError, match="not an MPS instance token"):
        daemons.dirs("../x")


async def test_the_label_carries_the_daemon_across_an_agent_restart(tmp_path: Path) -> None:
    for record in (CONTROL.started, CONTROL.sent, CONTROL.stopped):
        record.clear()
    cfg = config(tmp_path, mode="fractional")
    first = await ComputeRegistry.load(cfg, {}, eps(**INTRINSIC, cuda=f"{__name__}:OneH100"))
    held = first.allocate({"cpu": Decimal(1), "cuda.shares": Decimal(2)})
    await first.docker_args(held)
    label = json.dumps(allocation_to_json(held))                    # what the agent stores on the container
    token = mps.instance_token(held["cuda"]["cuda.shares"])
    assert token is not None and allocated_slots(held)["cuda.shares"] == Decimal(2)
    await first.cleanup()                                           # the agent stops; the kernel runs on
    assert CONTROL.stopped == []
    second = await ComputeRegistry.load(cfg, {}, eps(**INTRINSIC, cuda=f"{__name__}:OneH100"))
    try:
        again = allocation_from_json(json.loads(label))
        second.apply(again)
        await second.restored(again)
        cuda = second.plugins["cuda"]
        assert set(cuda.kernel_mps.running) == {token}               # type: ignore[attr-defined]
        assert CONTROL.sent[-1] == (token, mps.control_commands(mps.ClientLimits(6, 4 * GiB)))
        assert second.used()["cuda.shares"] == Decimal(2)
        # the kernel ends under the new agent: its daemon is stopped
        second.free(again)
        await second.released(again)
        assert CONTROL.stopped == [token] and cuda.kernel_mps.running == {}  # type: ignore[attr-defined]
        assert second.used()["cuda.shares"] == Decimal(0)
    finally:
        await second.cleanup()


async def test_daemons_nobody_re_adopted_are_swept_after_the_grace(tmp_path: Path) -> None:
    """A kernel that ended while no agent ran leaves its daemon: once the restarted agent had
    time to re-adopt its kernels, the daemons none of them claimed are stopped and removed."""
    control = RecordingControl()
    cuda = plugin(tmp_path, control)
    await cuda.init()
    uuid = cuda.gpus[0].uuid
    kept, orphan = "a" * 32, "b" * 32
    await cuda.kernel_mps.attach(orphan, uuid, mps.ClientLimits(2, GiB))
    cuda.kernel_mps.forget_all()                                     # the agent went away
    await cuda.kernel_mps.attach(kept, uuid, mps.ClientLimits(2, GiB))  # re-adopted by a kernel
    (tmp_path / "mps" / "kernels" / "not-a-token").mkdir()
    cuda.retain(set())
    assert cuda._sweep is None                                       # within the grace: nothing
    cuda._started_at -= 10 * 60
    cuda.retain(set())
    assert cuda._sweep is not None and await cuda._sweep == [orphan]
    assert control.stopped == [orphan]
    assert sorted(p.name for p in (tmp_path / "mps" / "kernels").iterdir()) == [kept, "not-a-token"]
    cuda.retain(set())                                               # once per agent start
    assert control.stopped == [orphan]
    await cuda.cleanup()
