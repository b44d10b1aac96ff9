"""A thin typed seam over NVML (``pynvml`` from nvidia-ml-py).

Everything the CUDA plugin knows about the GPUs comes through :class:`NVML`: the driver and CUDA
driver versions, the devices with their MIG slices, utilisation, memory and per-process readings.
``lib`` is the ``pynvml`` module on a real host; tests pass a fake built from real readings
(tests/fixtures/fake_nvml.py) that raises pynvml's own error classes.

A host without ``libnvidia-ml`` (``NVMLError_LibraryNotFound``, or no driver loaded) simply has no
CUDA devices: :meth:`NVML.open` answers False and logs it once. Readings a device does not support
(``NVMLError_NotSupported``: NUMA node in a VM, SM count of a whole GPU...) become ``None``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import pynvml

log = logging.getLogger(__name__)
T = TypeVar("T")

_MIG_PROFILE = re.compile(r"MIG\s+(\S+)\s*$")


@dataclass(frozen=True)
class MIGInfo:
    """One MIG slice (a GPU instance + compute instance) of a MIG-enabled GPU."""

    uuid: str                      # "MIG-..." : what CUDA_VISIBLE_DEVICES takes
    profile: str                   # "1g.10gb"
    parent_uuid: str
    parent_index: int
    parent_minor: int
    memory_total: int
    gpu_instance_id: int | None
    compute_instance_id: int | None
    sm_count: int | None


@dataclass(frozen=True)
class GPUInfo:
    index: int
    uuid: str                      # "GPU-..."
    name: str
    minor: int                     # /dev/nvidia<minor>
    memory_total: int
    memory_used: int
    pci_bus_id: str
    compute_capability: tuple[int, int] | None
    sm_count: int | None
    numa_node: int | None
    mig_current: bool
    mig_pending: bool
    mig_devices: tuple[MIGInfo, ...] = field(default=())


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    used_memory: int | None


@dataclass(frozen=True)
class DeviceReading:
    """One sample of a device (a whole GPU, or a MIG slice for memory)."""

    gpu_util: int | None           # % of the time a kernel ran (None: not readable, e.g. a MIG slice)
    mem_util: int | None
    memory_used: int
    memory_total: int
    processes: tuple[ProcessInfo, ...] = ()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def cuda_version_text(version: int) -> str:
    """NVML's integer CUDA driver version (13000, 12040) as "13.0", "12.4"."""
    return f"{version // 1000}.{(version % 1000) // 10}"


def mig_profile_of(name: str) -> str | None:
    """The profile in a MIG device's name ("NVIDIA H100 80GB HBM3 MIG 1g.10gb" -> "1g.10gb")."""
    match = _MIG_PROFILE.search(name)
    return match.group(1) if match else None


class NVML:
    """NVML opened once per agent; every method may be called from a worker thread."""

    def __init__(self, lib: Any = None) -> None:
        self.lib: Any = lib if lib is not None else pynvml
        self.available = False
        self._handles: dict[str, Any] = {}     # uuid (GPU or MIG) -> NVML handle

    def open(self) -> bool:
        """Initialise NVML; False (logged once) where the library or the driver is missing."""
        try:
            self.lib.nvmlInit()
        except pynvml.NVMLError_LibraryNotFound:
            log.info("libnvidia-ml not found: this host has no CUDA devices")
            return False
        except pynvml.NVMLError as exc:
            # No driver loaded, no permission on /dev/nvidiactl...: no usable GPU either.
            log.warning("NVML could not start (%s): no CUDA devices offered", exc)
            return False
        self.available = True
        return True

    def close(self) -> None:
        if self.available:
            self.available = False
            self._handles.clear()
            try:
                self.lib.nvmlShutdown()
            except pynvml.NVMLError as exc:  # shutting down anyway
                log.debug("nvmlShutdown: %s", exc)

    # -- facts ---------------------------------------------------------------------------------

    def driver_version(self) -> str:
        return _text(self.lib.nvmlSystemGetDriverVersion())

    def cuda_driver_version(self) -> str | None:
        version = self._optional(self.lib.nvmlSystemGetCudaDriverVersion)
        return cuda_version_text(int(version)) if version is not None else None

    def devices(self) -> list[GPUInfo]:
        found: list[GPUInfo] = []
        for index in range(int(self.lib.nvmlDeviceGetCount())):
            try:
                found.append(self._gpu(index, self.lib.nvmlDeviceGetHandleByIndex(index)))
            except pynvml.NVMLError as exc:
                # One broken GPU (fallen off the bus, no permission...) must not hide the others.
                log.error("GPU %d is not offered: NVML says %s", index, exc)
        return found

    def _gpu(self, index: int, handle: Any) -> GPUInfo:
        lib = self.lib
        uuid = _text(lib.nvmlDeviceGetUUID(handle))
        self._handles[uuid] = handle
        memory = lib.nvmlDeviceGetMemoryInfo(handle)
        minor = self._optional(lib.nvmlDeviceGetMinorNumber, handle)
        if minor is None:
            # Only where the driver does not say: the minor follows the index on a plain host.
            minor = index
        capability = self._optional(lib.nvmlDeviceGetCudaComputeCapability, handle)
        mig_mode = self._optional(lib.nvmlDeviceGetMigMode, handle) or (0, 0)
        mig_current = bool(mig_mode[0])
        numa = self._optional(lib.nvmlDeviceGetNumaNodeId, handle)
        gpu = GPUInfo(
            index=index,
            uuid=uuid,
            name=_text(lib.nvmlDeviceGetName(handle)),
            minor=int(minor),
            memory_total=int(memory.total),
            memory_used=int(memory.used),
            pci_bus_id=_text(lib.nvmlDeviceGetPciInfo(handle).busId),
            compute_capability=(int(capability[0]), int(capability[1])) if capability else None,
            sm_count=self._sm_count(handle),
            numa_node=int(numa) if numa is not None and int(numa) >= 0 else None,
            mig_current=mig_current,
            mig_pending=bool(mig_mode[1]),
        )
        if mig_current:
            gpu = replace(gpu, mig_devices=tuple(self._mig_devices(gpu, handle)))
        return gpu

    def _mig_devices(self, parent: GPUInfo, handle: Any) -> list[MIGInfo]:
        lib = self.lib
        slices: list[MIGInfo] = []
        for slot in range(int(lib.nvmlDeviceGetMaxMigDeviceCount(handle))):
            try:
                mig = lib.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except pynvml.NVMLError_NotFound:
                continue           # an empty slot: no instance created there
            uuid = _text(lib.nvmlDeviceGetUUID(mig))
            name = _text(lib.nvmlDeviceGetName(mig))
            profile = mig_profile_of(name)
            if profile is None:
                log.warning("MIG device %s has no profile in its name %r: not offered", uuid, name)
                continue
            self._handles[uuid] = mig
            gi = self._optional(lib.nvmlDeviceGetGpuInstanceId, mig)
            ci = self._optional(lib.nvmlDeviceGetComputeInstanceId, mig)
            slices.append(MIGInfo(
                uuid=uuid, profile=profile, parent_uuid=parent.uuid, parent_index=parent.index,
                parent_minor=parent.minor, memory_total=int(lib.nvmlDeviceGetMemoryInfo(mig).total),
                gpu_instance_id=int(gi) if gi is not None else None,
                compute_instance_id=int(ci) if ci is not None else None,
                sm_count=self._sm_count(mig),
            ))
        return slices

    def _sm_count(self, handle: Any) -> int | None:
        attributes = self._optional(self.lib.nvmlDeviceGetAttributes, handle)
        count = getattr(attributes, "multiprocessorCount", None) if attributes is not None else None
        return int(count) if count else None

    # -- readings ------------------------------------------------------------------------------

    def reading(self, uuid: str) -> DeviceReading:
        """Utilisation, memory and processes of a GPU or MIG slice discovered by :meth:`devices`."""
        lib = self.lib
        handle = self._handles[uuid]
        memory = lib.nvmlDeviceGetMemoryInfo(handle)
        rates = self._optional(lib.nvmlDeviceGetUtilizationRates, handle)
        processes = self._optional(lib.nvmlDeviceGetComputeRunningProcesses, handle) or []
        return DeviceReading(
            gpu_util=int(rates.gpu) if rates is not None else None,
            mem_util=int(rates.memory) if rates is not None else None,
            memory_used=int(memory.used),
            memory_total=int(memory.total),
            processes=tuple(
                ProcessInfo(pid=int(p.pid), used_memory=_process_memory(p.usedGpuMemory))
                for p in processes
            ),
        )

    def _optional(self, call: Callable[..., T], *args: Any) -> T | None:
        try:
            return call(*args)
        except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound,
                pynvml.NVMLError_InvalidArgument, pynvml.NVMLError_NoPermission):
            return None


def _process_memory(value: object) -> int | None:
    # NVML reports "not available" (e.g. without per-process accounting) as None or a huge sentinel.
    if value is None:
        return None
    amount = int(value)  # type: ignore[call-overload]
    return None if amount >= 2**63 else amount
