"""The manager <-> agent protocol version and its skew rules.

A protocol version is ``MAJOR.MINOR``. Each release that changes what the manager and the agents
say to each other (an RPC method, a request or reply field, a heartbeat field) raises MINOR by one,
and may only *add*: a new method, or new optional fields (a receiver that does not know a field
ignores it, a sender that knows the peer lacks it leaves it out). Anything else (removing or
renaming a method or field, changing a meaning) raises MAJOR and needs a full-stop upgrade.

Two sides are compatible when their MAJORs are equal and their MINORs differ by at most one:
that is the one-patch skew a rolling upgrade goes through (agents at N-1 under a manager at N,
or the other way round). Each side then only uses what the other understands: a method newer than
the peer's MINOR is not called (:data:`METHODS_SINCE`) and fields newer than it are not sent
(:data:`FIELDS_SINCE`).

A sender that names no version is a release from before versioning: :data:`UNVERSIONED` (1.0).
The advertised version can be lowered for tests and upgrade drills with the environment variable
``BAI_PROTOCOL_VERSION`` (``"1.0"``): the process then also behaves as that version (an agent
refuses the methods it would not have had).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

#: The header every RPC request and reply carries (``"1.1"``).
HEADER = "X-BAI-Protocol"
#: The heartbeat field (``agent_heartbeat`` args) with the agent's version.
HEARTBEAT_FIELD = "protocol"
#: Overrides the advertised version (tests, upgrade drills).
ENV_OVERRIDE = "BAI_PROTOCOL_VERSION"

_PATTERN = re.compile(r"^(\d{1,4})\.(\d{1,4})$")


class ProtocolVersion(NamedTuple):
    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    @classmethod
    def parse(cls, text: str) -> ProtocolVersion:
        """``"1.1"`` -> ``ProtocolVersion(1, 1)``; ValueError for anything else."""
        match = _PATTERN.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"not a protocol version (MAJOR.MINOR): {text!r}")
        return cls(int(match[1]), int(match[2]))


#: What this code speaks.
PROTOCOL_VERSION = ProtocolVersion(1, 1)
#: What a peer that sends no version speaks (every release before versioning).
UNVERSIONED = ProtocolVersion(1, 0)

#: RPC methods added after 1.0, with the version that added them.
METHODS_SINCE: dict[str, ProtocolVersion] = {
    "agent_info": ProtocolVersion(1, 1),
    "shutdown_service": ProtocolVersion(1, 1),
    "commit_kernel": ProtocolVersion(1, 1),
    "save_kernel": ProtocolVersion(1, 1),
    "get_commit_status": ProtocolVersion(1, 1),
    "update_scaling_group": ProtocolVersion(1, 1),
    "remove_image": ProtocolVersion(1, 1),
}
#: Request fields added after 1.0 (method -> field -> version), left out for older peers.
#: ``"list[].field"`` names a field of each item of the list ``list``, ``"object.field"`` a field
#: of the object ``object``.
FIELDS_SINCE: dict[str, dict[str, ProtocolVersion]] = {
    "create_kernels": {"configs[].dotfiles": ProtocolVersion(1, 1),
                       "configs[].ssh_keypair": ProtocolVersion(1, 1),
                       "cluster_info.ssh_keypair": ProtocolVersion(1, 1)},
}


def advertised(environ: Mapping[str, str] | None = None) -> ProtocolVersion:
    """The version this process speaks: :data:`PROTOCOL_VERSION` unless ``BAI_PROTOCOL_VERSION``
    lowers (or, for drills, raises) it. A malformed override is an error, not ignored."""
    raw = (os.environ if environ is None else environ).get(ENV_OVERRIDE, "").strip()
    if not raw:
        return PROTOCOL_VERSION
    try:
        return ProtocolVersion.parse(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_OVERRIDE}: {exc}") from None


def peer_version(value: Any) -> ProtocolVersion | None:
    """The version a peer announced (a header or heartbeat field): UNVERSIONED when absent, None
    when unreadable (the caller refuses it as incompatible)."""
    if value is None or value == "":
        return UNVERSIONED
    try:
        return ProtocolVersion.parse(str(value))
    except ValueError:
        return None


def incompatibility(ours: ProtocolVersion, theirs: ProtocolVersion | None) -> str | None:
    """Why a peer speaking ``theirs`` cannot work with us, or None when it can."""
    if theirs is None:
        return "unreadable protocol version"
    if theirs.major != ours.major:
        return (f"protocol {theirs} has another major version than {ours} "
                "(a major upgrade: stop the cluster, upgrade every host)")
    if abs(theirs.minor - ours.minor) > 1:
        side = "older" if theirs.minor < ours.minor else "newer"
        return (f"protocol {theirs} is {abs(theirs.minor - ours.minor)} minor versions {side} than {ours} "
                "(at most one apart: upgrade one release at a time)")
    return None


def supports(peer: ProtocolVersion, method: str) -> bool:
    """Whether a peer speaking ``peer`` has the RPC ``method``."""
    since = METHODS_SINCE.get(method)
    return since is None or peer >= since


def for_peer(method: str, body: dict[str, Any], peer: ProtocolVersion) -> dict[str, Any]:
    """``body`` without the fields the peer's version does not know (the same dict when none)."""
    newer = FIELDS_SINCE.get(method)
    if not newer:
        return body
    result = body
    for name, since in newer.items():
        if peer >= since:
            continue
        outer, nested, inner = name.partition("[].")
        if not nested:
            outer, dotted, inner = name.partition(".")
            if not dotted:
                if name in result:
                    result = {k: v for k, v in result.items() if k != name}
            elif isinstance(obj := result.get(outer), dict) and inner in obj:
                result = {**result, outer: {k: v for k, v in obj.items() if k != inner}}
        elif isinstance(items := result.get(outer), list) and any(
                isinstance(i, dict) and inner in i for i in items):
            result = {**result, outer: [{k: v for k, v in i.items() if k != inner} if isinstance(i, dict) else i
                                        for i in items]}
    return result
