"""An inventory from a Pulumi stack's outputs: ``bai-install install --from-stack OUTPUT.json``.

``OUTPUT.json`` is what ``pulumi stack output --json --show-secrets`` prints for the ``stack/``
program: an object whose ``inventory`` member has the shape of ``inventories/multi-node.py`` in
JSON (``format``, the shared ``data``, and the groups ``halfstack``, ``manager``, ``agents``,
``storage`` as lists of ``[name, {host data}]``). The other outputs (``endpoint``, ``secrets``
...) are allowed and ignored: the hosts already hold the stack's passwords in their secrets file.

Everything is checked before any host is contacted: the format, host names, that every host-data
key is a ``roles.settings.Settings`` field or a pyinfra ``ssh_*`` key with a value of the right
type, that each group has what its role needs (a manager's ``manager_addr``, an agent's
``agent_rpc_addr`` ...), and that no host address is the whole world. Errors name the file, the
host and the key.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from roles.settings import Settings

from .inventory import GROUPS, Inventory, InventoryError

FORMAT = "bai-inventory/1"
#: Largest OUTPUT.json read (a 256-agent stack's output is ~150 KiB).
MAX_BYTES = 8 * 1024 * 1024
HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
#: pyinfra connector targets (tests point a stack's inventory at container hosts with these);
#: they need no ssh_hostname
CONNECTOR_NAME = re.compile(r"^@(local|docker/[A-Za-z0-9][A-Za-z0-9_.-]{0,127})$")
#: pyinfra's SSH connector keys an inventory may set (pyinfra/connectors/ssh.py ConnectorData)
SSH_KEYS = {"ssh_hostname": str, "ssh_port": int, "ssh_user": str, "ssh_key": str,
            "ssh_known_hosts_file": str, "ssh_strict_host_key_checking": str,
            "ssh_config_file": str, "ssh_connect_retries": int}
#: What each group's role reads from a remote host's data (defaults are loopback, all-in-one).
REQUIRED = {
    "manager": ("manager_id", "manager_addr"),
    "agents": ("agent_id", "agent_rpc_addr", "container_bind_host"),
    "storage": ("storage_node_id", "storage_client_addr", "storage_manager_addr"),
    "halfstack": ("etcd_listen",),
}
SECRET_KEYS = ("db_password", "redis_password", "rpc_secret", "storage_secret",
               "storage_manager_secret")


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str
    data: dict[str, Any] = Field(default_factory=dict)
    halfstack: list[tuple[str, dict[str, Any]]]
    manager: list[tuple[str, dict[str, Any]]]
    agents: list[tuple[str, dict[str, Any]]]
    storage: list[tuple[str, dict[str, Any]]]


def _check_data(where: str, data: dict[str, Any]) -> list[str]:
    problems = []
    settings_fields = set(Settings.model_fields)
    for key, value in data.items():
        if key in SECRET_KEYS:
            problems.append(f"{where}: {key} does not belong in an inventory (secrets live in "
                            "the hosts' secrets file)")
        elif key in SSH_KEYS:
            if not isinstance(value, SSH_KEYS[key]) or isinstance(value, bool):
                problems.append(f"{where}: {key} must be a {SSH_KEYS[key].__name__}")
        elif key not in settings_fields:
            problems.append(f"{where}: unknown host data key {key!r}")
    return problems


def _check_address(where: str, key: str, value: Any) -> list[str]:
    """``host`` or ``host:port`` values must name one host, never 0.0.0.0 or ::."""
    if not isinstance(value, str) or not value:
        return []
    host = value.rsplit(":", 1)[0] if key.endswith("_addr") else value
    try:
        if ipaddress.ip_address(host.strip("[]")).is_unspecified:
            return [f"{where}: {key} {value!r} is every address, not a host"]
    except ValueError:
        pass
    return []


def from_outputs(outputs: Any, source: str) -> Inventory:
    """The :class:`Inventory` of a parsed ``pulumi stack output --json`` object."""
    if not isinstance(outputs, dict) or "inventory" not in outputs:
        raise InventoryError(f"{source}: no `inventory` output; give the JSON of `pulumi stack "
                             "output --json --show-secrets` for bai's stack/")
    raw = outputs["inventory"]
    if raw == "[secret]" or not isinstance(raw, dict):
        raise InventoryError(f"{source}: the `inventory` output is not an object "
                             f"({type(raw).__name__})")
    if raw.get("format") != FORMAT:
        raise InventoryError(f"{source}: inventory format {raw.get('format')!r}, expected {FORMAT!r}")
    try:
        doc = _Document.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InventoryError(f"{source}: inventory.{where}: {first['msg']} "
                             f"({exc.error_count()} problem(s))") from None

    problems = [f"{source}: {p}" for p in _check_data("data", doc.data)]
    groups: dict[str, list[str]] = {}
    data: dict[str, dict[str, Any]] = {}
    for group in GROUPS:
        entries: list[tuple[str, dict[str, Any]]] = getattr(doc, group)
        if not entries:
            problems.append(f"{source}: group {group} is empty")
        names = []
        for name, host_data in entries:
            where = f"{source}: {group} host {name!r}"
            if not (HOST_NAME.match(name) or CONNECTOR_NAME.match(name)):
                problems.append(f"{where}: not a valid host name")
                continue
            problems += _check_data(where, host_data)
            merged = data.setdefault(name, dict(doc.data))
            merged.update(host_data)
            names.append(name)
        groups[group] = names
    for group, names in groups.items():
        for name in names:
            where = f"{source}: {group} host {name!r}"
            host_data = data[name]
            if not name.startswith("@") and not host_data.get("ssh_hostname"):
                problems.append(f"{where}: ssh_hostname missing")
            for key in REQUIRED[group]:
                if not host_data.get(key):
                    problems.append(f"{where}: {key} missing")
            for key, value in host_data.items():
                problems += _check_address(where, key, value)
    if not problems:
        for name, host_data in data.items():
            fields = {k: v for k, v in host_data.items() if k in Settings.model_fields}
            try:
                Settings(**fields)
            except ValidationError as exc:
                first = exc.errors()[0]
                problems.append(f"{source}: host {name!r}: {first['loc'][0]}: {first['msg']}")
    if problems:
        raise InventoryError("\n".join(problems))
    return Inventory(path=source, groups=groups, data=data)


def load(path: str | Path) -> Inventory:
    """Read and check ``path``; raise :class:`InventoryError` with every problem found."""
    p = Path(path)
    if not p.is_file():
        raise InventoryError(f"stack output {p} not found")
    if p.stat().st_size > MAX_BYTES:
        raise InventoryError(f"{p}: larger than {MAX_BYTES} bytes; not a stack output")
    try:
        outputs = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InventoryError(f"{p}: not JSON ({exc})") from None
    return from_outputs(outputs, str(p))
