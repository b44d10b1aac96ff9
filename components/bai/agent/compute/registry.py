"""The agent's compute plugins, loaded from the ``bai.compute_plugins`` entry-point group, and the
per-kernel allocation across all of them.

Which plugins load: ``cpu`` and ``mem`` always; the others when ``[agent] allow-compute-plugins``
names them (or, when it is unset, every registered plugin that is not opt-in: the mock accelerator
is), minus ``[agent] block-compute-plugins``. Names are entry-point names (``cuda``, ``mock``); the
original's module names (``ai.backend.accelerator.mock``, ``...cuda_open``) are understood too. A plugin that fails to load or initialise is logged
and skipped: the agent runs on with the others. ``[plugins.<name>]`` of agent.toml is the plugin's
own configuration; etcd ``config/plugins/...`` is handed to every plugin as ``plugin_config["etcd"]``
(keys relative to ``config/plugins/``).

A kernel's allocation (:data:`KernelAllocation`) is ``{plugin key: DeviceAllocation}``; plugins
allocate in ``[resource] allocation-order`` and all or nothing. It is stored in the container label
``ai.backend.internal.device-allocation`` (:func:`allocation_to_json`) so that a restarted agent
re-takes exactly those devices.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping, Sequence
from decimal import Decimal
from importlib import metadata
from typing import Any

from bai.common.types import ResourceSlots

from .alloc_map import single_device_free
from .base import AllocationError, AllocMap, ComputePlugin, DeviceAllocation, Measurement, SlotName

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "bai.compute_plugins"
#: Loaded whatever the allow/block lists say.
INTRINSIC_PLUGINS = ("cpu", "mem")
#: The container label holding a kernel's KernelAllocation (JSON, decimals as strings).
LABEL_DEVICE_ALLOCATION = "ai.backend.internal.device-allocation"

KernelAllocation = dict[str, DeviceAllocation]


class InvalidSlotRequest(ValueError):
    """The request itself is wrong for this agent (mixes exclusive slot types); not a lack of room."""


def allocation_to_json(allocation: KernelAllocation) -> dict[str, dict[str, dict[str, str]]]:
    return {key: {slot: {dev: str(amount) for dev, amount in per_device.items()}
                  for slot, per_device in device_alloc.items()}
            for key, device_alloc in allocation.items()}


def allocation_from_json(raw: Any) -> KernelAllocation:
    """Inverse of :func:`allocation_to_json`; raises ValueError on anything malformed."""
    if not isinstance(raw, dict):
        raise ValueError("a device allocation must be an object")
    out: KernelAllocation = {}
    for key, device_alloc in raw.items():
        if not isinstance(device_alloc, dict):
            raise ValueError(f"allocation of {key} must be an object")
        out[str(key)] = {}
        for slot, per_device in device_alloc.items():
            if not isinstance(per_device, dict):
                raise ValueError(f"allocation of {slot} must be an object")
            try:
                parsed = {str(dev): Decimal(str(amount)) for dev, amount in per_device.items()}
            except ArithmeticError as exc:
                raise ValueError(f"bad amount in the allocation of {slot}") from exc
            if any(not v.is_finite() or v < 0 for v in parsed.values()):
                raise ValueError(f"bad amount in the allocation of {slot}")
            out[str(key)][str(slot)] = parsed
    return out


def allocated_slots(allocation: KernelAllocation) -> ResourceSlots:
    """What a kernel holds per slot, summed over devices."""
    total: ResourceSlots = {}
    for device_alloc in allocation.values():
        for slot, per_device in device_alloc.items():
            total[slot] = total.get(slot, Decimal(0)) + sum(per_device.values(), Decimal(0))
    return total


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f") if value.is_finite() else str(value)


def measurement_json(m: Measurement) -> dict[str, Any]:
    """A measurement in the original's live-stat shape (decimal strings)."""
    pct = None
    if m.capacity is not None and m.capacity > 0:
        pct = _plain((m.current * 100 / m.capacity).quantize(Decimal("0.01")))
    out: dict[str, Any] = {"current": _plain(m.current), "capacity": _plain(m.capacity) if m.capacity is not None
                           else None, "pct": pct, "unit_hint": m.unit, "version": 2}
    if m.per_device:
        out["devices"] = {dev: _plain(value) for dev, value in m.per_device.items()}
    return out


def merge_docker_args(body: dict[str, Any], fragment: Mapping[str, Any]) -> None:
    """Merge a plugin's fragment into a create-container body: lists are concatenated, dicts
    merged (recursively), anything else replaced."""
    for key, value in fragment.items():
        current = body.get(key)
        if isinstance(current, list) and isinstance(value, list):
            body[key] = [*current, *value]
        elif isinstance(current, dict) and isinstance(value, Mapping):
            merge_docker_args(current, value)
        else:
            body[key] = value


#: The original's plugin module names, as an agent.toml written for it lists them.
ORIGINAL_PLUGIN_NAMES = {
    "ai.backend.accelerator.cuda_open": "cuda",
    "ai.backend.accelerator.cuda": "cuda",
    "ai.backend.accelerator.mock": "mock",
}


def _names(listed: Sequence[str]) -> set[str]:
    return {ORIGINAL_PLUGIN_NAMES.get(name, name) for name in listed}


def _selected(name: str, allow: Sequence[str] | None, block: Sequence[str], opt_in: bool) -> bool:
    if name in INTRINSIC_PLUGINS:
        return True
    if name in _names(block):
        return False
    return name in _names(allow) if allow is not None else not opt_in


class ComputeRegistry:
    """The loaded plugins, their alloc maps and the slots they report."""

    def __init__(self, plugins: Sequence[ComputePlugin], allocation_order: Sequence[str] = ()) -> None:
        order = {key: idx for idx, key in enumerate(allocation_order)}
        self.plugins: dict[str, ComputePlugin] = {
            p.key: p for p in sorted(plugins, key=lambda p: (order.get(p.key, len(order)), p.key))}
        self.alloc_maps: dict[str, AllocMap] = {}
        self.slot_types: dict[SlotName, str] = {}
        self.available: ResourceSlots = {}
        self._slot_owner: dict[SlotName, str] = {}

    # -- start-up ---------------------------------------------------------------------------

    @classmethod
    async def load(cls, agent_config: Any, etcd_config: Mapping[str, str] | None = None,
                   entry_points: Sequence[metadata.EntryPoint] | None = None) -> ComputeRegistry:
        """Instantiate and initialise the selected plugins (a failing one is logged and skipped,
        except ``cpu``/``mem``, without which no kernel can be placed)."""
        section = agent_config.agent
        allow, block = section.allow_compute_plugins, section.block_compute_plugins
        eps = list(entry_points) if entry_points is not None else \
            list(metadata.entry_points(group=ENTRY_POINT_GROUP))
        plugins: list[ComputePlugin] = []
        seen: set[str] = set()
        for ep in sorted(eps, key=lambda e: e.name):
            if ep.name in seen:
                continue
            seen.add(ep.name)
            try:
                plugin_cls = ep.load()
                if not _selected(ep.name, allow, block, bool(getattr(plugin_cls, "opt_in", False))):
                    continue
                own = dict((getattr(agent_config, "plugins", None) or {}).get(ep.name) or {})
                own["etcd"] = dict(etcd_config or {})
                plugin = plugin_cls(own, agent_config)
                if not isinstance(plugin, ComputePlugin):
                    raise TypeError(f"{ep.value} is not a ComputePlugin")
                await plugin.init()
                if plugin.key in {p.key for p in plugins}:
                    await plugin.cleanup()
                    raise ValueError(f"another plugin already provides the device key {plugin.key!r}")
                plugins.append(plugin)
            except Exception as exc:
                if ep.name in INTRINSIC_PLUGINS:
                    raise
                log.error("compute plugin %s (%s) is skipped: %s", ep.name, ep.value,
                          f"{type(exc).__name__}: {exc}")
        missing = set(INTRINSIC_PLUGINS) - {p.key for p in plugins}
        if missing:
            raise RuntimeError(f"the intrinsic compute plugins are not registered: {', '.join(sorted(missing))}"
                               f" (is the bai package installed? entry-point group {ENTRY_POINT_GROUP})")
        registry = cls(plugins, agent_config.resource.allocation_order)
        try:
            await registry.setup()
        except BaseException:
            await registry.cleanup()
            raise
        return registry

    async def setup(self) -> None:
        for key, plugin in list(self.plugins.items()):
            try:
                slots = await plugin.available_slots()
                alloc_map = plugin.create_alloc_map()
            except Exception as exc:
                if key in INTRINSIC_PLUGINS:
                    raise
                log.error("compute plugin %s is skipped: %s: %s", key, type(exc).__name__, exc)
                del self.plugins[key]
                await plugin.cleanup()
                continue
            self.alloc_maps[key] = alloc_map
            for slot, slot_type in plugin.slot_types:
                if slot in self.slot_types:
                    log.warning("slot %s of plugin %s is already provided by %s; ignored",
                                slot, key, self._slot_owner[slot])
                    continue
                self.slot_types[slot] = slot_type
                self._slot_owner[slot] = key
            for slot, amount in slots.items():
                if self._slot_owner.get(slot) == key:
                    self.available[slot] = amount

    async def cleanup(self) -> None:
        for key, plugin in self.plugins.items():
            try:
                await plugin.cleanup()
            except Exception:
                log.exception("compute plugin %s: cleanup failed", key)

    # -- allocation -------------------------------------------------------------------------

    def check_request(self, requested: Mapping[SlotName, Decimal]) -> None:
        """Refuse what no amount of free room would make possible: unknown slots, negative
        amounts, exclusive slot types mixed in one kernel."""
        for slot, amount in requested.items():
            if amount < 0:
                raise InvalidSlotRequest(f"negative amount for slot {slot}")
            if amount > 0 and slot not in self._slot_owner:
                raise InvalidSlotRequest(f"this agent has no slot type {slot}")
        for key, plugin in self.plugins.items():
            if not plugin.exclusive_slot_types:
                continue
            kinds = sorted(slot for slot, amount in requested.items() if amount > 0
                           and self._slot_owner.get(slot) == key
                           and any(fnmatch.fnmatchcase(slot, pat) for pat in plugin.exclusive_slot_types))
            if len(kinds) > 1:
                raise InvalidSlotRequest(f"slot types {', '.join(kinds)} cannot be mixed in one kernel")

    def allocate(self, requested: Mapping[SlotName, Decimal]) -> KernelAllocation:
        """Take ``requested`` from every plugin in allocation order, or raise (AllocationError
        when there is not room now, InvalidSlotRequest when there never is), changing nothing."""
        self.check_request(requested)
        done: KernelAllocation = {}
        try:
            for key, alloc_map in self.alloc_maps.items():
                mine = {slot: amount for slot, amount in requested.items()
                        if self._slot_owner.get(slot) == key and amount > 0}
                if not mine:
                    continue
                done[key] = alloc_map.allocate(mine)
        except AllocationError:
            self.free(done)
            raise
        return done

    def apply(self, allocation: KernelAllocation) -> None:
        """Re-take a re-adopted container's allocation (may overcommit: it is running already).
        Allocations of a plugin that is gone are ignored."""
        for key, device_alloc in allocation.items():
            if (alloc_map := self.alloc_maps.get(key)) is not None:
                alloc_map.apply(device_alloc)
            else:
                log.warning("a re-adopted kernel holds devices of compute plugin %s, which is not loaded", key)

    def free(self, allocation: KernelAllocation) -> None:
        for key, device_alloc in allocation.items():
            if (alloc_map := self.alloc_maps.get(key)) is not None:
                alloc_map.free(device_alloc)

    async def released(self, allocation: KernelAllocation) -> None:
        """The plugins' ``release`` hooks for a freed allocation (errors logged, never raised)."""
        await self._hooks("release", allocation)

    async def restored(self, allocation: KernelAllocation) -> None:
        """The plugins' ``restore`` hooks for a re-applied allocation (errors logged, never raised)."""
        await self._hooks("restore", allocation)

    async def _hooks(self, hook: str, allocation: KernelAllocation) -> None:
        for key, device_alloc in allocation.items():
            plugin = self.plugins.get(key)
            if plugin is None:
                continue
            try:
                await getattr(plugin, hook)(device_alloc)
            except Exception:
                log.exception("compute plugin %s: %s hook failed", key, hook)

    def used(self) -> ResourceSlots:
        total: ResourceSlots = {}
        for alloc_map in self.alloc_maps.values():
            total.update(alloc_map.used())
        return total

    # -- containers and heartbeats ----------------------------------------------------------

    async def docker_args(self, allocation: KernelAllocation) -> dict[str, Any]:
        """Every plugin's container fragment for this allocation, merged (``cpu`` and ``mem``
        always contribute, even for a zero request, so that limits are never left out)."""
        body: dict[str, Any] = {}
        for key, plugin in self.plugins.items():
            device_alloc = allocation.get(key)
            if device_alloc is None and key not in INTRINSIC_PLUGINS:
                continue
            merge_docker_args(body, await plugin.generate_docker_args(device_alloc or {}))
        return body

    def attached_devices(self, allocation: KernelAllocation) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for key, device_alloc in allocation.items():
            plugin = self.plugins.get(key)
            if plugin is not None and (devices := plugin.get_attached_devices(device_alloc)):
                out[key] = devices
        return out

    async def container_stats(self, containers: Mapping[str, KernelAllocation]
                              ) -> dict[str, dict[str, dict[str, Any]]]:
        """``{container id: {metric: live stat}}`` from every plugin's container measures; a
        plugin that fails is left out of that round."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for container_id, allocation in containers.items():
            stat: dict[str, dict[str, Any]] = {}
            for key, plugin in self.plugins.items():
                try:
                    measures = await plugin.gather_container_measures(container_id, allocation.get(key) or {})
                except Exception as exc:
                    log.debug("compute plugin %s: measuring %s failed: %s", key, container_id[:12], exc)
                    continue
                stat.update({m.key: measurement_json(m) for m in measures})
            out[container_id] = stat
        for plugin in self.plugins.values():
            retain = getattr(plugin, "retain", None)
            if callable(retain):
                retain(set(containers))
        return out

    async def extra_infos(self, version: str) -> dict[str, dict[str, Any]]:
        infos: dict[str, dict[str, Any]] = {}
        for key, plugin in self.plugins.items():
            try:
                extra = await plugin.extra_info()
            except Exception as exc:
                log.warning("compute plugin %s: extra_info failed: %s", key, exc)
                extra = {}
            infos[key] = {"version": version, **extra}
            if (alloc_map := self.alloc_maps.get(key)) is not None and (free := single_device_free(alloc_map)):
                # slots one kernel takes from one device: each device's free amount, so that the
                # manager holds back what fits the agent's total but no single device
                infos[key]["placement"] = {slot: {dev: _plain(amount) for dev, amount in per_device.items()}
                                           for slot, per_device in free.items()}
                infos[key]["placement_capacity"] = {
                    slot: {dev: _plain(amount) for dev, amount in per_device.items()}
                    for slot, per_device in single_device_free(alloc_map, capacity=True).items()}
        return infos
