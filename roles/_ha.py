"""The HA half-stack across hosts: what one host's settings cannot tell on their own.

One half-stack host runs a single etcd, Redis and PostgreSQL (the default). Several half-stack
hosts make the HA half-stack, described by keys that are the same on every host (put them in
the inventory's shared ``data``) next to each host's own ``listen`` addresses:

* ``etcd.members``: every half-stack host's ``etcd.listen`` (3 or 5);
* ``redis.sentinel``: every half-stack host's ``redis.listen``:``redis.sentinel_port``, and
  ``redis.primary``: the first primary's ``redis.listen``:``redis.port``;
* ``postgresql.primary`` and ``postgresql.replicas``: half-stack hosts' ``postgresql.listen``
  (a half-stack host with ``postgresql.enabled = false`` runs no PostgreSQL).

:func:`check_topology` is called when an inventory loads (installer/inventory.py), after every
host's own data validated, and names the host and the key of each contradiction before anything
runs.
"""

from __future__ import annotations

from typing import Any

from .settings import Settings, build

__all__ = ["check_topology", "etcd_member_name"]


def etcd_member_name(address: str) -> str:
    """A member's name, made from its address (stable: it never depends on the list's order)."""
    return "etcd-" + "".join(c if c.isalnum() else "-" for c in address)


def _loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("localhost", "::1", "0.0.0.0", "::", "")


def check_topology(groups: dict[str, list[str]], data: dict[str, dict[str, Any]]) -> list[str]:
    """Every contradiction of the half-stack's HA keys across hosts, as ``"host NAME: key:
    problem"`` (empty when there is none). ``data`` must already be valid per host."""
    settings = {name: build(host_data, {}) for name, host_data in data.items()}
    halfstack = list(dict.fromkeys(groups.get("halfstack", [])))
    problems: list[str] = []
    problems += _same_everywhere(settings, halfstack)
    if not halfstack:
        return problems
    first = settings[halfstack[0]]
    if len(halfstack) > 1:
        for key, on in (("etcd.members", bool(first.etcd.members)),
                        ("redis.sentinel", bool(first.redis.sentinel)),
                        ("postgresql.primary", bool(first.postgresql.primary))):
            if not on:
                problems.append(f"host {halfstack[0]!r}: {key}: {len(halfstack)} half-stack hosts "
                                f"need the HA settings (each would run its own unrelated server); "
                                f"see inventories/ha.py")
    problems += _etcd(settings, halfstack)
    problems += _redis(settings, halfstack)
    problems += _postgresql(settings, halfstack)
    return problems


#: The keys that describe the whole half-stack: every host must hold the same value.
SHARED_KEYS = (("etcd", "members"), ("redis", "sentinel"), ("redis", "primary"),
               ("redis", "service_name"), ("postgresql", "primary"), ("postgresql", "replicas"))


def _same_everywhere(settings: dict[str, Settings], halfstack: list[str]) -> list[str]:
    problems: list[str] = []
    names = list(settings)
    if not names:
        return problems
    ref = halfstack[0] if halfstack else names[0]
    for section, key in SHARED_KEYS:
        want = getattr(getattr(settings[ref], section), key)
        for name in names:
            have = getattr(getattr(settings[name], section), key)
            if have != want:
                problems.append(f"host {name!r}: {section}.{key}: {have!r} differs from host "
                                f"{ref!r}'s {want!r} (put it in the inventory's shared data)")
    return problems


def _etcd(settings: dict[str, Settings], halfstack: list[str]) -> list[str]:
    members = settings[halfstack[0]].etcd.members
    if not members:
        return []
    problems = []
    listens = {settings[h].etcd.listen: h for h in halfstack}
    for h in halfstack:
        listen = settings[h].etcd.listen
        if listen not in members:
            problems.append(f"host {h!r}: etcd.listen: {listen} is not one of etcd.members "
                            f"({', '.join(members)})")
        elif _loopback(listen):
            problems.append(f"host {h!r}: etcd.listen: a cluster member needs an address the "
                            f"other members reach, not {listen}")
    for m in members:
        if m not in listens:
            problems.append(f"host {halfstack[0]!r}: etcd.members: {m} is no half-stack host's "
                            "etcd.listen")
    return problems


def _redis(settings: dict[str, Settings], halfstack: list[str]) -> list[str]:
    r0 = settings[halfstack[0]].redis
    if not r0.sentinel:
        return []
    problems = []
    servers = {f"{settings[h].redis.listen}:{settings[h].redis.port}" for h in halfstack}
    own = set()
    for h in halfstack:
        r = settings[h].redis
        mine = f"{r.listen}:{r.sentinel_port}"
        own.add(mine)
        if mine not in r.sentinel:
            problems.append(f"host {h!r}: redis.sentinel: this host's Sentinel {mine} "
                            f"(redis.listen:redis.sentinel_port) is not listed")
        if _loopback(r.listen):
            problems.append(f"host {h!r}: redis.listen: replicas and sentinels need an address "
                            f"the other hosts reach, not {r.listen}")
    for s in r0.sentinel:
        if s not in own:
            problems.append(f"host {halfstack[0]!r}: redis.sentinel: {s} is no half-stack host's "
                            "Sentinel (redis.listen:redis.sentinel_port)")
    if r0.primary not in servers:
        problems.append(f"host {halfstack[0]!r}: redis.primary: {r0.primary} is no half-stack "
                        f"host's redis.listen:redis.port ({', '.join(sorted(servers))})")
    return problems


def _postgresql(settings: dict[str, Settings], halfstack: list[str]) -> list[str]:
    p0 = settings[halfstack[0]].postgresql
    if not p0.primary:
        return []
    problems = []
    listens = {settings[h].postgresql.listen: h for h in halfstack if settings[h].postgresql.enabled}
    for address in (p0.primary, *p0.replicas):
        if address not in listens:
            key = "postgresql.primary" if address == p0.primary else "postgresql.replicas"
            problems.append(f"host {halfstack[0]!r}: {key}: {address} is no half-stack host's "
                            "postgresql.listen")
    for h in halfstack:
        listen = settings[h].postgresql.listen
        if not settings[h].postgresql.enabled:
            continue  # runs no PostgreSQL
        if listen != p0.primary and listen not in p0.replicas:
            problems.append(f"host {h!r}: postgresql.listen: {listen} is neither "
                            "postgresql.primary nor one of postgresql.replicas (a half-stack "
                            "host without PostgreSQL says postgresql.enabled = false)")
        elif _loopback(listen):
            problems.append(f"host {h!r}: postgresql.listen: replication needs an address the "
                            f"other hosts reach, not {listen}")
    return problems
