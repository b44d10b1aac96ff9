"""Inventories: Python files that define the groups ``halfstack``, ``manager``, ``agents`` and
``storage`` as lists of hosts (pyinfra style: ``"@local"``, ``"10.0.0.5"`` or ``("10.0.0.5", {data})``).

Every inventory uses the same group names, so roles never branch on all-in-one vs multi-node.
"""

from __future__ import annotations

import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: In phase order. Storage proxies come last: they need only etcd, and one that fails to start
#: does not hold the agents back (sessions without folders still run).
GROUPS = ("halfstack", "manager", "agents", "storage")
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
            merged = data.setdefault(name, dict(shared))
            merged.update(host_data)
        groups[group] = names
    if not any(groups.values()):
        raise InventoryError(f"{p}: defines none of the groups {', '.join(GROUPS)}")
    return Inventory(path=str(p), groups=groups, data=data)
