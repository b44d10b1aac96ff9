#!/usr/bin/env python3
"""Check a GPU host end to end: what the CUDA plugin discovers, and a CUDA workload in a session.

Run on a host with an NVIDIA GPU and an installed node (the admin keypair in the environment,
e.g. ``. /etc/backend.ai/client.env``)::

    /opt/bai/venv/bin/python scripts/gpu_check.py                # discovery + cuda.device=1 session
    /opt/bai/venv/bin/python scripts/gpu_check.py --shares 0.5   # and a cuda.shares session (MPS)
    /opt/bai/venv/bin/python scripts/gpu_check.py --discover-only

1. prints the devices, slots and facts the agent's CUDA plugin sees (same code, same config mode);
2. creates a session with ``cuda.device=1`` through the client SDK and runs a small CUDA driver
   workload in it (ctypes against libcuda: cuInit, cuDeviceGetCount, cuMemAlloc/cuMemsetD8/cuMemFree:
   no CUDA toolkit or torch needed in the image);
3. with ``--shares`` and where the agents offer ``cuda.shares`` (fractional mode), does the same in
   a session holding that many shares and prints its MPS limits, then checks that they hold: a
   process in the session that raises ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` to 100 and
   ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` to the whole GPU must still get no more SMs than its share
   (``cuCtxGetExecAffinity``) and must fail to allocate 512 MiB beyond its memory limit; it also
   reports (without failing) whether a process that avoids MPS on purpose gets a plain context;
4. prints each session's live stats (cuda_util, cuda_mem) once the agent has reported them.

Exit status: 0 all passed; 1 a check failed; 2 no NVIDIA GPU here (the message says why).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_NO_GPU = 0, 1, 2

#: Runs inside the session (the kernel's Python, stdlib only).
WORKLOAD = r'''
import ctypes, os
cuda = ctypes.CDLL("libcuda.so.1")
def check(code, what):
    if code != 0:
        raise SystemExit(f"{what} failed: CUDA error {code}")
check(cuda.cuInit(0), "cuInit")
count = ctypes.c_int()
check(cuda.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
device, ctx, ptr = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_uint64()
check(cuda.cuDeviceGet(ctypes.byref(device), 0), "cuDeviceGet")
check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), device), "cuDevicePrimaryCtxRetain")
check(cuda.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
size = 256 << 20
check(cuda.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(size)), "cuMemAlloc")
for _ in range(50):
    check(cuda.cuMemsetD8_v2(ptr, ctypes.c_ubyte(7), ctypes.c_size_t(size)), "cuMemsetD8")
check(cuda.cuCtxSynchronize(), "cuCtxSynchronize")
check(cuda.cuMemFree_v2(ptr), "cuMemFree")
check(cuda.cuDevicePrimaryCtxRelease_v2(device), "cuDevicePrimaryCtxRelease")
print(f"CUDA OK: {count.value} device(s); CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}; "
      f"MPS threads={os.environ.get('CUDA_MPS_ACTIVE_THREAD_PERCENTAGE', '-')} "
      f"mem={os.environ.get('CUDA_MPS_PINNED_DEVICE_MEM_LIMIT', '-')}")
'''

#: Runs inside a cuda.shares session: the probe below in child processes whose environment tries to
#: raise the session's MPS limits (and, for information, to avoid MPS); prints one JSON line each.
LIMIT_CHECK = r'''
import json, os, subprocess, sys
PROBE = r"""
import ctypes, json, os
cuda = ctypes.CDLL("libcuda.so.1")
out = {}
def call(what, code):
    if code != 0:
        out[what] = f"CUDA error {code}"
        print(json.dumps(out)); raise SystemExit(0)
call("cuInit", cuda.cuInit(0))
device, ctx, ptr, sms = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_uint64(), ctypes.c_int()
call("cuDeviceGet", cuda.cuDeviceGet(ctypes.byref(device), 0))
call("cuDeviceGetAttribute", cuda.cuDeviceGetAttribute(ctypes.byref(sms), 16, device))  # MULTIPROCESSOR_COUNT
out["sm_total"] = sms.value
call("cuDevicePrimaryCtxRetain", cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), device))
call("cuCtxSetCurrent", cuda.cuCtxSetCurrent(ctx))
class Affinity(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("sm_count", ctypes.c_uint), ("pad", ctypes.c_byte * 60)]
affinity = Affinity()
code = cuda.cuCtxGetExecAffinity(ctypes.byref(affinity), 0)  # CU_EXEC_AFFINITY_TYPE_SM_COUNT
out["sm_usable"] = affinity.sm_count if code == 0 else None
out["affinity_error"] = None if code == 0 else code
size = int(os.environ["PROBE_ALLOC_BYTES"])
code = cuda.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(size))
out["over_limit_alloc"] = "allowed" if code == 0 else f"refused ({code})"
if code == 0:
    cuda.cuMemFree_v2(ptr)
print(json.dumps(out))
"""
granted_pct = os.environ.get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "100")
granted_mem = os.environ.get("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT", "0=0M").split("=")[-1]
limit_bytes = int(granted_mem.rstrip("M")) << 20
for name, env in (("raised", {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "100",
                              "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=1000000M"}),
                  ("bypass", {"CUDA_MPS_PIPE_DIRECTORY": "/nonexistent-mps-pipes"})):
    child = {**os.environ, **env, "PROBE_ALLOC_BYTES": str(limit_bytes + (512 << 20))}
    done = subprocess.run([sys.executable, "-c", PROBE], env=child, capture_output=True, text=True, timeout=120)
    line = (done.stdout.strip().splitlines() or ["{}"])[-1]
    report = json.loads(line) if line.startswith("{") else {"error": done.stderr[-500:]}
    print(json.dumps({"probe": name, "granted_pct": int(granted_pct), "granted_mem_bytes": limit_bytes, **report}))
'''

SESSION_STAT_QUERY = (
    "query($id: UUID!) { compute_session(id: $id) { status occupied_slots containers { live_stat } } }"
)
AGENT_SLOTS_QUERY = "query { agent_list(limit: 100, offset: 0, status: \"ALIVE\") { items { id available_slots } } }"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default="python", help="kernel image of the test sessions (default: python)")
    parser.add_argument("--mode", choices=("discrete", "fractional"), default=None,
                        help="discovery mode to show (default: the agent's [plugins.cuda] mode)")
    parser.add_argument("--shares", type=Decimal, default=None, metavar="N",
                        help="also run a session with cuda.shares=N (needs agents in fractional mode)")
    parser.add_argument("--discover-only", action="store_true", help="print the discovery and stop")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds each session may take (120)")
    args = parser.parse_args(argv)
    if args.shares is not None and not (args.shares.is_finite() and args.shares > 0):
        parser.error(f"--shares must be a positive number, not {args.shares}")
    if not 0 < args.timeout < float("inf"):
        parser.error("--timeout must be a positive number of seconds")
    return args


def format_discovery(devices: Sequence[Any], slots: Mapping[str, Decimal], info: Mapping[str, Any],
                     facts: Any) -> str:
    lines = [f"driver {info.get('driver')}, CUDA {info.get('cuda_version')}, mode {info.get('mode')}"]
    for dev in devices:
        extra = dict(dev.extra)
        what = f"MIG {extra['mig_profile']} of {extra['parent_uuid']}" if "mig_profile" in extra else \
            f"index {extra.get('index')}"
        lines.append(f"  {dev.device_id}  {dev.model_name}  {dev.memory_size / 2**30:.1f} GiB  "
                     f"{dev.hw_location}  numa {dev.numa_node if dev.numa_node is not None else '-'}  "
                     f"cc {extra.get('compute_capability') or '-'}  ({what})")
    lines.append("slots: " + (", ".join(f"{slot}={amount}" for slot, amount in sorted(slots.items())) or "none"))
    if facts.nvidia_runtime:
        lines.append("containers: NVIDIA container runtime present -> DeviceRequests")
    else:
        lines.append(f"containers: device nodes {len(facts.device_nodes)}, driver libraries "
                     f"{len(facts.libraries)}, binaries {', '.join(sorted(facts.binaries)) or 'none'}")
    return "\n".join(lines)


def format_live_stat(stat: Mapping[str, Any]) -> str:
    """The cuda_* entries of a kernel's live_stat (``{key: {"current", "capacity", "unit_hint"...}}``)."""
    parts = []
    for key in sorted(stat):
        if not key.startswith("cuda_"):
            continue
        value = stat[key]
        if isinstance(value, Mapping):
            unit = value.get("unit_hint") or value.get("unit") or ""
            parts.append(f"{key}={value.get('current')}/{value.get('capacity')} {unit}".rstrip())
        else:
            parts.append(f"{key}={value}")
    return ", ".join(parts) or "no cuda_* figures yet"


def limit_problems(report: Mapping[str, Any]) -> list[str]:
    """What is wrong with one ``raised`` probe report of LIMIT_CHECK (empty: the limits held). The
    SM count may round up to the hardware's granularity: up to 2 SMs over the exact share."""
    problems = []
    for key in ("cuInit", "cuDeviceGet", "cuDeviceGetAttribute", "cuDevicePrimaryCtxRetain", "cuCtxSetCurrent"):
        if key in report:
            problems.append(f"{key}: {report[key]}")
    if problems or "error" in report:
        return problems or [f"probe failed: {report['error']}"]
    total, usable, pct = report.get("sm_total"), report.get("sm_usable"), report.get("granted_pct")
    if usable is None:
        problems.append(f"cuCtxGetExecAffinity failed (CUDA error {report.get('affinity_error')}): SM limit unknown")
    elif isinstance(total, int) and isinstance(pct, int):
        allowed = -(-total * pct // 100) + 2
        if usable > allowed:
            problems.append(f"the raised environment got {usable} of {total} SMs; its share ({pct}%) allows {allowed}")
    if report.get("over_limit_alloc") == "allowed":
        problems.append(f"allocating 512 MiB beyond the {report.get('granted_mem_bytes')}-byte limit succeeded")
    return problems


def offered(agent_items: Sequence[Mapping[str, Any]], slot: str) -> bool:
    for agent in agent_items:
        slots = agent.get("available_slots") or {}
        if isinstance(slots, str):
            slots = json.loads(slots)
        if Decimal(str(slots.get(slot, "0"))) > 0:
            return True
    return False


async def discover(mode: str | None) -> tuple[str, bool]:
    from bai.agent import config as agent_config
    from bai.agent.compute.cuda.plugin import CUDAPlugin

    plugin_config: dict[str, Any] = {}
    try:
        plugin_config = dict(getattr(agent_config.load(), "plugins", {}).get("cuda", {}))
    except Exception as exc:  # no agent.toml here: the defaults
        print(f"(agent.toml not read: {exc}; using defaults)", file=sys.stderr)
    if mode:
        plugin_config["mode"] = mode
    plugin = CUDAPlugin(plugin_config, None)
    await plugin.init()
    try:
        slots = await plugin.available_slots()
        text = format_discovery(await plugin.list_devices(), slots, await plugin.extra_info(), plugin.facts)
        return text, bool(plugin.gpus)
    finally:
        await asyncio.to_thread(plugin.nvml.close)


async def check_limits(api: Any, ref: str, label: str, limit_s: float) -> bool:
    """LIMIT_CHECK in the session: the raised probe must stay within the share; the bypass probe
    is reported only (MPS cannot bind a process that avoids it in the DEFAULT compute mode)."""
    from bai.client import session

    result = await asyncio.wait_for(session.execute(api, ref, LIMIT_CHECK), limit_s)
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    by_probe = {r.get("probe"): r for r in reports}
    raised = by_probe.get("raised")
    if raised is None:
        print(f"[{label}] limit check produced no report: {result.stderr.strip()[-2000:]}", file=sys.stderr)
        return False
    print(f"[{label}] raised environment: {json.dumps(raised)}")
    if "bypass" in by_probe:
        print(f"[{label}] MPS avoided on purpose (informational): {json.dumps(by_probe['bypass'])}")
    problems = limit_problems(raised)
    for problem in problems:
        print(f"[{label}] MPS LIMIT NOT HELD: {problem}", file=sys.stderr)
    if not problems:
        print(f"[{label}] MPS limits held against a raised environment")
    return not problems


async def run_session(api: Any, image: str, resources: Mapping[str, str], limit_s: float) -> bool:
    from bai.client import gql, session

    label = ", ".join(f"{k}={v}" for k, v in resources.items())
    created = await session.create(api, image, resources={"cpu": "1", "mem": "1g", **resources},
                                   max_wait=int(limit_s), no_reuse=True)
    ref = created.session_id or created.name
    try:
        if created.status != "RUNNING":
            print(f"[{label}] session {created.name} is {created.status}, not RUNNING", file=sys.stderr)
            return False
        result = await asyncio.wait_for(session.execute(api, ref, WORKLOAD), limit_s)
        print(f"[{label}] {result.stdout.strip()}")
        if result.stderr.strip() or "CUDA OK" not in result.stdout:
            print(f"[{label}] workload failed: {result.stderr.strip()[-2000:]}", file=sys.stderr)
            return False
        if "cuda.shares" in resources and not await check_limits(api, ref, label, limit_s):
            return False
        deadline = time.monotonic() + 60
        while True:
            data = await gql.query(api, SESSION_STAT_QUERY, {"id": created.session_id})
            containers = (data.get("compute_session") or {}).get("containers") or [{}]
            stat = containers[0].get("live_stat") or {}
            stat = json.loads(stat) if isinstance(stat, str) else stat
            if any(k.startswith("cuda_") for k in stat) or time.monotonic() > deadline:
                print(f"[{label}] live stats: {format_live_stat(stat)}")
                return True
            await asyncio.sleep(2)      # polling the agent's periodic stats report, with a deadline
    finally:
        await session.destroy(api, ref, forced=True)


async def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    text, found = await discover(args.mode)
    print(text)
    if not found:
        print("no NVIDIA GPU found: libnvidia-ml is missing, the driver is not loaded, or NVML lists no "
              "devices (see the lines above and the agent's log)", file=sys.stderr)
        return EXIT_NO_GPU
    if args.discover_only:
        return EXIT_OK
    from bai.client import gql
    from bai.client.request import APISession

    ok = True
    async with APISession() as api:
        agents = (await gql.query(api, AGENT_SLOTS_QUERY)).get("agent_list", {}).get("items", [])
        if offered(agents, "cuda.device"):
            ok &= await run_session(api, args.image, {"cuda.device": "1"}, args.timeout)
        else:
            print("no agent offers cuda.device (agents in fractional mode?): skipping the whole-GPU session")
        if args.shares is not None:
            if offered(agents, "cuda.shares"):
                ok &= await run_session(api, args.image, {"cuda.shares": str(args.shares)}, args.timeout)
            else:
                print("no agent offers cuda.shares: set [plugins.cuda] mode = \"fractional\" in agent.toml "
                      "to check MPS", file=sys.stderr)
                ok = False
    return EXIT_OK if ok else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
