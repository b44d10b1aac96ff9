"""The intrinsic plugins: ``cpu`` (cores, pinned through cpusets) and ``mem`` (hard limits).

CPU: the cores are those this process may run on (``sched_getaffinity``) minus the reserved ones
(``[resource] reserved-cores``, plus ``reserved-cpu`` more, rounded up, the lowest-numbered of the
rest). Each core is a device of capacity 1. A whole-number request takes that many whole free
cores and the kernel is pinned to them (``CpusetCpus``) with the same CFS quota (``NanoCpus``); a
fractional request (or a whole one when no whole cores are left) is booked on partly used cores
and gets the quota only, running on any unreserved core.

Memory: one device (``root``) of the host's memory minus ``reserved-mem``; a kernel gets a hard
``Memory`` limit with ``MemorySwap`` equal to it (no swap). The OOM killer then kills inside the
container only; the agent reports it (``kernel_oom``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from .alloc_map import DiscreteAllocMap, FractionAllocMap, device_order, is_whole
from .base import (
    AllocMap,
    ComputePlugin,
    Device,
    DeviceAllocation,
    DeviceId,
    Measurement,
    SlotName,
    SlotType,
)
from .host_cores import DEFAULT_DIR as PINNED_CORES_DIR
from .host_cores import HostCoreClaims, open_claims

CGROUP_ROOT = Path("/sys/fs/cgroup")


def host_memory(meminfo: Path = Path("/proc/meminfo")) -> int:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("MemTotal missing from /proc/meminfo")


def usable_cores(affinity: Sequence[int], reserved_cores: Sequence[int], reserved_cpu: Decimal) -> list[int]:
    """The cores kernels may get: the affinity set minus the reserved ones."""
    cores = sorted(set(affinity) - set(reserved_cores))
    extra = math.ceil(reserved_cpu) if reserved_cpu > 0 else 0
    return cores[extra:]


def cpuset_string(cores: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    out: list[str] = []
    ordered = sorted(set(cores))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out)


class CpuAllocMap(FractionAllocMap):
    """Cores of capacity 1: whole requests get whole free cores (lowest ids first), the rest is
    booked in hundredths on the fullest cores that hold it (best fit), so whole cores stay free.
    With ``claims`` (host_cores.py), whole requests prefer cores no other agent of this host pins;
    a kernel that still ends up with such a core is not pinned (see CpuPlugin.pinning)."""

    def __init__(self, devices: Mapping[SlotName, Mapping[DeviceId, Decimal]],
                 claims: HostCoreClaims | None = None) -> None:
        super().__init__(devices)
        self.claims = claims
        self._elsewhere: set[str] = set()

    def _plan(self, slot: SlotName, amount: Decimal) -> dict[DeviceId, Decimal]:
        if is_whole(amount):
            whole = sorted((dev for dev, free in self.free_per_device(slot).items()
                            if free >= 1 and dev not in self._elsewhere), key=device_order)
            if len(whole) >= amount:
                return {dev: Decimal(1) for dev in whole[:int(amount)]}
        return super()._plan(slot, amount)

    def allocate(self, requested: Mapping[SlotName, Decimal]) -> DeviceAllocation:
        if self.claims is None:
            return super().allocate(requested)
        with self.claims.locked():
            self._elsewhere = {str(core) for core in self.claims.others()}
            try:
                taken = super().allocate(requested)
            finally:
                self._elsewhere = set()
            self._publish()
        return taken

    def apply(self, allocation: DeviceAllocation) -> None:
        super().apply(allocation)
        if self.claims is not None:
            with self.claims.locked():
                self._publish()

    def free(self, allocation: DeviceAllocation) -> None:
        super().free(allocation)
        if self.claims is not None:
            with self.claims.locked():
                self._publish()

    def _publish(self) -> None:
        assert self.claims is not None
        self.claims.publish(int(dev) for dev, held in self.allocations.get("cpu", {}).items()
                            if held >= 1 and dev.isdigit())


def pinned_cores(allocation: DeviceAllocation) -> list[int] | None:
    """The cores a kernel is pinned to: only when it holds whole cores and nothing else."""
    held = allocation.get("cpu") or {}
    if not held or any(amount != 1 for amount in held.values()):
        return None
    return sorted(int(dev) for dev in held)


def _container_dirs(container_id: str, controller: str) -> list[Path]:
    """Where the container's cgroup may be: cgroup v2 (one tree) or v1 (``controller``'s
    tree), with Docker's systemd or cgroupfs driver."""
    scope, plain = Path("system.slice") / f"docker-{container_id}.scope", Path("docker") / container_id
    return [CGROUP_ROOT / scope, CGROUP_ROOT / plain,
            CGROUP_ROOT / controller / scope, CGROUP_ROOT / controller / plain]


def container_cpu_usec(container_id: str) -> int | None:
    """CPU time the container used so far, in microseconds (None when it is not found here)."""
    for path in _container_dirs(container_id, "cpuacct"):
        if (usage := _cpu_usage_usec(path)) is not None:
            return usage
        if (nanos := _read_int(path / "cpuacct.usage")) is not None:
            return nanos // 1000
    return None


def container_memory(container_id: str) -> int | None:
    """Memory the container uses now, in bytes (None when it is not found here)."""
    for path in _container_dirs(container_id, "memory"):
        for name in ("memory.current", "memory.usage_in_bytes"):
            if (value := _read_int(path / name)) is not None:
                return value
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cpu_usage_usec(cgroup: Path) -> int | None:
    try:
        for line in (cgroup / "cpu.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "usage_usec":
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def _mem_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


class CpuPlugin(ComputePlugin):
    key = "cpu"
    slot_types: Sequence[tuple[SlotName, SlotType]] = (("cpu", "count"),)

    def __init__(self, plugin_config: Mapping[str, Any], agent_config: Any) -> None:
        super().__init__(plugin_config, agent_config)
        self.cores: list[int] = []
        self._last_usage: dict[str, tuple[float, int]] = {}
        self.claims: HostCoreClaims | None = None

    async def init(self) -> None:
        resource = self.agent_config.resource
        self.cores = usable_cores(sorted(os.sched_getaffinity(0)), resource.reserved_cores,
                                  resource.reserved_cpu)
        # other agents on this host: pin no core twice (host_cores.py)
        owner = getattr(getattr(self.agent_config, "agent", None), "id", None)
        if isinstance(owner, str):
            self.claims = open_claims(owner, Path(str(self.plugin_config.get("pinned-cores-dir") or PINNED_CORES_DIR)))

    async def cleanup(self) -> None:
        if self.claims is not None:
            self.claims.close()

    async def list_devices(self) -> Sequence[Device]:
        return [Device(device_id=str(core), hw_location="cpu", numa_node=None, memory_size=0,
                       processing_units=1) for core in self.cores]

    async def available_slots(self) -> dict[SlotName, Decimal]:
        return {"cpu": Decimal(len(self.cores))}

    def create_alloc_map(self) -> AllocMap:
        return CpuAllocMap({"cpu": {str(core): Decimal(1) for core in self.cores}}, self.claims)

    def pinning(self, allocation: DeviceAllocation) -> list[int] | None:
        """The cores to pin the kernel to: its whole cores, unless another agent of this host
        pins one of them (then the kernel runs unpinned, within its quota)."""
        pinned = pinned_cores(allocation)
        if pinned is not None and self.claims is not None:
            with self.claims.locked():
                elsewhere = self.claims.others()
            if any(core in elsewhere for core in pinned):
                return None
        return pinned

    async def generate_docker_args(self, allocation: DeviceAllocation) -> dict[str, Any]:
        amount = sum((allocation.get("cpu") or {}).values(), Decimal(0))
        pinned = self.pinning(allocation)
        host_config: dict[str, Any] = {"CpusetCpus": cpuset_string(pinned if pinned is not None else self.cores)}
        if amount > 0:
            host_config["NanoCpus"] = int(amount * 10**9)
        return {"HostConfig": host_config}

    def generate_resource_data(self, allocation: DeviceAllocation) -> dict[str, str]:
        pinned = self.pinning(allocation)
        return {"CPU_SHARES": ",".join(f"{dev}:{amount}" for dev, amount in (allocation.get("cpu") or {}).items()),
                "CPU_PINNED": cpuset_string(pinned) if pinned is not None else ""}

    async def gather_container_measures(self, container_id: str, allocation: DeviceAllocation
                                        ) -> list[Measurement]:
        """``cpu_util``: percent of one core used since the previous call (0 on the first)."""
        usage = container_cpu_usec(container_id)
        if usage is None:
            return []
        now = os.times().elapsed
        last = self._last_usage.get(container_id)
        self._last_usage[container_id] = (now, usage)
        util = Decimal(0)
        if last is not None and now > last[0]:
            util = Decimal(usage - last[1]) / Decimal(10_000) / Decimal(str(now - last[0]))
        amount = sum((allocation.get("cpu") or {}).values(), Decimal(0))
        return [Measurement("cpu_util", util.quantize(Decimal("0.01")), amount * 100, "%"),
                Measurement("cpu_used", Decimal(usage) // 1000, None, "msec")]

    def retain(self, container_ids: set[str]) -> None:
        """Forget the previous samples of containers that are gone."""
        for gone in set(self._last_usage) - container_ids:
            del self._last_usage[gone]


class MemoryPlugin(ComputePlugin):
    key = "mem"
    slot_types: Sequence[tuple[SlotName, SlotType]] = (("mem", "bytes"),)
    DEVICE = "root"

    def __init__(self, plugin_config: Mapping[str, Any], agent_config: Any) -> None:
        super().__init__(plugin_config, agent_config)
        self.total = 0
        self.capacity = 0

    async def init(self) -> None:
        self.total = host_memory()
        self.capacity = max(self.total - self.agent_config.resource.reserved_mem, 0)

    async def list_devices(self) -> Sequence[Device]:
        return [Device(device_id=self.DEVICE, hw_location="root", numa_node=None, memory_size=self.capacity,
                       processing_units=0)]

    async def available_slots(self) -> dict[SlotName, Decimal]:
        return {"mem": Decimal(self.capacity)}

    def create_alloc_map(self) -> AllocMap:
        return DiscreteAllocMap({"mem": {self.DEVICE: Decimal(self.capacity)}})

    async def generate_docker_args(self, allocation: DeviceAllocation) -> dict[str, Any]:
        amount = int(sum((allocation.get("mem") or {}).values(), Decimal(0)))
        if amount <= 0:
            return {}
        # Swap would let a kernel exceed its memory slot without the scheduler knowing.
        return {"HostConfig": {"Memory": amount, "MemorySwap": amount}}

    async def gather_node_measures(self) -> list[Measurement]:
        available = _mem_available()
        if available is None:
            return []
        return [Measurement("mem", Decimal(self.total - available), Decimal(self.total), "bytes")]

    async def gather_container_measures(self, container_id: str, allocation: DeviceAllocation
                                        ) -> list[Measurement]:
        current = container_memory(container_id)
        if current is None:
            return []
        limit = sum((allocation.get("mem") or {}).values(), Decimal(0))
        return [Measurement("mem", Decimal(current), limit or None, "bytes")]
