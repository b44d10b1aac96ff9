"""The role registry: every role the installer knows, in the order it runs.

A role module (``roles/<name>.py``) defines a pyinfra ``@deploy`` function taking ``settings``
and ends with ``ROLE = Role(...)``. :data:`MODULES` lists the modules in run order and
``ROLES`` (a tuple of :class:`Role`) is built from it on first use. Everything else reads from
here: the engine's phases (a host in several groups gets each role once, in this order),
``bai-install status`` (each role's ``services``), the plan output, preflight's port list
(``ports``) and the tests.

Order rule (checked by tests/roles/test_catalog.py): the first group of each role, in
:data:`GROUPS` order, never goes back along :data:`MODULES`. Phases run group by group
(half-stack first), so a role can rely on what an earlier group's roles started.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._service import Service
from .settings import Settings

#: Inventory groups, in phase order. Storage proxies come last: they need only etcd, and one
#: that fails to start does not hold the agents back (sessions without folders still run).
GROUPS = ("halfstack", "manager", "agents", "storage")

#: Role modules under roles/, in run order.
MODULES = (
    "os_prep",
    "base",
    "postgresql",
    "redis",
    "etcd",
    "manager",
    "registry",
    "app_proxy",
    "webserver",
    "nfs",
    "overlay",
    "conntrack",
    "docker",
    "accelerators",
    "kernel_image",
    "agent",
    "storage_proxy",
)


@dataclass(frozen=True)
class PortUse:
    """A port (or a range ``port``..``last``) a role's service listens on (read by preflight:
    is it free, or already ours?)."""

    port: int
    bind: str  # the address it binds ("0.0.0.0" = every address)
    purpose: str  # e.g. "manager API"
    protocol: str = "tcp"
    last: int | None = None  # the range's last port; None: a single port


def _no_services(settings: Settings) -> list[Service]:
    return []


def _no_ports(settings: Settings) -> list[PortUse]:
    return []


def _always(settings: Settings) -> bool:
    return True


@dataclass(frozen=True)
class Role:
    """One host duty.

    Attributes:
        name: the role's name in plans and logs (``postgresql``, ``bai-manager``).
        groups: the inventory groups it runs in (a subset of :data:`GROUPS`).
        deploy: the pyinfra ``@deploy`` function, called with the host's :class:`Settings`.
        services: what it runs (``bai-install status``, health checks, upgrade restarts).
        ports: what it listens on.
        enabled: False leaves the role out on that host (optional roles).
    """

    name: str
    groups: tuple[str, ...]
    deploy: Callable[..., Any]  # the @deploy function; called as deploy(settings)
    services: Callable[[Settings], list[Service]] = field(default=_no_services)
    ports: Callable[[Settings], list[PortUse]] = field(default=_no_ports)
    enabled: Callable[[Settings], bool] = field(default=_always)

    def __post_init__(self) -> None:
        unknown = [g for g in self.groups if g not in GROUPS]
        if unknown or not self.groups:
            raise ValueError(f"role {self.name}: groups {self.groups!r} (known: {GROUPS})")


def host_port(addr: str) -> tuple[str, int]:
    """``"127.0.0.1:8081"`` -> ``("127.0.0.1", 8081)`` (for ``ports`` functions)."""
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def _load() -> tuple[Role, ...]:
    roles = []
    for name in MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        role = getattr(module, "ROLE", None)
        if not isinstance(role, Role):
            raise TypeError(f"roles/{name}.py must end with ROLE = Role(...)")
        roles.append(role)
    return tuple(roles)


_loaded: tuple[Role, ...] | None = None


def __getattr__(name: str) -> tuple[Role, ...]:
    # ROLES is built on first use, not at import: the role modules import Role from here
    global _loaded
    if name == "ROLES":
        if _loaded is None:
            _loaded = _load()
        return _loaded
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def all_roles() -> tuple[Role, ...]:
    """:data:`ROLES` (the same tuple)."""
    roles: tuple[Role, ...] = __getattr__("ROLES")
    return roles


def by_name(name: str) -> Role:
    for role in all_roles():
        if role.name == name:
            return role
    raise KeyError(f"no role named {name!r} (known: {', '.join(r.name for r in all_roles())})")


def for_group(group: str) -> list[Role]:
    return [r for r in all_roles() if group in r.groups]


def of(role: Role | Callable[..., Any]) -> Role:
    """The :class:`Role` of a role or of its ``@deploy`` function."""
    if isinstance(role, Role):
        return role
    for r in all_roles():
        if r.deploy is role:
            return r
    raise KeyError(f"{role!r} is no role's deploy function")


def roles_for_host(groups: dict[str, list[str]], host: str, settings: Settings) -> list[Role]:
    """The enabled roles of ``host`` (in any of its groups), each once, in catalog order."""
    mine = {g for g, hosts in groups.items() if host in hosts}
    return [r for r in all_roles() if mine.intersection(r.groups) and r.enabled(settings)]
