"""Container arguments for the GPUs a kernel holds: a pure function of discovered host facts.

Two ways to give a container its GPUs:

* the NVIDIA container toolkit is installed (``docker info`` lists an ``nvidia`` runtime):
  ``HostConfig.DeviceRequests`` with the held UUIDs; the toolkit's hook adds device nodes and the
  driver's libraries itself;
* otherwise (Debian ships no toolkit): the device nodes go into ``HostConfig.Devices``
  (``/dev/nvidiactl``, ``/dev/nvidia-uvm``, ``/dev/nvidia-uvm-tools``, ``/dev/nvidia<minor>`` per held
  GPU, and for a MIG slice the ``/dev/nvidia-caps/nvidia-cap<N>`` of its GPU and compute instance),
  and the driver's user-space libraries and ``nvidia-smi`` are bind-mounted read-only under
  ``/usr/local/nvidia`` (where NVIDIA's CUDA images look: their ``LD_LIBRARY_PATH`` names it).

Either way ``CUDA_VISIBLE_DEVICES`` and ``NVIDIA_VISIBLE_DEVICES`` name the held UUIDs (MIG UUIDs for
slices); setting ``NVIDIA_VISIBLE_DEVICES`` also overrides an image's ``all`` (which the toolkit,
as the default runtime, would otherwise honour).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .nvml import GPUInfo, MIGInfo

log = logging.getLogger(__name__)

#: Control nodes every CUDA container needs (those present on the host are passed).
CONTROL_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
#: The driver's user-space libraries a CUDA program (and nvidia-smi) loads.
DRIVER_LIBRARIES = (
    "libcuda", "libnvidia-ml", "libnvidia-ptxjitcompiler", "libnvidia-nvvm", "libnvidia-gpucomp",
    "libcudadebugger", "libnvidia-allocator", "libnvidia-cfg", "libnvidia-opencl",
    "libnvidia-fatbinaryloader", "libnvidia-compiler",
)
DRIVER_BINARIES = ("nvidia-smi",)
BINARY_SEARCH_PATH = ("/usr/bin", "/usr/local/nvidia/bin", "/usr/local/bin", "/usr/sbin")
CONTAINER_LIB_DIR = "/usr/local/nvidia/lib64"
CONTAINER_BIN_DIR = "/usr/local/nvidia/bin"
#: What NVIDIA's CUDA images set; we set the same so other images find the libraries too.
CONTAINER_LD_LIBRARY_PATH = "/usr/local/nvidia/lib:/usr/local/nvidia/lib64"

_LDCONFIG_LINE = re.compile(r"^\s*(?P<name>\S+)\s+\((?P<flags>[^)]*)\)\s+=>\s+(?P<path>\S+)\s*$")
_CAP_MINOR = re.compile(r"DeviceFileMinor:\s*(\d+)")


@dataclass(frozen=True)
class HostFacts:
    """What the host offers for CUDA containers, probed once at plugin start."""

    device_nodes: frozenset[str] = frozenset()          # existing /dev/nvidia* paths
    libraries: Mapping[str, str] = field(default_factory=dict)   # file name -> host path
    binaries: Mapping[str, str] = field(default_factory=dict)    # name -> host path
    mig_caps: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # MIG uuid -> cap nodes
    nvidia_runtime: bool = False                        # the container toolkit's runtime is there


@dataclass(frozen=True)
class HeldGPUs:
    """What one kernel holds of this plugin, resolved to devices."""

    gpus: Sequence[GPUInfo] = ()                        # whole GPUs and GPUs shared through MPS
    migs: Sequence[MIGInfo] = ()

    @property
    def visible_ids(self) -> list[str]:
        return [g.uuid for g in self.gpus] + [m.uuid for m in self.migs]


def parse_ldconfig(text: str, wanted: Iterable[str] = DRIVER_LIBRARIES) -> dict[str, str]:
    """``ldconfig -p`` output -> {file name: path} for the wanted libraries (``libcuda.so.1``...).

    The first entry of a name wins (ldconfig lists them in search order); 32-bit entries (flags
    without an architecture, e.g. ``(libc6)`` on x86-64) are skipped."""
    bases = tuple(wanted)
    found: dict[str, str] = {}
    for line in text.splitlines():
        match = _LDCONFIG_LINE.match(line)
        if match is None:
            continue
        name, flags, path = match.group("name", "flags", "path")
        if "," not in flags:
            continue
        base = name.split(".so", 1)[0]
        if base in bases and name not in found:
            found[name] = path
    return found


def mig_cap_minor(access_file_text: str) -> int | None:
    """The minor of /dev/nvidia-caps/nvidia-cap<N> in a /proc/driver/nvidia/capabilities .../access file."""
    match = _CAP_MINOR.search(access_file_text)
    return int(match.group(1)) if match else None


def mig_cap_nodes(mig: MIGInfo, proc_root: Path = Path("/proc")) -> tuple[str, ...]:
    """The capability device nodes that give access to one MIG slice (its GI, then its CI)."""
    if mig.gpu_instance_id is None or mig.compute_instance_id is None:
        return ()
    base = proc_root / "driver/nvidia/capabilities" / f"gpu{mig.parent_minor}" / "mig"
    nodes = []
    for access in (base / f"gi{mig.gpu_instance_id}" / "access",
                   base / f"gi{mig.gpu_instance_id}" / f"ci{mig.compute_instance_id}" / "access"):
        try:
            minor = mig_cap_minor(access.read_text())
        except OSError:
            log.warning("cannot read %s: MIG slice %s may not open in a container", access, mig.uuid)
            continue
        if minor is not None:
            nodes.append(f"/dev/nvidia-caps/nvidia-cap{minor}")
    return tuple(nodes)


def docker_args(held: HeldGPUs, facts: HostFacts) -> dict[str, Any]:
    """The container-create fragment for ``held`` on a host with ``facts`` (see the module doc)."""
    ids = held.visible_ids
    if not ids:
        # A kernel without GPUs: where the toolkit may be the default runtime, an image's
        # NVIDIA_VISIBLE_DEVICES=all must not hand it every GPU.
        return {"Env": ["NVIDIA_VISIBLE_DEVICES=void"]} if facts.nvidia_runtime else {}
    visible = ",".join(ids)
    env = [f"CUDA_VISIBLE_DEVICES={visible}", f"NVIDIA_VISIBLE_DEVICES={visible}"]
    if facts.nvidia_runtime:
        return {
            "Env": [*env, "NVIDIA_DRIVER_CAPABILITIES=compute,utility"],
            "HostConfig": {"DeviceRequests": [{
                "Driver": "nvidia", "Count": 0, "DeviceIDs": ids,
                "Capabilities": [["gpu", "compute", "utility"]], "Options": {},
            }]},
        }
    nodes: list[str] = [node for node in CONTROL_NODES if node in facts.device_nodes]
    parents = {g.minor for g in held.gpus} | {m.parent_minor for m in held.migs}
    nodes += [f"/dev/nvidia{minor}" for minor in sorted(parents)]
    for mig in held.migs:
        nodes += [cap for cap in facts.mig_caps.get(mig.uuid, ()) if cap not in nodes]
    devices = [{"PathOnHost": node, "PathInContainer": node, "CgroupPermissions": "rwm"} for node in nodes]
    binds = [f"{path}:{CONTAINER_LIB_DIR}/{name}:ro" for name, path in sorted(facts.libraries.items())]
    binds += [f"{path}:{CONTAINER_BIN_DIR}/{name}:ro" for name, path in sorted(facts.binaries.items())]
    if facts.libraries:
        env.append(f"LD_LIBRARY_PATH={CONTAINER_LD_LIBRARY_PATH}")
    host_config: dict[str, Any] = {"Devices": devices}
    if binds:
        host_config["Binds"] = binds
    return {"Env": env, "HostConfig": host_config}


# -- probing the host (at plugin start; never on the create path) ------------------------------

async def probe_host_facts(migs: Iterable[MIGInfo], docker_runtimes: Iterable[str]) -> HostFacts:
    ldconfig = await _ldconfig_text()
    migs, runtimes = list(migs), list(docker_runtimes)
    return await asyncio.to_thread(host_facts_from, ldconfig, migs, runtimes)


def host_facts_from(ldconfig: str, migs: Iterable[MIGInfo], docker_runtimes: Iterable[str],
                    dev_root: Path = Path("/dev"), proc_root: Path = Path("/proc"),
                    binary_path: Sequence[str] = BINARY_SEARCH_PATH) -> HostFacts:
    """The facts from ``ldconfig -p`` output and what lies under ``dev_root`` / ``proc_root``
    (device nodes are named as containers see them, under /dev)."""
    nodes = frozenset(
        "/dev/" + path.relative_to(dev_root).as_posix()
        for path in (*dev_root.glob("nvidia*"), *dev_root.glob("nvidia-caps/nvidia-cap*"))
        if not path.is_dir()      # /dev/nvidia-caps itself
    )
    libraries = {name: os.path.realpath(path) for name, path in parse_ldconfig(ldconfig).items()}
    binaries = {}
    for name in DRIVER_BINARIES:
        found = shutil.which(name, path=os.pathsep.join(binary_path))
        if found:
            binaries[name] = os.path.realpath(found)
    return HostFacts(
        device_nodes=nodes, libraries=libraries, binaries=binaries,
        mig_caps={m.uuid: mig_cap_nodes(m, proc_root) for m in migs},
        nvidia_runtime="nvidia" in set(docker_runtimes),
    )


async def _ldconfig_text() -> str:
    for ldconfig in ("/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"):
        try:
            proc = await asyncio.create_subprocess_exec(
                ldconfig, "-p", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        except FileNotFoundError:
            continue
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            break
        return out.decode(errors="replace")
    log.warning("ldconfig -p gave nothing: the driver's libraries are not mounted into CUDA containers")
    return ""
