"""scripts/gpu_check.py: what can run without a GPU (arguments, output from the H100 captures, the
no-GPU exit). The session part needs a GPU host."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from bai.agent.compute.cuda.docker_args import HostFacts
from bai.agent.compute.cuda.plugin import CUDAPlugin
from tests.fixtures.fake_nvml import FakeNVML, with_mig

SCRIPT = Path(__file__).resolve().parents[4] / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


def test_arguments(gpu_check, capsys):
    args = gpu_check.parse_args([])
    assert (args.image, args.shares, args.discover_only, args.mode) == ("python", None, False, None)
    args = gpu_check.parse_args(["--shares", "0.5", "--mode", "fractional", "--timeout", "30"])
    assert args.shares == Decimal("0.5") and args.mode == "fractional" and args.timeout == 30
    for bad in (["--shares", "-1"], ["--shares", "nan"], ["--timeout", "0"], ["--timeout", "nan"],
                ["--mode", "shared"]):
        with pytest.raises(SystemExit) as exc:
            gpu_check.parse_args(bad)
        assert exc.value.code == 2
    assert "--shares" in capsys.readouterr().err


async def test_discovery_output_from_the_captures(gpu_check, tmp_path):
    plugin = CUDAPlugin({"mps_root": str(tmp_path)}, None, nvml_lib=FakeNVML.from_nvml_json(),
                        host_facts=HostFacts(device_nodes=frozenset({"/dev/nvidiactl", "/dev/nvidia0"}),
                                             libraries={"libcuda.so.1": "/lib/libcuda.so.1"},
                                             binaries={"nvidia-smi": "/usr/bin/nvidia-smi"}))
    await plugin.init()
    text = gpu_check.format_discovery(await plugin.list_devices(), await plugin.available_slots(),
                                      await plugin.extra_info(), plugin.facts)
    assert text.splitlines() == [
        "driver 580.159.04, CUDA 13.0, mode discrete",
        "  GPU-2ae65ffe-34ec-cd9b-efee-ac85ca8575f7  NVIDIA H100 80GB HBM3  79.6 GiB  00000000:00:06.0  "
        "numa -  cc 9.0  (index 0)",
        "slots: cuda.device=1",
        "containers: device nodes 2, driver libraries 1, binaries nvidia-smi",
    ]
    mig = CUDAPlugin({}, None, nvml_lib=with_mig(FakeNVML.from_nvml_json(), 0, ["7g.80gb"]),
                     host_facts=HostFacts(nvidia_runtime=True))
    await mig.init()
    text = gpu_check.format_discovery(await mig.list_devices(), await mig.available_slots(),
                                      await mig.extra_info(), mig.facts)
    assert "(MIG 7g.80gb of GPU-2ae65ffe-34ec-cd9b-efee-ac85ca8575f7)" in text
    assert "slots: cuda.device:7g.80gb-mig=1" in text
    assert text.endswith("NVIDIA container runtime present -> DeviceRequests")


def test_live_stat_and_offered_slots(gpu_check):
    stat = {"cpu_util": {"current": "3"},
            "cuda_util": {"current": "87", "capacity": "100", "unit_hint": "%"},
            "cuda_mem": {"current": "503316480", "capacity": "85520809984", "unit_hint": "bytes"}}
    assert gpu_check.format_live_stat(stat) == "cuda_mem=503316480/85520809984 bytes, cuda_util=87/100 %"
    assert gpu_check.format_live_stat({}) == "no cuda_* figures yet"
    agents = [{"id": "a", "available_slots": '{"cpu": "2", "cuda.shares": "39.82"}'},
              {"id": "b", "available_slots": {"cuda.device": "0"}}]
    assert gpu_check.offered(agents, "cuda.shares") is True
    assert gpu_check.offered(agents, "cuda.device") is False


async def test_no_gpu_here_exits_2_with_a_message(gpu_check, capsys):
    assert await gpu_check.main(["--discover-only"]) == gpu_check.EXIT_NO_GPU
    out = capsys.readouterr()
    assert "slots: none" in out.out
    assert "no NVIDIA GPU found" in out.err


def test_limit_verdicts(gpu_check):
    """--shares: a process raising its MPS environment must stay within the session's share."""
    held = {"probe": "raised", "granted_pct": 2, "granted_mem_bytes": 2**30, "sm_total": 132, "sm_usable": 4,
            "affinity_error": None, "over_limit_alloc": "refused (2)"}
    assert gpu_check.limit_problems(held) == []                     # ceil(132 * 2%) = 3, +2 granularity
    assert gpu_check.limit_problems({**held, "sm_usable": 132}) == [
        "the raised environment got 132 of 132 SMs; its share (2%) allows 5"]
    assert gpu_check.limit_problems({**held, "over_limit_alloc": "allowed"}) == [
        "allocating 512 MiB beyond the 1073741824-byte limit succeeded"]
    assert gpu_check.limit_problems({**held, "sm_usable": None, "affinity_error": 801}) == [
        "cuCtxGetExecAffinity failed (CUDA error 801): SM limit unknown"]
    assert gpu_check.limit_problems({"probe": "raised", "cuInit": "CUDA error 100"}) == ["cuInit: CUDA error 100"]
    assert gpu_check.limit_problems({"error": "OSError: libcuda.so.1"}) == ["probe failed: OSError: libcuda.so.1"]


def test_the_limit_check_runs_and_reports_without_a_gpu(gpu_check, tmp_path):
    """The in-session script itself (here: no libcuda, so each probe reports its failure)."""
    done = subprocess.run([sys.executable, "-c", gpu_check.LIMIT_CHECK], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "5",
                               "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=2048M"})
    reports = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["probe"] for r in reports] == ["raised", "bypass"]
    assert reports[0]["granted_pct"] == 5 and reports[0]["granted_mem_bytes"] == 2048 << 20
    assert gpu_check.limit_problems(reports[0])                     # no GPU here: the check fails, loudly
