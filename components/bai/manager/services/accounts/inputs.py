"""Checks of mutation inputs, before anything is written: a malformed value raises
InvalidAPIParameters (a GraphQL error), so PostgreSQL never sees a string too long for its column,
a NUL character or a JSON value of the wrong shape."""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from bai.common.types import parse_binary_size, slot_amount_in_range, slots_to_json
from bai.manager import errors

#: Names of domains (the original's are slugs too): letters, digits, ``_``, ``.``, ``-``.
DOMAIN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SLOT_NAME_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")


def given(props: Mapping[str, Any], *names: str) -> dict[str, Any]:
    """The props that were set: as the original, a null means "leave it as it is"."""
    return {n: props[n] for n in names if props.get(n) is not None}


def text(value: Any, what: str, max_len: int, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise errors.InvalidAPIParameters(f"{what} must be a string")
    if "\x00" in value:
        raise errors.InvalidAPIParameters(f"{what} must not contain NUL characters")
    if len(value) > max_len:
        raise errors.InvalidAPIParameters(f"{what} is longer than {max_len} characters")
    if not allow_empty and not value.strip():
        raise errors.InvalidAPIParameters(f"{what} must not be empty")
    return value


def email(value: Any) -> str:
    value = text(value, "email", 64, allow_empty=False)
    if not _EMAIL_RE.match(value):
        raise errors.InvalidAPIParameters(f"not an email address: {value!r}")
    return value


def domain_name(value: Any) -> str:
    value = text(value, "domain name", 64, allow_empty=False)
    if not DOMAIN_NAME_RE.match(value):
        raise errors.InvalidAPIParameters(
            f"invalid domain name {value!r}: letters, digits, '_', '.' and '-', starting with a letter or digit")
    return value


def client_ips(value: Any) -> list[str] | None:
    """An allow list of client addresses: IPv4/IPv6 addresses or CIDR networks, normalised
    (``10.1.2.3/8`` -> ``10.0.0.0/8``). None stays None (any address)."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise errors.InvalidAPIParameters("allowed_client_ip must be a list of addresses or networks")
    out: list[str] = []
    for item in value:
        item = text(item, "allowed_client_ip entry", 64, allow_empty=False).strip()
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)) if "/" in item
                       else str(ipaddress.ip_address(item)))
        except ValueError:
            raise errors.InvalidAPIParameters(f"not an IP address or network: {item!r}") from None
    return out


def uuids(value: Any, what: str) -> list[uuid.UUID]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise errors.InvalidAPIParameters(f"{what} must be a list of UUIDs")
    out: list[uuid.UUID] = []
    for item in value:
        try:
            out.append(item if isinstance(item, uuid.UUID) else uuid.UUID(str(item)))
        except ValueError:
            raise errors.InvalidAPIParameters(f"{what}: not a UUID: {item!r}") from None
    return list(dict.fromkeys(out))


def json_object(value: Any, what: str) -> dict[str, Any]:
    """A JSONString input (already decoded by the scalar, or a string) that must be an object."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise errors.InvalidAPIParameters(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise errors.InvalidAPIParameters(f"{what} must be a JSON object")
    return value


def resource_slots(value: Any, what: str = "total_resource_slots") -> dict[str, str]:
    """A slot limit map (``{"cpu": 4, "mem": "16g"}``) as stored: decimal strings, sizes in
    bytes for memory-like slots."""
    raw = json_object(value, what)
    out: dict[str, Decimal] = {}
    for name, amount in raw.items():
        if not _SLOT_NAME_RE.match(name):
            raise errors.InvalidAPIParameters(f"{what}: invalid slot name {name!r}")
        if isinstance(amount, bool) or not isinstance(amount, (int, float, str)):
            raise errors.InvalidAPIParameters(f"{what}: {name} must be a number or a string")
        try:
            number = (Decimal(parse_binary_size(amount)) if name.endswith("mem")
                      else Decimal(str(amount)))
        except (ValueError, InvalidOperation):
            raise errors.InvalidAPIParameters(f"{what}: invalid amount for {name}: {amount!r}") from None
        if not slot_amount_in_range(number):
            raise errors.InvalidAPIParameters(f"{what}: {name} must be a non-negative number below 10**31")
        out[name] = number
    return slots_to_json(out)


def string_list(value: Any, what: str, max_len: int) -> list[str]:
    if not isinstance(value, list):
        raise errors.InvalidAPIParameters(f"{what} must be a list of strings")
    return [text(v, f"{what} entry", max_len, allow_empty=False) for v in value]


def non_negative_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise errors.InvalidAPIParameters(f"{what} must be a non-negative integer")
    return value
