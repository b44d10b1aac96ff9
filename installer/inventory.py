"""Inventories: Python files that define the groups ``halfstack``, ``manager``, ``agents`` and
``storage`` as lists of hosts (pyinfra style: ``"@local"``, ``"10.0.0.5"`` or ``("10.0.0.5", {data})``),
and optionally ``data``, shared by every host.

Host data is nested like the settings (``{"postgresql": {"listen": "10.0.0.5"}}``) next to
pyinfra's own keys (``ssh_user`` ...); a host's own data is merged over the shared ``data``
section by section. Every host's data is validated on load, and the errors name the inventory,
the host and the key path. Every inventory uses the same group names, so roles never branch on
all-in-one vs multi-node.
"""

from __future__ import annotations

import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roles._ha import check_topology
from roles.catalog import GROUPS
from roles.settings import check_host_data

__all__ = ["GROUPS", "Inventory", "InventoryError", "load", "merge", "validate"]
REPO = Path(__file__).resolve().parent.parent
DEFAULT_INVENTORY = REPO / "inventories" / "local.py"


class InventoryError(Exception):
    pass


@dataclass
class Inventory:
    path: str
    groups: dict[str, list[str]]
    data: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def hosts(self) -> list[str]:
        """Every host once, in first-seen group order."""
        seen: list[str] = []
        for group in GROUPS:
            for name in self.groups.get(group, []):
                if name not in seen:
                    seen.append(name)
        return seen


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``; nested dicts (settings sections) key by key."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def validate(source: str, data: dict[str, dict[str, Any]]) -> None:
    """Raise :class:`InventoryError` listing every bad key of every host (``source: host NAME:
    key.path: problem``)."""
    problems = [f"{source}: host {name!r}: {problem}"
                for name, host_data in data.items() for problem in check_host_data(host_data)]
    if problems:
        raise InventoryError("\n".join(problems))


def load(path: str | Path | None = None) -> Inventory:
    p = Path(path) if path else DEFAULT_INVENTORY
    if not p.is_file():
        raise InventoryError(f"inventory {p} not found")
    ns = runpy.run_path(str(p))
    groups: dict[str, list[str]] = {}
    data: dict[str, dict[str, Any]] = {}
    shared = ns.get("data", {})
    if not isinstance(shared, dict):
        raise InventoryError(f"{p}: `data` must be a dict")
    for group in GROUPS:
        entries = ns.get(group, [])
        if not isinstance(entries, list | tuple):
            raise InventoryError(f"{p}: group {group} must be a list of hosts")
        names = []
        for entry in entries:
            if isinstance(entry, str):
                name, host_data = entry, dict[str, Any]()
            elif isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], dict):
                name, host_data = entry
            else:
                raise InventoryError(f"{p}: bad host entry in {group}: {entry!r}")
            names.append(name)
            data[name] = merge(data.get(name, shared), host_data)
        groups[group] = names
    if not any(groups.values()):
        raise InventoryError(f"{p}: defines none of the groups {', '.join(GROUPS)}")
    validate(str(p), data)
    # the HA half-stack across hosts (roles/_ha.py): after each host's own data is valid
    topology = check_topology(groups, data)
    if topology:
        raise InventoryError("\n".join(f"{p}: {problem}" for problem in topology))
    return Inventory(path=str(p), groups=groups, data=data)
