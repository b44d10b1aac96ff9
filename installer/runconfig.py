"""Every choice of the ``bai-install`` wizard, as data: read from ``bai-install.toml``
(``bai-install install --config FILE``), completed by command-line flags, or filled in by the
wizard. Applied to an inventory by :func:`load_inventory`.

.. code-block:: toml

    # bai-install.toml; every key is optional
    inventory = "inventories/multi-node.py"   # or: from_stack = "stack-output.json"
                                              # neither: all-in-one on this machine
    non_interactive = true                    # never ask (also implied without a terminal)
    skip_preflight = false                    # experts only: install even if preflight fails
    log_dir = "/var/log/bai"                  # where install-<timestamp>.log goes

    [settings]                                # overrides for every host, nested as in an inventory
    redis = { maxmemory = "1gb" }

    [hosts."mgr1"]                            # overrides for one host
    manager = { addr = "10.0.0.10:8081" }

    [preflight]                               # thresholds (installer/preflight.py Thresholds)
    max_clock_skew = "5s"
    disk_images = "20g"
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from . import inventory as inventory_mod
from .preflight import Thresholds

#: The largest config file read.
MAX_BYTES = 1024 * 1024


class RunConfigError(ValueError):
    pass


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inventory: str | None = None
    from_stack: str | None = None
    non_interactive: bool = False
    skip_preflight: bool = False
    log_dir: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    hosts: dict[str, dict[str, Any]] = Field(default_factory=dict)
    preflight: Thresholds = Field(default_factory=Thresholds)

    @model_validator(mode="after")
    def _one_source(self) -> RunConfig:
        if self.inventory and self.from_stack:
            raise ValueError("give `inventory` or `from_stack`, not both")
        return self

    @property
    def source(self) -> str:
        """What is installed, in words."""
        if self.from_stack:
            return f"the Pulumi stack output {self.from_stack}"
        if self.inventory:
            return f"the inventory {self.inventory}"
        return "all-in-one on this machine"


def _describe(exc: ValidationError, where: str) -> str:
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "(top)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{where}: {path}: {msg}")
    return "\n".join(lines)


def load(path: str | Path) -> RunConfig:
    """Read and check ``bai-install.toml``; errors name the file and each bad key path."""
    p = Path(path)
    if not p.is_file():
        raise RunConfigError(f"config file {p} not found")
    if p.stat().st_size > MAX_BYTES:
        raise RunConfigError(f"{p}: larger than {MAX_BYTES} bytes; not a bai-install config")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RunConfigError(f"{p}: not TOML ({exc})") from None
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise RunConfigError(_describe(exc, str(p))) from None
    base = p.resolve().parent
    # relative paths in the file are relative to the file, not to where the command runs
    if cfg.inventory and not Path(cfg.inventory).is_absolute():
        cfg.inventory = str(base / cfg.inventory)
    if cfg.from_stack and not Path(cfg.from_stack).is_absolute():
        cfg.from_stack = str(base / cfg.from_stack)
    if cfg.log_dir and not Path(cfg.log_dir).is_absolute():
        cfg.log_dir = str(base / cfg.log_dir)
    return cfg


def parse_set(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``--set redis.maxmemory=1gb --set manager.addr=...`` as nested overrides. A value that
    reads as TOML (``6379``, ``true``, ``[1, 2]``) is that value, else a string."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        path = [k for k in key.strip().split(".") if k]
        if not sep or not path:
            raise RunConfigError(f"--set {item!r}: expected KEY.PATH=VALUE")
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = out
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise RunConfigError(f"--set {item!r}: {part} is already a value")
            node = nxt
        node[path[-1]] = value
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in, section by section (neither is changed)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(inv: inventory_mod.Inventory, cfg: RunConfig) -> inventory_mod.Inventory:
    """``inv`` with the config's settings merged into every host, then its per-host ones.
    A per-host section for a host the inventory lacks is an error (a typo would be ignored)."""
    unknown = sorted(set(cfg.hosts) - set(inv.hosts))
    if unknown:
        raise RunConfigError(f"[hosts] names {', '.join(unknown)}, not in {inv.path} "
                             f"(hosts: {', '.join(inv.hosts)})")
    data = {}
    for host in inv.hosts:
        merged = merge(inv.data.get(host, {}), cfg.settings)
        data[host] = merge(merged, cfg.hosts.get(host, {}))
    return inventory_mod.Inventory(path=inv.path, groups=inv.groups, data=data)


def load_inventory(cfg: RunConfig) -> inventory_mod.Inventory:
    """The inventory ``cfg`` names (all-in-one by default) with its overrides applied. Raises
    :class:`~installer.inventory.InventoryError` or :class:`RunConfigError`."""
    if cfg.from_stack:
        from . import stack_inventory

        inv = stack_inventory.load(cfg.from_stack)
    else:
        inv = inventory_mod.load(cfg.inventory)
    return apply_overrides(inv, cfg)
