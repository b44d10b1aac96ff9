"""Accelerators on agents: NVIDIA GPUs detected, their driver checked, the way GPUs reach
containers decided, and the agent's CUDA plugin (or the mock accelerator) configured.

Detection (:class:`NvidiaGPUs`, one fact): ``/proc/driver/nvidia/gpus`` (the kernel module's view),
``nvidia-smi`` (the GPUs, and the driver and CUDA versions), the ``/dev/nvidia*`` nodes, the
driver's tools (``nvidia-cuda-mps-control``, ``nvidia-modprobe``), ``libcuda`` in the loader's
cache and whether Docker has the NVIDIA container toolkit's runtime.

:func:`decide` (pure, tested against readings of a real H100 host) turns that and the
``accelerators`` settings into a :class:`Decision`:

* which plugin the agent loads: ``cuda`` where GPUs are found (``cuda = "auto"``, or required with
  ``"on"``), the mock accelerator when ``mock = true`` (CPU-only test clusters: make-believe
  ``cuda`` devices; the real plugin is then not loaded), none otherwise;
* how GPUs reach containers: the toolkit's runtime when Docker has it, else device nodes plus the
  driver's libraries mounted by the agent itself (NVIDIA's toolkit is not in Debian's archive);
  the CUDA plugin decides the same at start, so this is the installer's check that it can work;
* problems that stop the install with a clear message: a driver older than ``min_driver``, GPUs
  the kernel sees but nvidia-smi cannot list, control nodes or libcuda missing for passthrough,
  ``nvidia-cuda-mps-control`` missing for fractional GPUs (``cuda_mode = "fractional"``, shares
  through MPS: the agent runs one MPS daemon per GPU).

The agent role puts :func:`agent_fragment` into agent.toml (``[plugins.cuda]`` mode, or
``allow-compute-plugins = ["mock"]`` and ``[plugins.mock]``). On a host without GPUs and without
the mock this role changes nothing and agent.toml stays as it was.
"""

from __future__ import annotations

import re
import shlex
import uuid
from dataclasses import dataclass, field
from io import StringIO
from typing import Any, Literal

import tomli_w
from pyinfra import host
from pyinfra.api import FactBase, deploy
from pyinfra.operations import files

from . import _ops
from .catalog import Role
from .settings import AcceleratorSettings, Settings

TOOLS = ("nvidia-smi", "nvidia-cuda-mps-control", "nvidia-modprobe")
CONTROL_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm")
QUERY = "index,uuid,name,pci.bus_id,memory.total,mig.mode.current"


@dataclass(frozen=True)
class GPU:
    index: int
    uuid: str
    name: str
    bus_id: str
    memory_mib: int
    mig: bool


@dataclass(frozen=True)
class GPUFacts:
    """What a host offers (see :class:`NvidiaGPUs`)."""

    proc_gpus: tuple[str, ...] = ()  # bus ids under /proc/driver/nvidia/gpus
    gpus: tuple[GPU, ...] = ()  # what nvidia-smi lists
    driver: str | None = None
    cuda: str | None = None
    nodes: frozenset[str] = frozenset()
    tools: frozenset[str] = frozenset()  # of TOOLS, those on PATH
    libcuda: bool = False
    nvidia_runtime: bool = False  # Docker lists the container toolkit's runtime

    @property
    def present(self) -> bool:
        return bool(self.proc_gpus or self.gpus)


class NvidiaGPUs(FactBase[GPUFacts]):
    """The NVIDIA GPUs of a host and what they need (exits 0 everywhere; a host without any
    NVIDIA driver answers with empty sections)."""

    def command(self) -> str:
        tools = " ".join(TOOLS)
        return (
            "echo __proc__; ls -1 /proc/driver/nvidia/gpus 2>/dev/null; "
            "echo __smi__; if command -v nvidia-smi >/dev/null 2>&1; then "
            f"timeout 20 nvidia-smi --query-gpu={QUERY} --format=csv 2>/dev/null; "
            "echo __xml__; timeout 20 nvidia-smi -q -x 2>/dev/null | grep -m2 -E '<(driver|cuda)_version>'; fi; "
            "echo __nodes__; ls -1d /dev/nvidia* /dev/nvidia-caps/* 2>/dev/null; "
            f"echo __tools__; for t in {tools}; do command -v $t >/dev/null 2>&1 && echo $t; done; "
            "echo __libcuda__; ldconfig -p 2>/dev/null | grep -c 'libcuda[.]so'; "
            "echo __runtimes__; if command -v docker >/dev/null 2>&1; then "
            "timeout 20 docker info --format '{{json .Runtimes}}' 2>/dev/null; fi; true"
        )

    def process(self, output: list[str]) -> GPUFacts:
        return parse(output)

    @staticmethod
    def default() -> GPUFacts:
        return GPUFacts()


def _sections(lines: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = ""
    for line in lines:
        if re.fullmatch(r"__[a-z]+__", line.strip()):
            current = line.strip().strip("_")
            out[current] = []
        elif current and line.strip():
            out[current].append(line.rstrip())
    return out


def parse_query_csv(lines: list[str]) -> tuple[GPU, ...]:
    """``nvidia-smi --query-gpu=... --format=csv`` (with its header; units in the header and
    values) -> GPUs. Columns are found by name, so extra columns do no harm."""
    if not lines:
        return ()
    names = [re.sub(r"\s*\[.*\]$", "", h.strip()) for h in lines[0].split(",")]
    gpus: list[GPU] = []
    for line in lines[1:]:
        row = dict(zip(names, (v.strip() for v in line.split(",")), strict=False))
        if not row.get("uuid"):
            continue
        mem = re.match(r"(\d+)", row.get("memory.total", ""))
        gpus.append(GPU(index=int(row.get("index") or len(gpus)), uuid=row["uuid"], name=row.get("name", ""),
                        bus_id=row.get("pci.bus_id", ""), memory_mib=int(mem.group(1)) if mem else 0,
                        mig=row.get("mig.mode.current", "").lower() == "enabled"))
    return tuple(gpus)


def parse(output: list[str]) -> GPUFacts:
    s = _sections(output)
    xml = "\n".join(s.get("xml", []))
    driver = re.search(r"<driver_version>\s*([^<\s]+)", xml)
    cuda = re.search(r"<cuda_version>\s*([^<\s]+)", xml)
    runtimes = "\n".join(s.get("runtimes", []))
    libcuda = (s.get("libcuda") or ["0"])[-1].strip()
    return GPUFacts(
        proc_gpus=tuple(x.strip() for x in s.get("proc", [])),
        gpus=parse_query_csv(s.get("smi", [])),
        driver=driver.group(1) if driver else None,
        cuda=cuda.group(1) if cuda else None,
        nodes=frozenset(x.strip() for x in s.get("nodes", [])),
        tools=frozenset(x.strip() for x in s.get("tools", []) if x.strip() in TOOLS),
        libcuda=libcuda.isdigit() and int(libcuda) > 0,
        nvidia_runtime='"nvidia"' in runtimes,
    )


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


@dataclass(frozen=True)
class Decision:
    use: Literal["none", "cuda", "mock"]
    passthrough: Literal["", "toolkit", "device-nodes"] = ""
    problems: tuple[str, ...] = ()  # each stops the install
    notes: tuple[str, ...] = ()  # reported in the plan
    fixes: tuple[str, ...] = field(default=())  # commands that make passthrough work (nvidia-modprobe)


def decide(acc: AcceleratorSettings, facts: GPUFacts) -> Decision:
    """What to do on a host with ``facts`` (see the module docstring)."""
    count = len(facts.gpus) or len(facts.proc_gpus)
    if acc.mock:
        mock_notes = [f"mock accelerator: {acc.mock_devices} make-believe cuda device(s), {acc.mock_mode}"]
        if facts.present:
            mock_notes.append(f"{count} NVIDIA GPU(s) present, not used: the mock replaces the CUDA plugin")
        return Decision("mock", notes=tuple(mock_notes))
    if acc.cuda == "off":
        return Decision("none", notes=(f"CUDA off ({count} NVIDIA GPU(s) present, not used)"
                                       if facts.present else "CUDA off",))
    if not facts.present:
        if acc.cuda == "on":
            return Decision("none", problems=("accelerators.cuda = on but no NVIDIA GPU found "
                                              "(/proc/driver/nvidia/gpus is empty: is the driver installed?)",))
        return Decision("none", notes=("no NVIDIA GPU found: CUDA not configured",))
    problems: list[str] = []
    notes: list[str] = []
    fixes: list[str] = []
    if "nvidia-smi" not in facts.tools or not facts.gpus:
        problems.append(f"the kernel driver sees {len(facts.proc_gpus)} GPU(s) but nvidia-smi "
                        f"{'is missing' if 'nvidia-smi' not in facts.tools else 'lists none'}: "
                        "install the driver's utilities (nvidia-smi) matching the kernel module")
    if facts.driver is None:
        problems.append("the NVIDIA driver version could not be read (nvidia-smi -q)")
    elif version_tuple(facts.driver) < version_tuple(acc.min_driver):
        problems.append(f"NVIDIA driver {facts.driver} is older than {acc.min_driver} "
                        "(accelerators.min_driver): upgrade the driver")
    if facts.nvidia_runtime:
        passthrough: Literal["", "toolkit", "device-nodes"] = "toolkit"
        notes.append("GPUs reach containers through the NVIDIA container toolkit's runtime")
    else:
        passthrough = "device-nodes"
        notes.append("GPUs reach containers as device nodes with the driver's libraries mounted "
                     "(no NVIDIA container toolkit)")
        if "/dev/nvidiactl" not in facts.nodes:
            problems.append("/dev/nvidiactl is missing: the NVIDIA kernel module is not loaded")
        if "/dev/nvidia-uvm" not in facts.nodes:
            if "nvidia-modprobe" in facts.tools:
                fixes.append("nvidia-modprobe -u -c=0")
            else:
                problems.append("/dev/nvidia-uvm is missing and nvidia-modprobe is not installed "
                                "to create it (load nvidia-uvm)")
        if not facts.libcuda:
            problems.append("libcuda is not in the loader's cache (ldconfig -p): install the "
                            "driver's user-space libraries")
    if acc.cuda_mode == "fractional" and "nvidia-cuda-mps-control" not in facts.tools:
        problems.append("accelerators.cuda_mode = fractional needs nvidia-cuda-mps-control "
                        "(the driver's MPS tools)")
    names = sorted({g.name for g in facts.gpus})
    notes.insert(0, f"{count} NVIDIA GPU(s) ({', '.join(names) or 'unnamed'}), driver {facts.driver}, "
                    f"CUDA {facts.cuda}: {acc.cuda_mode}")
    return Decision("cuda", passthrough, tuple(problems), tuple(notes), tuple(fixes))


def mock_config_path(settings: Settings) -> str:
    return f"{settings.config_dir}/mock-accelerator.toml"


def mock_config(settings: Settings) -> dict[str, Any]:
    """The mock accelerator's file: ``mock_devices`` make-believe CUDA GPUs with stable ids."""
    acc = settings.accelerators
    return {
        "slot_name": "cuda",
        "device_plugin_name": "CUDADevice",
        "allocation_mode": acc.mock_mode,
        "attributes": {"nvidia_driver": "0.0.0-mock", "cuda_runtime": "0.0-mock"},
        "devices": [{"mother_uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"bai-mock/{settings.agent.id}/{i}")),
                     "model_name": "Mock CUDA GPU", "numa_node": 0, "subproc_count": 108,
                     "memory_size": acc.mock_memory, "is_mig_device": False}
                    for i in range(acc.mock_devices)],
    }


def agent_fragment(settings: Settings, decision: Decision, facts: GPUFacts) -> dict[str, Any]:
    """The agent.toml keys for ``decision`` (merged into the agent's config by roles/agent.py)."""
    acc = settings.accelerators
    if decision.use == "mock":
        return {"agent": {"allow-compute-plugins": ["mock"]},
                "plugins": {"mock": {"config-path": mock_config_path(settings)}}}
    if decision.use == "cuda":
        cuda: dict[str, Any] = {"mode": acc.cuda_mode}
        if acc.cuda_unit_mem:
            cuda["unit-mem"] = acc.cuda_unit_mem
        return {"plugins": {"cuda": cuda}}
    if facts.present and acc.cuda == "off":
        return {"agent": {"block-compute-plugins": ["cuda"]}}
    return {}


def host_decision(settings: Settings) -> tuple[Decision, GPUFacts]:
    """The decision for the current host (facts read once per run and cached)."""
    facts = host.get_fact(NvidiaGPUs)
    return decide(settings.accelerators, facts), facts


@deploy("accelerators")
def accelerators(settings: Settings) -> None:
    decision, _ = host_decision(settings)
    for note in decision.notes:
        _ops.note(name=note)
    for problem in decision.problems:
        _ops.ensure(name=f"Check: {problem}", check="false",
                    commands=[f"echo {shlex.quote(problem)} >&2; exit 1"])
    for fix in decision.fixes:
        _ops.ensure(name=f"Create the GPU device nodes ({fix})", check="test -c /dev/nvidia-uvm",
                    commands=[fix], noop_message="device nodes present")
    if decision.use == "mock":
        files.put(name=f"Write {mock_config_path(settings)}",
                  src=StringIO("# managed by bai-install\n" + tomli_w.dumps(mock_config(settings))),
                  dest=mock_config_path(settings), mode="644")
    if decision.use == "cuda" and settings.accelerators.cuda_mode == "fractional":
        files.directory(name="MPS directory", path=f"{settings.state_dir}/mps", mode="700")


ROLE = Role(name="accelerators", groups=("agents",), deploy=accelerators)
