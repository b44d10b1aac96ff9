"""The compute-plugin interface (the original's ``AbstractComputePlugin`` duties, our shapes).

A plugin discovers its devices, reports slots, hands out devices through an :class:`AllocMap`,
turns an allocation into container arguments, and measures what it owns. ``cpu`` and ``mem`` are
plugins too. Plugins are registered as entry points in the ``bai.compute_plugins`` group
(``name = "module:PluginClass"``) and enabled by ``[agent] allow-compute-plugins`` /
``block-compute-plugins`` in agent.toml; ``cpu`` and ``mem`` are always on.

Shapes every implementation shares:

* ``SlotName`` is a slot key on the wire (``"cpu"``, ``"mem"``, ``"cuda.device"``, ``"cuda.shares"``,
  ``"cuda.device:1g.10gb-mig"``); ``SlotType`` is ``"count"``, ``"bytes"`` or ``"unique"``.
* ``DeviceAllocation`` maps a slot name to ``{device_id: amount}``: what one kernel holds of this
  plugin's slots, e.g. ``{"cuda.device": {"GPU-2ae6...": Decimal(1)}}`` or
  ``{"cpu": {"0": Decimal(1), "1": Decimal(1)}}``. It is stored in the container's labels (JSON,
  decimals as strings) so that a restarted agent rebuilds its alloc maps from the containers.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

SlotName = str
SlotType = Literal["count", "bytes", "unique"]
DeviceId = str
DeviceAllocation = dict[SlotName, dict[DeviceId, Decimal]]


class AllocationError(Exception):
    """The request cannot be met by this plugin's free devices (the agent answers InsufficientResources)."""


@dataclass(frozen=True)
class Device:
    device_id: DeviceId            # stable across restarts: a core index, a GPU UUID, a MIG UUID
    hw_location: str               # PCI bus id, "cpu", "mock:<n>" ...
    numa_node: int | None
    memory_size: int               # bytes of device memory (0 where meaningless)
    processing_units: int          # cores, SMs ...
    model_name: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Measurement:
    """One metric of one container or of the node: ``current`` in ``unit`` (``"%"``, ``"bytes"``),
    ``capacity`` where it has one; ``per_device`` for per-GPU figures."""

    key: str                       # "cpu_util", "mem", "cuda_util", "cuda_mem" ...
    current: Decimal
    capacity: Decimal | None = None
    unit: str = ""
    per_device: Mapping[DeviceId, Decimal] = field(default_factory=dict)


class AllocMap(abc.ABC):
    """Which device holds how much of which slot. Implementations (compute/alloc_map.py):
    ``DiscreteAllocMap`` (whole units per device: cpu cores, cuda.device, MIG slices) and
    ``FractionAllocMap`` (decimal shares per device, quantum 0.01, strategies "fill" and "evenly")."""

    @abc.abstractmethod
    def allocate(self, requested: Mapping[SlotName, Decimal]) -> DeviceAllocation:
        """Take ``requested`` (only this plugin's slots) or raise AllocationError, changing nothing."""

    @abc.abstractmethod
    def apply(self, allocation: DeviceAllocation) -> None:
        """Re-take an allocation read back from a container (agent restart); may overcommit."""

    @abc.abstractmethod
    def free(self, allocation: DeviceAllocation) -> None: ...

    @abc.abstractmethod
    def capacity(self) -> dict[SlotName, Decimal]: ...

    @abc.abstractmethod
    def used(self) -> dict[SlotName, Decimal]: ...


class ComputePlugin(abc.ABC):
    key: str                                     # "cpu", "mem", "cuda"
    slot_types: Sequence[tuple[SlotName, SlotType]]
    #: Slot names (fnmatch patterns) of which one kernel may hold at most one kind.
    exclusive_slot_types: frozenset[str] = frozenset()
    #: Loaded only when ``[agent] allow-compute-plugins`` names it (the mock accelerator).
    opt_in: bool = False

    def __init__(self, plugin_config: Mapping[str, Any], agent_config: Any) -> None:
        self.plugin_config = plugin_config
        self.agent_config = agent_config

    async def init(self) -> None:  # noqa: B027 - optional hook
        """Discover devices, open libraries (NVML), start helpers (the MPS control daemon)."""

    async def cleanup(self) -> None:  # noqa: B027 - optional hook
        """Stop what init started."""

    async def release(self, allocation: DeviceAllocation) -> None:  # noqa: B027 - optional hook
        """The kernel that held ``allocation`` is gone (after its alloc map freed it): undo what
        generate_docker_args set up for it outside the container (e.g. MPS limits)."""

    async def restore(self, allocation: DeviceAllocation) -> None:  # noqa: B027 - optional hook
        """A container that outlived an agent restart holds ``allocation`` (after its alloc map
        re-applied it): set up again what generate_docker_args did outside the container."""

    @abc.abstractmethod
    async def list_devices(self) -> Sequence[Device]: ...

    @abc.abstractmethod
    async def available_slots(self) -> dict[SlotName, Decimal]:
        """What the manager may schedule on this agent (after any reserve)."""

    @abc.abstractmethod
    def create_alloc_map(self) -> AllocMap: ...

    async def extra_info(self) -> dict[str, Any]:
        """Heartbeat ``compute_plugins[key]``: version and facts (driver, CUDA version)."""
        return {}

    @abc.abstractmethod
    async def generate_docker_args(self, allocation: DeviceAllocation) -> dict[str, Any]:
        """Fragment merged into the container-create config: ``Env`` (list of ``K=V``) and
        ``HostConfig`` keys (``CpusetCpus``, ``Memory``, ``Devices``, ``DeviceRequests``, ``Binds``...).
        Lists are concatenated, dicts merged, by the agent."""

    def generate_resource_data(self, allocation: DeviceAllocation) -> dict[str, str]:
        """Extra ``KEY=value`` lines of the kernel's resource.txt."""
        return {}

    def get_attached_devices(self, allocation: DeviceAllocation) -> list[dict[str, Any]]:
        """``[{"device_id", "model_name", "data": {...}}]`` for session/kernel info."""
        return []

    async def gather_node_measures(self) -> list[Measurement]:
        return []

    async def gather_container_measures(self, container_id: str, allocation: DeviceAllocation
                                        ) -> list[Measurement]:
        return []
