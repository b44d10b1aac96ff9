"""The CUDA compute plugin (key ``cuda``): NVIDIA GPUs discovered through NVML.

Slots, by allocation mode (``[plugins.cuda] mode`` in agent.toml, or etcd
``config/plugins/accelerator/cuda/allocation_mode`` handed in by the agent as ``allocation_mode``):

* ``discrete`` (default): ``cuda.device`` (count: whole GPUs) for GPUs without MIG, and
  ``cuda.device:<profile>-mig`` (unique: one MIG slice) per MIG profile present on MIG-enabled
  GPUs. A MIG-enabled GPU is never offered whole.
* ``fractional``: ``cuda.shares`` (count, 0.01 steps) on GPUs without MIG, one share = ``unit_mem``
  bytes of device memory (default 2 GiB), enforced through NVIDIA MPS (see :mod:`.mps`; ``[plugins.cuda]
  mps-isolation = "kernel"`` (default: one MPS daemon per kernel, limits held by its server) or
  ``"gpu"`` (one shared daemon per GPU)); MIG slices are offered as in discrete mode.

``cuda.device``, ``cuda.shares`` and ``cuda.device:*-mig`` are exclusive: a kernel holds one kind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from bai.common.types import parse_binary_size

from ..alloc_map import STRATEGIES, CompositeAllocMap, DiscreteAllocMap, FractionAllocMap, Strategy
from ..base import (
    AllocationError,
    AllocMap,
    ComputePlugin,
    Device,
    DeviceAllocation,
    Measurement,
    SlotName,
    SlotType,
)
from . import mps
from .docker_args import HeldGPUs, HostFacts, docker_args, probe_host_facts
from .nvml import NVML, DeviceReading, GPUInfo, MIGInfo

log = logging.getLogger(__name__)

Mode = Literal["discrete", "fractional"]
Isolation = Literal["kernel", "gpu"]
DEVICE_SLOT = "cuda.device"
SHARES_SLOT = "cuda.shares"
PLUGIN_VERSION = "1.0"
#: After an agent start, per-kernel MPS daemons no re-adopted kernel claimed by then are stopped.
ORPHAN_GRACE_SECONDS = 120.0


def mig_slot(profile: str) -> SlotName:
    return f"cuda.device:{profile}-mig"


@dataclass(frozen=True)
class CUDASettings:
    mode: Mode = "discrete"
    unit_mem: int = mps.DEFAULT_UNIT_MEM
    strategy: Strategy = "fill"
    mps_root: Path = mps.DEFAULT_MPS_ROOT
    mps_isolation: Isolation = "kernel"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> CUDASettings:
        """``[plugins.cuda]`` keys ``mode`` (or ``allocation_mode``), ``unit_mem``, ``strategy``,
        ``mps_root`` (dashes or underscores); etcd ``config/plugins/accelerator/cuda/allocation_mode``
        and ``.../unit_mem`` (handed in by the agent as ``config["etcd"]``) win, as with the mock
        accelerator. A bad value is a clear start-up error."""
        etcd: Mapping[str, Any] = config.get("etcd") or {}
        merged = {str(k).replace("-", "_"): v for k, v in config.items() if k != "etcd"}
        if etcd.get("accelerator/cuda/allocation_mode"):
            merged["mode"] = etcd["accelerator/cuda/allocation_mode"]
        if etcd.get("accelerator/cuda/unit_mem"):
            merged["unit_mem"] = etcd["accelerator/cuda/unit_mem"]
        get = merged.get
        mode = str(get("mode") or get("allocation_mode") or "discrete").lower()
        if mode not in ("discrete", "fractional"):
            raise ValueError(f"[plugins.cuda] mode must be discrete or fractional, not {mode!r}")
        unit_mem = parse_binary_size(get("unit_mem", mps.DEFAULT_UNIT_MEM))
        if unit_mem < mps.MiB:
            raise ValueError(f"[plugins.cuda] unit_mem must be at least 1 MiB, not {unit_mem}")
        strategy = str(get("strategy") or "fill")
        if strategy not in STRATEGIES:
            raise ValueError(f"[plugins.cuda] strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
        isolation = str(get("mps_isolation") or "kernel").lower()
        if isolation not in ("kernel", "gpu"):
            raise ValueError(f"[plugins.cuda] mps-isolation must be kernel or gpu, not {isolation!r}")
        return cls(mode=mode, unit_mem=unit_mem, strategy=strategy,  # type: ignore[arg-type]
                   mps_root=Path(get("mps_root") or mps.DEFAULT_MPS_ROOT),
                   mps_isolation=isolation)  # type: ignore[arg-type]


async def docker_runtimes() -> set[str]:
    """The runtimes the Docker engine knows (``nvidia`` where the container toolkit is set up)."""
    import aiodocker

    docker = aiodocker.Docker()
    try:
        info = await docker.system.info()
    except Exception as exc:  # no engine: no toolkit either; the agent reports the engine itself
        log.warning("docker info failed (%s): assuming no NVIDIA container runtime", exc)
        return set()
    finally:
        await docker.close()
    return set((info.get("Runtimes") or {}).keys())


class CUDAPlugin(ComputePlugin):
    key = "cuda"
    slot_types: tuple[tuple[SlotName, SlotType], ...] = ((DEVICE_SLOT, "count"),)
    exclusive_slot_types = frozenset({DEVICE_SLOT, SHARES_SLOT, "cuda.device:*-mig"})

    def __init__(self, plugin_config: Mapping[str, Any], agent_config: Any, *,
                 nvml_lib: Any = None, mps_control: mps.MPSControl | None = None,
                 host_facts: HostFacts | None = None,
                 runtimes: Callable[[], Awaitable[set[str]]] = docker_runtimes,
                 cgroup_root: Path = Path("/sys/fs/cgroup")) -> None:
        super().__init__(plugin_config, agent_config)
        self.settings = CUDASettings.from_config(plugin_config)
        self.nvml = NVML(nvml_lib)
        control = mps_control or mps.ProcessMPSControl()
        self.mps = mps.MPSDaemons(control, self.settings.mps_root)
        self.kernel_mps = mps.KernelDaemons(control, self.settings.mps_root)
        self.driver_version: str | None = None
        self.cuda_version: str | None = None
        self.gpus: list[GPUInfo] = []
        self.facts = host_facts or HostFacts()
        self._host_facts_given = host_facts is not None
        self._runtimes = runtimes
        self._cgroup_root = cgroup_root
        self._by_uuid: dict[str, GPUInfo] = {}
        self._mig_by_uuid: dict[str, MIGInfo] = {}
        self._capacity: dict[SlotName, dict[str, Decimal]] = {}
        self._started_at = time.monotonic()
        self._sweep: asyncio.Task[list[str]] | None = None

    # -- discovery -----------------------------------------------------------------------------

    async def init(self) -> None:
        self.slot_types = ()
        if not await asyncio.to_thread(self.nvml.open):
            return
        self.driver_version = await asyncio.to_thread(self.nvml.driver_version)
        self.cuda_version = await asyncio.to_thread(self.nvml.cuda_driver_version)
        self.gpus = await asyncio.to_thread(self.nvml.devices)
        self._index()
        if self.gpus and not self._host_facts_given:
            self.facts = await probe_host_facts(self._mig_by_uuid.values(), await self._runtimes())
        log.info("CUDA: driver %s, CUDA %s, %d GPU(s), mode %s, slots %s", self.driver_version,
                 self.cuda_version, len(self.gpus), self.settings.mode,
                 {slot: str(sum(per.values(), Decimal(0))) for slot, per in self._capacity.items()})

    def _index(self) -> None:
        self._by_uuid = {g.uuid: g for g in self.gpus}
        self._mig_by_uuid = {m.uuid: m for g in self.gpus for m in g.mig_devices}
        self._capacity = offered_slots(self.gpus, self.settings.mode, self.settings.unit_mem)
        types: list[tuple[SlotName, SlotType]] = [
            (slot, "unique" if slot.endswith("-mig") else "count") for slot in self._capacity
        ]
        # No GPU: no slot types either, so a GPU-less agent announces no cuda.* slot to the manager.
        self.slot_types = tuple(types)

    def retain(self, container_ids: set[str]) -> None:
        """Called with the running containers at every stats round: once the grace after start
        is over, stop the per-kernel MPS daemons nobody re-adopted (once per agent start)."""
        if self._sweep is None and time.monotonic() - self._started_at >= ORPHAN_GRACE_SECONDS:
            self._sweep = asyncio.create_task(self.kernel_mps.sweep(), name="cuda-mps-sweep")

    async def cleanup(self) -> None:
        if self._sweep is not None and not self._sweep.done():
            self._sweep.cancel()
        await self.mps.stop_all()
        self.kernel_mps.forget_all()   # per-kernel daemons stay with their kernels
        await asyncio.to_thread(self.nvml.close)

    async def list_devices(self) -> list[Device]:
        devices = []
        for gpu in self.gpus:
            if not gpu.mig_current:
                devices.append(Device(
                    device_id=gpu.uuid, hw_location=gpu.pci_bus_id, numa_node=gpu.numa_node,
                    memory_size=gpu.memory_total, processing_units=gpu.sm_count or 0, model_name=gpu.name,
                    extra={"index": gpu.index, "minor": gpu.minor,
                           "compute_capability": _capability_text(gpu.compute_capability)},
                ))
            for mig in gpu.mig_devices:
                devices.append(Device(
                    device_id=mig.uuid, hw_location=gpu.pci_bus_id, numa_node=gpu.numa_node,
                    memory_size=mig.memory_total, processing_units=mig.sm_count or 0,
                    model_name=f"{gpu.name} MIG {mig.profile}",
                    extra={"mig_profile": mig.profile, "parent_uuid": gpu.uuid, "parent_index": gpu.index,
                           "compute_capability": _capability_text(gpu.compute_capability)},
                ))
        return devices

    async def available_slots(self) -> dict[SlotName, Decimal]:
        return {slot: sum(per.values(), Decimal(0)) for slot, per in self._capacity.items()}

    def create_alloc_map(self) -> AllocMap:
        migs = {slot: per for slot, per in self._capacity.items() if slot.endswith("-mig")}
        whole = {slot: per for slot, per in self._capacity.items() if slot not in migs}
        if self.settings.mode == "discrete":
            return DiscreteAllocMap(self._capacity, self.settings.strategy, unique_slots=list(migs))
        shares = OneGPUShares(whole, quantum=mps.SHARE_QUANTUM, strategy=self.settings.strategy)
        if not migs:
            return shares
        return CompositeAllocMap([shares, DiscreteAllocMap(migs, self.settings.strategy, unique_slots=list(migs))])

    async def extra_info(self) -> dict[str, Any]:
        return {"version": PLUGIN_VERSION, "driver": self.driver_version, "cuda_version": self.cuda_version,
                "mode": self.settings.mode}

    # -- a kernel's devices --------------------------------------------------------------------

    def _resolve(self, allocation: DeviceAllocation) -> tuple[HeldGPUs, dict[str, Decimal]]:
        gpus: list[GPUInfo] = []
        migs: list[MIGInfo] = []
        shares: dict[str, Decimal] = {}
        for slot, per_device in allocation.items():
            for device_id, amount in per_device.items():
                if amount <= 0 or device_id.startswith(mps.INSTANCE_PREFIX):
                    continue
                if slot == SHARES_SLOT and device_id in self._by_uuid:
                    shares[device_id] = shares.get(device_id, Decimal(0)) + amount
                    if self._by_uuid[device_id] not in gpus:
                        gpus.append(self._by_uuid[device_id])
                elif slot == DEVICE_SLOT and device_id in self._by_uuid:
                    gpus.append(self._by_uuid[device_id])
                elif slot.startswith("cuda.device:") and device_id in self._mig_by_uuid:
                    migs.append(self._mig_by_uuid[device_id])
                else:
                    raise AllocationError(f"{slot} on {device_id}: no such CUDA device on this agent")
        return HeldGPUs(gpus=gpus, migs=migs), shares

    def mps_limits(self, allocation: DeviceAllocation) -> tuple[str, mps.ClientLimits] | None:
        """The MPS client limits of a ``cuda.shares`` allocation (None without shares)."""
        _, shares = self._resolve(allocation)
        if not shares:
            return None
        if len(shares) > 1:
            raise AllocationError(
                f"cuda.shares spread over {len(shares)} GPUs; through MPS one kernel's shares must lie on "
                f"one GPU (at most {max(self._capacity.get(SHARES_SLOT, {}).values(), default=0)} shares)")
        (uuid, amount), = shares.items()
        capacity = self._capacity[SHARES_SLOT][uuid]
        return uuid, mps.client_limits(amount, capacity, self._by_uuid[uuid].memory_total, self.settings.unit_mem)

    async def generate_docker_args(self, allocation: DeviceAllocation) -> dict[str, Any]:
        """Also, with ``mps-isolation = "kernel"``, starts the kernel's own MPS daemon and records
        its token in ``allocation`` (a zero-amount ``mps-instance:<token>`` entry of cuda.shares,
        which the agent then stores in the container's label with the rest)."""
        held, _ = self._resolve(allocation)
        args = docker_args(held, self.facts)
        shared = self.mps_limits(allocation)
        if shared is not None:
            uuid, limits = shared
            if self.settings.mps_isolation == "kernel":
                shares = allocation[SHARES_SLOT]
                token = mps.instance_token(shares) or mps.new_token()
                shares[mps.INSTANCE_PREFIX + token] = Decimal(0)
                binds = mps.kernel_binds(await self.kernel_mps.attach(token, uuid, limits))
            else:
                binds = (await self.mps.attach(uuid, limits)).binds()
            args.setdefault("Env", []).extend(mps.client_env(limits))
            args.setdefault("HostConfig", {}).setdefault("Binds", []).extend(binds)
        return args

    async def release(self, allocation: DeviceAllocation) -> None:
        """The kernel holding ``allocation`` is gone: stop its own MPS daemon, or (shared daemons)
        let its GPU lower its server limits."""
        token = mps.instance_token(allocation.get(SHARES_SLOT) or {})
        if token is not None:
            await self.kernel_mps.detach(token)
            return
        shared = self.mps_limits(allocation)
        if shared is not None:
            await self.mps.detach(*shared)

    async def restore(self, allocation: DeviceAllocation) -> None:
        """A container that outlived an agent restart holds ``allocation``: re-adopt its own MPS
        daemon (giving its server its limits again), or re-register its limits with its GPU's."""
        shared = self.mps_limits(allocation)
        if shared is None:
            return
        token = mps.instance_token(allocation.get(SHARES_SLOT) or {})
        if token is not None:
            await self.kernel_mps.attach(token, *shared)
        else:
            await self.mps.attach(*shared)

    def generate_resource_data(self, allocation: DeviceAllocation) -> dict[str, str]:
        held, _ = self._resolve(allocation)
        return {"CUDA_GLOBAL_DEVICE_IDS": ",".join(held.visible_ids)} if held.visible_ids else {}

    def get_attached_devices(self, allocation: DeviceAllocation) -> list[dict[str, Any]]:
        held, shares = self._resolve(allocation)
        attached: list[dict[str, Any]] = []
        for gpu in held.gpus:
            data: dict[str, Any] = {"smp": gpu.sm_count or 0, "mem": gpu.memory_total, "index": gpu.index,
                                    "pci_bus_id": gpu.pci_bus_id}
            if gpu.uuid in shares:
                limits = mps.client_limits(shares[gpu.uuid], self._capacity[SHARES_SLOT][gpu.uuid],
                                           gpu.memory_total, self.settings.unit_mem)
                data.update(shares=str(shares[gpu.uuid]), mps=mps.describe(limits))
            attached.append({"device_id": gpu.uuid, "model_name": gpu.name, "data": data})
        for mig in held.migs:
            parent = self._by_uuid[mig.parent_uuid]
            attached.append({"device_id": mig.uuid, "model_name": f"{parent.name} MIG {mig.profile}",
                             "data": {"smp": mig.sm_count or 0, "mem": mig.memory_total,
                                      "mig_profile": mig.profile, "parent_uuid": parent.uuid}})
        return attached

    # -- measures ------------------------------------------------------------------------------

    def _measured_ids(self) -> list[str]:
        return [g.uuid for g in self.gpus] + [m.uuid for m in self._mig_by_uuid.values()]

    async def _readings(self, uuids: Iterable[str]) -> dict[str, DeviceReading]:
        wanted = list(uuids)
        if not wanted or not self.nvml.available:
            return {}
        return await asyncio.to_thread(lambda: {u: self.nvml.reading(u) for u in wanted})

    async def gather_node_measures(self) -> list[Measurement]:
        # Whole GPUs only: a MIG slice's memory is part of its GPU's.
        readings = await self._readings(g.uuid for g in self.gpus)
        return node_measures(readings)

    async def gather_container_measures(self, container_id: str, allocation: DeviceAllocation
                                        ) -> list[Measurement]:
        held, shares = self._resolve(allocation)
        readings = await self._readings(held.visible_ids)
        if not readings:
            return []
        pids = container_pids(container_id, self._cgroup_root) if shares else None
        return container_measures(readings, shared=set(shares), pids=pids)


class OneGPUShares(FractionAllocMap):
    """``cuda.shares`` whose every allocation lies on one GPU: an MPS client talks to one MPS
    server (one GPU's daemon). The fraction map already prefers one GPU that fits; where only a
    split would fit, the kernel is refused as not fitting now; the manager avoids that by
    placing with the per-GPU free shares the heartbeat reports (``single_device``)."""

    single_device = True

    def allocate(self, requested: Mapping[SlotName, Decimal]) -> DeviceAllocation:
        taken = super().allocate(requested)
        spread = [slot for slot, per_device in taken.items() if len(per_device) > 1]
        if spread:
            self.free(taken)
            raise AllocationError(f"{', '.join(spread)}: no single GPU has {requested[spread[0]]} shares free "
                                  "(through MPS one kernel's shares lie on one GPU)")
        return taken


def offered_slots(gpus: Iterable[GPUInfo], mode: Mode, unit_mem: int) -> dict[SlotName, dict[str, Decimal]]:
    """Per slot, per device, what this agent offers (see the module doc)."""
    slots: dict[SlotName, dict[str, Decimal]] = {}
    for gpu in gpus:
        if gpu.mig_current:
            for mig in gpu.mig_devices:
                slots.setdefault(mig_slot(mig.profile), {})[mig.uuid] = Decimal(1)
        elif mode == "fractional":
            capacity = mps.device_share_capacity(gpu.memory_total, unit_mem)
            if capacity > 0:
                slots.setdefault(SHARES_SLOT, {})[gpu.uuid] = capacity
        else:
            slots.setdefault(DEVICE_SLOT, {})[gpu.uuid] = Decimal(1)
    return slots


def node_measures(readings: Mapping[str, DeviceReading]) -> list[Measurement]:
    utils = {u: Decimal(r.gpu_util) for u, r in readings.items() if r.gpu_util is not None}
    measures = []
    if utils:
        measures.append(Measurement("cuda_util", sum(utils.values(), Decimal(0)),
                                    capacity=Decimal(100 * len(utils)), unit="%", per_device=utils))
    if readings:
        measures.append(Measurement(
            "cuda_mem", Decimal(sum(r.memory_used for r in readings.values())),
            capacity=Decimal(sum(r.memory_total for r in readings.values())), unit="bytes",
            per_device={u: Decimal(r.memory_used) for u, r in readings.items()}))
    return measures


def container_measures(readings: Mapping[str, DeviceReading], *, shared: Collection[str] = (),
                       pids: set[int] | None = None) -> list[Measurement]:
    """A kernel's readings: its whole GPUs and MIG slices as the device reports them; on a GPU it
    shares through MPS, memory is that of its own processes (``pids``; the device's total when
    the container's processes are unknown), utilisation the GPU's (NVML cannot split it)."""
    measures = node_measures(readings)
    if pids is None or not shared:
        return measures
    per_device = {}
    for uuid, reading in readings.items():
        if uuid in shared:
            per_device[uuid] = Decimal(sum(p.used_memory or 0 for p in reading.processes if p.pid in pids))
        else:
            per_device[uuid] = Decimal(reading.memory_used)
    return [m if m.key != "cuda_mem" else Measurement(
        "cuda_mem", sum(per_device.values(), Decimal(0)), capacity=m.capacity, unit="bytes",
        per_device=per_device) for m in measures]


def container_pids(container_id: str, cgroup_root: Path = Path("/sys/fs/cgroup")) -> set[int] | None:
    """The pids in a Docker container's cgroup (v2; systemd or cgroupfs driver), None if not found."""
    if not container_id or "/" in container_id or container_id.startswith("."):
        return None
    for relative in (f"system.slice/docker-{container_id}.scope", f"docker/{container_id}"):
        try:
            text = (cgroup_root / relative / "cgroup.procs").read_text()
        except OSError:
            continue
        return {int(line) for line in text.split() if line.isdigit()}
    return None


def _capability_text(capability: tuple[int, int] | None) -> str | None:
    return f"{capability[0]}.{capability[1]}" if capability else None
