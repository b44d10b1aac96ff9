"""An inventory from a Pulumi stack's outputs: ``bai-install install --from-stack OUTPUT.json``.

``OUTPUT.json`` is what ``pulumi stack output --json --show-secrets`` prints for the ``stack/``
program: an object whose ``inventory`` member has the shape of ``inventories/multi-node.py`` in
JSON (``format``, the shared ``data``, and the groups ``halfstack``, ``manager``, ``agents``,
``storage`` as lists of ``[name, {host data}]``). The other outputs (``endpoint``, ``secrets``
...) are allowed and ignored: the hosts already hold the stack's passwords in their secrets file.

Formats: ``bai-inventory/2`` carries host data nested like the settings
(``{"manager": {"addr": "10.0.0.10:8081"}}``); ``bai-inventory/1`` (what ``stack/`` emitted before
settings were nested) carries the old flat keys (``manager_addr``), translated here with
``roles.settings.RENAMED``.

Everything is checked before any host is contacted: the format, host names, that every host-data
key is a settings key path (or a pyinfra ``ssh_*`` key) with a value of the right type, that each
group has what its role needs (a manager's ``manager.addr``, an agent's ``agent.rpc_addr`` ...),
and that no host address is the whole world. Errors name the file, the host and the key path.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from roles.settings import RENAMED, SECRETS, check_host_data

from .inventory import GROUPS, Inventory, InventoryError, merge

FORMAT = "bai-inventory/2"
#: The flat-key format, still read.
FLAT_FORMAT = "bai-inventory/1"
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
    "manager": ("manager.id", "manager.addr"),
    "agents": ("agent.id", "agent.rpc_addr", "agent.container_bind_host"),
    "storage": ("storage_proxy.node_id", "storage_proxy.client_addr", "storage_proxy.manager_addr"),
    "halfstack": ("etcd.listen",),
}


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str
    data: dict[str, Any] = Field(default_factory=dict)
    halfstack: list[tuple[str, dict[str, Any]]]
    manager: list[tuple[str, dict[str, Any]]]
    agents: list[tuple[str, dict[str, Any]]]
    storage: list[tuple[str, dict[str, Any]]]


def unflatten(where: str, data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Flat ``bai-inventory/1`` host data -> nested host data, and the keys it cannot place."""
    out: dict[str, Any] = {}
    problems = []
    for key, value in data.items():
        if key in RENAMED:
            section, name = RENAMED[key].split(".", 1)
            out.setdefault(section, {})[name] = value
        elif key in SSH_KEYS or key in SECRETS:
            out[key] = value  # (a secret is refused by _check_data, with its reason)
        else:
            problems.append(f"{where}: unknown host data key {key!r}")
    return out, problems


def _check_data(where: str, data: dict[str, Any]) -> list[str]:
    problems = []
    for key, value in data.items():
        if key in SSH_KEYS and (not isinstance(value, SSH_KEYS[key]) or isinstance(value, bool)):
            problems.append(f"{where}: {key} must be a {SSH_KEYS[key].__name__}")
        elif key.startswith("ssh_") and key not in SSH_KEYS:
            problems.append(f"{where}: unknown host data key {key!r}")
    ours = {k: v for k, v in data.items() if not k.startswith("ssh_")}
    problems += [f"{where}: {p}" for p in check_host_data(ours)]
    return problems


def _get(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _leaves(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out += _leaves(value, f"{path}.")
        else:
            out.append((path, value))
    return out


def _check_address(where: str, key: str, value: Any) -> list[str]:
    """``host`` or ``host:port`` values must name one host, never 0.0.0.0 or ::."""
    if not isinstance(value, str) or not value:
        return []
    host = value.rsplit(":", 1)[0] if key.endswith("addr") else value
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
    if raw.get("format") not in (FORMAT, FLAT_FORMAT):
        raise InventoryError(f"{source}: inventory format {raw.get('format')!r}, expected {FORMAT!r} "
                             f"(or {FLAT_FORMAT!r})")
    try:
        doc = _Document.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InventoryError(f"{source}: inventory.{where}: {first['msg']} "
                             f"({exc.error_count()} problem(s))") from None

    problems: list[str] = []
    flat = doc.format == FLAT_FORMAT

    def nested(where: str, data: dict[str, Any]) -> dict[str, Any]:
        if not flat:
            return data
        out, unknown = unflatten(where, data)
        problems.extend(unknown)
        return out

    shared = nested(f"{source}: data", doc.data)
    problems += _check_data(f"{source}: data", shared)
    groups: dict[str, list[str]] = {}
    data: dict[str, dict[str, Any]] = {}
    for group in GROUPS:
        entries: list[tuple[str, dict[str, Any]]] = getattr(doc, group)
        if not entries:
            problems.append(f"{source}: group {group} is empty")
        names = []
        for name, raw_data in entries:
            where = f"{source}: {group} host {name!r}"
            if not (HOST_NAME.match(name) or CONNECTOR_NAME.match(name)):
                problems.append(f"{where}: not a valid host name")
                continue
            host_data = nested(where, raw_data)
            problems += _check_data(where, host_data)
            data[name] = merge(data.get(name, shared), host_data)
            names.append(name)
        groups[group] = names
    for group, names in groups.items():
        for name in names:
            where = f"{source}: {group} host {name!r}"
            host_data = data[name]
            if not name.startswith("@") and not host_data.get("ssh_hostname"):
                problems.append(f"{where}: ssh_hostname missing")
            for path in REQUIRED[group]:
                if not _get(host_data, path):
                    problems.append(f"{where}: {path} missing")
            for path, value in _leaves(host_data):
                problems += _check_address(where, path, value)
    if problems:
        raise InventoryError("\n".join(dict.fromkeys(problems)))
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
