"""The mock accelerator: make-believe devices read from a file, so that multi-device scheduling and
allocation are exercised on machines without accelerators (the original's ``accelerator.mock``).

Opt-in: load it with ``[agent] allow-compute-plugins = ["mock"]``. Its file is
``[plugins.mock] config-path`` (default ``/etc/backend.ai/mock-accelerator.toml``, next to the
installed agent.toml), with the original's keys::

    slot_name = "cuda"                       # the device key: slots cuda.device / cuda.shares
    device_plugin_name = "CUDADevice"        # or "MockDevice"
    allocation_mode = "discrete"             # ours; etcd config/plugins/accelerator/<slot_name>/allocation_mode wins
    unit_mem = "2g"                          # fractional mode: one share = unit_mem of memory ...
    unit_proc = 8                            # ... and unit_proc processing units (the smaller wins)
    [attributes]
    nvidia_driver = "450.00.00"
    cuda_runtime = "11.0"
    [[devices]]
    mother_uuid = "c59395cd-ac91-4cd3-a1b0-3d2568aa2d04"
    model_name = "CUDA GPU"
    numa_node = 0
    subproc_count = 108
    memory_size = "16g"
    is_mig_device = false                    # mandatory for slot_name "cuda"; true: a MIG slice
    # mig_profile = "1g.10gb"                # ours, for MIG slices (default from the sizes)

Discrete mode reports ``<key>.device`` (whole devices), fractional mode ``<key>.shares`` (decimal
shares, a device holding ``min(memory/unit_mem, subproc_count/unit_proc)``); MIG slices are always
``<key>.device:<profile>-mig`` (unique: one slice per unit). Kernels get no real device, only the
environment: ``BACKENDAI_MOCK_<KEY>_DEVICES`` (device ids), ``BACKENDAI_MOCK_<KEY>_DEVICE_COUNT``,
``<KEY>_VISIBLE_DEVICES`` (the devices' ordinals in the file) and in fractional mode
``BACKENDAI_MOCK_<KEY>_SHARES`` (``id:amount,...``). Its metrics are deterministic: a device is
reported busy in proportion to how much of it is allocated.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bai.common.types import parse_binary_size

from .alloc_map import CompositeAllocMap, DiscreteAllocMap, FractionAllocMap, Strategy
from .base import AllocMap, ComputePlugin, Device, DeviceAllocation, Measurement, SlotName, SlotType

DEFAULT_CONFIG_PATH = Path("/etc/backend.ai/mock-accelerator.toml")
AllocationMode = Literal["discrete", "fractional"]
SHARE_QUANTUM = Decimal("0.01")


class MockConfigError(ValueError):
    pass


class MockDeviceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mother_uuid: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    model_name: str = Field("Mock Accelerator", max_length=128)
    numa_node: int | None = Field(0, ge=0)
    subproc_count: int = Field(ge=1, le=100_000)
    memory_size: int = Field(ge=0)
    is_mig_device: bool | None = None
    mig_profile: str | None = Field(None, pattern=r"^[A-Za-z0-9.]{1,32}$")

    @field_validator("memory_size", mode="before")
    @classmethod
    def _size(cls, value: object) -> int:
        return parse_binary_size(value)  # type: ignore[arg-type]

    def profile(self) -> str:
        if self.mig_profile:
            return self.mig_profile
        return f"{max(1, self.subproc_count // 14)}g.{self.memory_size // 2**30}gb"


class MockConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    slot_name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    device_plugin_name: Literal["CUDADevice", "MockDevice"] = "MockDevice"
    devices: list[MockDeviceSpec] = Field(min_length=1, max_length=1024)
    attributes: dict[str, Any] = Field(default_factory=dict)
    formats: dict[str, Any] = Field(default_factory=dict)
    allocation_mode: AllocationMode | None = None
    allocation_strategy: Literal["fill", "evenly"] = "fill"
    unit_mem: int = Field(2 * 2**30, ge=1)
    unit_proc: int = Field(8, ge=1)

    @field_validator("unit_mem", mode="before")
    @classmethod
    def _size(cls, value: object) -> int:
        return parse_binary_size(value)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _check(self) -> MockConfig:
        ids = [d.mother_uuid for d in self.devices]
        if len(set(ids)) != len(ids):
            raise ValueError("devices: mother_uuid must be unique")
        if self.slot_name == "cuda" and any(d.is_mig_device is None for d in self.devices):
            raise ValueError("devices: is_mig_device is mandatory when slot_name is cuda")
        return self


def load_mock_config(path: Path) -> MockConfig:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MockConfigError(f"{path}: {exc}") from exc
    try:
        return MockConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors())
        raise MockConfigError(f"{path}: {problems}") from exc


def device_shares(spec: MockDeviceSpec, unit_mem: int, unit_proc: int) -> Decimal:
    """How many shares one device holds in fractional mode (rounded down to the quantum)."""
    shares = min(Decimal(spec.memory_size) / unit_mem, Decimal(spec.subproc_count) / unit_proc)
    return shares.quantize(SHARE_QUANTUM, rounding=ROUND_DOWN)


def _plain(amount: Decimal) -> str:
    """``Decimal("0.50")`` -> ``"0.5"``, ``Decimal("1E+1")`` -> ``"10"``."""
    return format(amount.normalize(), "f")


class MockPlugin(ComputePlugin):
    """The mock accelerator; its ``key`` is the file's ``slot_name``."""

    key = "mock"
    opt_in = True
    slot_types: Sequence[tuple[SlotName, SlotType]] = ()

    def __init__(self, plugin_config: Mapping[str, Any], agent_config: Any) -> None:
        super().__init__(plugin_config, agent_config)
        self.config_path = Path(str(plugin_config.get("config-path") or DEFAULT_CONFIG_PATH))
        self.config: MockConfig | None = None
        self.mode: AllocationMode = "discrete"
        self.alloc_map: AllocMap | None = None

    async def init(self) -> None:
        config = load_mock_config(self.config_path)
        etcd: Mapping[str, str] = self.plugin_config.get("etcd") or {}
        from_etcd = etcd.get(f"accelerator/{config.slot_name}/allocation_mode")
        mode = from_etcd or config.allocation_mode or "discrete"
        if mode not in ("discrete", "fractional"):
            raise MockConfigError(f"allocation_mode must be discrete or fractional, not {mode!r}")
        self.config, self.mode = config, mode  # type: ignore[assignment]
        self.key = config.slot_name
        slot_types: list[tuple[SlotName, SlotType]] = [(self.main_slot, "count")]
        slot_types += [(slot, "unique") for slot in sorted(self._mig_slots())]
        self.slot_types = slot_types
        self.exclusive_slot_types = frozenset({f"{self.key}.device", f"{self.key}.shares",
                                               f"{self.key}.device:*-mig"})

    # -- devices and slots -------------------------------------------------------------------

    @property
    def main_slot(self) -> SlotName:
        return f"{self.key}.shares" if self.mode == "fractional" else f"{self.key}.device"

    def _cfg(self) -> MockConfig:
        if self.config is None:
            raise RuntimeError("the mock accelerator is not initialised")
        return self.config

    def _mig_slots(self) -> dict[SlotName, list[MockDeviceSpec]]:
        slots: dict[SlotName, list[MockDeviceSpec]] = {}
        for spec in self._cfg().devices:
            if spec.is_mig_device:
                slots.setdefault(f"{self.key}.device:{spec.profile()}-mig", []).append(spec)
        return slots

    def _whole_devices(self) -> list[MockDeviceSpec]:
        return [spec for spec in self._cfg().devices if not spec.is_mig_device]

    async def list_devices(self) -> Sequence[Device]:
        return [Device(device_id=spec.mother_uuid, hw_location=f"mock:{idx}", numa_node=spec.numa_node,
                       memory_size=spec.memory_size, processing_units=spec.subproc_count,
                       model_name=spec.model_name, extra={"is_mig_device": bool(spec.is_mig_device)})
                for idx, spec in enumerate(self._cfg().devices)]

    def _capacities(self) -> dict[SlotName, dict[str, Decimal]]:
        cfg = self._cfg()
        if self.mode == "fractional":
            main = {s.mother_uuid: device_shares(s, cfg.unit_mem, cfg.unit_proc) for s in self._whole_devices()}
        else:
            main = {s.mother_uuid: Decimal(1) for s in self._whole_devices()}
        return {self.main_slot: main}

    async def available_slots(self) -> dict[SlotName, Decimal]:
        slots = {slot: sum(per.values(), Decimal(0)) for slot, per in self._capacities().items()}
        slots.update({slot: Decimal(len(specs)) for slot, specs in self._mig_slots().items()})
        return slots

    def create_alloc_map(self) -> AllocMap:
        strategy: Strategy = self._cfg().allocation_strategy
        main = self._capacities()
        mig = {slot: {s.mother_uuid: Decimal(1) for s in specs} for slot, specs in self._mig_slots().items()}
        maps: list[AllocMap] = []
        if self.mode == "fractional":
            maps.append(FractionAllocMap(main, SHARE_QUANTUM, strategy))
            if mig:
                maps.append(DiscreteAllocMap(mig, strategy, unique_slots=set(mig)))
        else:
            maps.append(DiscreteAllocMap({**main, **mig}, strategy, unique_slots=set(mig)))
        self.alloc_map = maps[0] if len(maps) == 1 else CompositeAllocMap(maps)
        return self.alloc_map

    async def extra_info(self) -> dict[str, Any]:
        cfg = self._cfg()
        info: dict[str, Any] = {"mock": True, "device_plugin_name": cfg.device_plugin_name,
                                "allocation_mode": self.mode, **{str(k): v for k, v in cfg.attributes.items()}}
        if cfg.device_plugin_name == "CUDADevice":
            info.setdefault("nvidia_driver", "450.00.00")
            info.setdefault("cuda_runtime", "11.0")
            info["cuda_support"] = True
        return info

    # -- containers --------------------------------------------------------------------------

    def _held(self, allocation: DeviceAllocation) -> list[tuple[int, MockDeviceSpec, Decimal]]:
        """``(ordinal, device, amount)`` of each device the allocation holds, in file order."""
        amounts: dict[str, Decimal] = {}
        for per_device in allocation.values():
            for dev, amount in per_device.items():
                if amount > 0:
                    amounts[dev] = amounts.get(dev, Decimal(0)) + amount
        return [(idx, spec, amounts[spec.mother_uuid]) for idx, spec in enumerate(self._cfg().devices)
                if spec.mother_uuid in amounts]

    async def generate_docker_args(self, allocation: DeviceAllocation) -> dict[str, Any]:
        held = self._held(allocation)
        if not held:
            return {}
        upper = self.key.upper()
        env = [f"BACKENDAI_MOCK_{upper}_DEVICES={','.join(spec.mother_uuid for _, spec, _ in held)}",
               f"BACKENDAI_MOCK_{upper}_DEVICE_COUNT={len(held)}",
               f"{upper}_VISIBLE_DEVICES={','.join(str(idx) for idx, _, _ in held)}"]
        if self.mode == "fractional":
            shares = allocation.get(self.main_slot) or {}
            env.append(f"BACKENDAI_MOCK_{upper}_SHARES="
                       + ",".join(f"{dev}:{_plain(amount)}" for dev, amount in shares.items()))
        return {"Env": env}

    def generate_resource_data(self, allocation: DeviceAllocation) -> dict[str, str]:
        return {f"{slot.upper().replace('.', '_').replace(':', '_')}_SHARES":
                ",".join(f"{dev}:{_plain(amount)}" for dev, amount in per_device.items())
                for slot, per_device in allocation.items()}

    def get_attached_devices(self, allocation: DeviceAllocation) -> list[dict[str, Any]]:
        return [{"device_id": spec.mother_uuid, "model_name": spec.model_name,
                 "data": {"smp": spec.subproc_count, "mem": spec.memory_size, "amount": str(amount),
                          "is_mig_device": bool(spec.is_mig_device)}}
                for _, spec, amount in self._held(allocation)]

    # -- metrics (deterministic) -------------------------------------------------------------

    def _busy(self, spec: MockDeviceSpec, amount: Decimal) -> Decimal:
        """The fraction of a device ``amount`` of it stands for (1 for a whole device)."""
        if self.mode != "fractional" or spec.is_mig_device:
            return min(amount, Decimal(1))
        cfg = self._cfg()
        capacity = device_shares(spec, cfg.unit_mem, cfg.unit_proc)
        return min(amount / capacity, Decimal(1)) if capacity > 0 else Decimal(0)

    def _measures(self, held: list[tuple[int, MockDeviceSpec, Decimal]]) -> list[Measurement]:
        util = {spec.mother_uuid: (self._busy(spec, amount) * 50).quantize(Decimal("0.01"))
                for _, spec, amount in held}
        mem = {spec.mother_uuid: (self._busy(spec, amount) * spec.memory_size / 2).to_integral_value()
               for _, spec, amount in held}
        mem_capacity = sum((Decimal(spec.memory_size) for _, spec, _ in held), Decimal(0))
        count = len(held)
        return [
            Measurement(f"{self.key}_util", sum(util.values(), Decimal(0)) / count if count else Decimal(0),
                        Decimal(100), "%", util),
            Measurement(f"{self.key}_mem", sum(mem.values(), Decimal(0)), mem_capacity, "bytes", mem),
        ]

    async def gather_node_measures(self) -> list[Measurement]:
        used: dict[str, Decimal] = {}
        if self.alloc_map is not None:
            maps = self.alloc_map.maps if isinstance(self.alloc_map, CompositeAllocMap) else [self.alloc_map]
            for amap in maps:
                for per_device in getattr(amap, "allocations", {}).values():
                    for dev, amount in per_device.items():
                        used[dev] = used.get(dev, Decimal(0)) + amount
        held = [(idx, spec, used.get(spec.mother_uuid, Decimal(0))) for idx, spec in enumerate(self._cfg().devices)]
        return self._measures(held)

    async def gather_container_measures(self, container_id: str, allocation: DeviceAllocation
                                        ) -> list[Measurement]:
        return self._measures(self._held(allocation))
