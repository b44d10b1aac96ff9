"""Dependency-free helpers shared by the SDK (:mod:`bai.client.session`) and the CLI."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

__all__ = (
    "ACTIVE_STATUSES",
    "RUNNING_STATUSES",
    "DEAD_STATUSES",
    "ALL_STATUSES",
    "generate_session_name",
    "parse_resources",
    "parse_env",
)

#: the status filters of the official ``backend.ai ps`` (default, --running, --dead, --all)
ACTIVE_STATUSES = "PENDING,SCHEDULED,PULLING,PREPARING,RUNNING,RUNNING_DEGRADED,TERMINATING,ERROR"
RUNNING_STATUSES = "PREPARING,RUNNING,RUNNING_DEGRADED"
DEAD_STATUSES = "CANCELLED,TERMINATED"
ALL_STATUSES = (
    "PENDING,SCHEDULED,PULLING,PREPARING,RUNNING,RESTARTING,RUNNING_DEGRADED,"
    "TERMINATING,TERMINATED,ERROR,CANCELLED"
)


def generate_session_name() -> str:
    """A random session name like the official ``run`` uses (``pysdk-`` + 10 hex digits)."""
    return f"pysdk-{secrets.token_hex(5)}"


def parse_resources(items: Sequence[str]) -> dict[str, str]:
    """``["cpu=2", "mem=512"]`` -> ``{"cpu": "2", "mem": "512m"}`` (``mem`` without unit = MiB)."""
    parsed: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        k = k.strip()
        if not sep or not k:
            raise ValueError(f"{item!r} is not a KEY=VALUE expression")
        parsed[k] = v.strip()
    mem = parsed.get("mem")
    if mem is not None and mem and not mem[-1].isalpha():
        parsed["mem"] = f"{mem}m"
    return parsed


def parse_env(items: Sequence[str]) -> dict[str, str]:
    """``["A=1", "B=x=y"]`` -> ``{"A": "1", "B": "x=y"}``."""
    envs: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise ValueError(f"{item!r} is not a KEY=VALUE expression")
        envs[k] = v
    return envs
