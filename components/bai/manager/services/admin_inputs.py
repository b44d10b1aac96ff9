"""Checks and normalisation of what superadmins write through GraphQL mutations: names, slot
maps, binary sizes, bounded integers and JSON objects. Every failure raises
InvalidAPIParameters naming the field, before anything is written."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from bai.common.types import INTRINSIC_SLOTS, slot_amount_in_range, slots_to_json
from bai.manager import errors

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtpe]?)(?:i?b(?:ytes?)?)?\s*$", re.IGNORECASE)
_SIZE_MULT = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50, "e": 2**60}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


SUCCESS = "success"


def bad(field: str, why: str) -> errors.InvalidAPIParameters:
    return errors.InvalidAPIParameters(f"{field}: {why}")


def name(value: str, field: str = "name", max_length: int = 256) -> str:
    if not value or value != value.strip() or len(value) > max_length or _CONTROL.search(value):
        raise bad(field, f"must be 1-{max_length} characters without control characters or surrounding spaces")
    return value


def slot_type(slot: str) -> str:
    """``count`` or ``bytes``: intrinsic slots have theirs; device memory (``cuda.mem``) is bytes."""
    return INTRINSIC_SLOTS.get(slot) or ("bytes" if slot.endswith(".mem") else "count")


def binary_size(value: Any, field: str) -> int:
    """``4g`` / ``"512MiB"`` / ``1073741824`` -> bytes (binary suffixes, as the original);
    fractional bytes and negative sizes are refused."""
    if isinstance(value, bool):
        raise bad(field, "must be a size such as 4294967296 or \"4g\"")
    if isinstance(value, int):
        number, mult = Decimal(value), 1
    else:
        m = _SIZE_RE.match(str(value))
        if not m:
            raise bad(field, f"{value!r} is not a size such as 4294967296 or \"4g\"")
        number, mult = Decimal(m.group(1)), _SIZE_MULT[m.group(2).lower()]
    size = number * mult
    if size < 0 or size != size.to_integral_value():
        raise bad(field, f"{value!r} is not a whole, non-negative number of bytes")
    return int(size)


def slots(value: Any, known: Collection[str], field: str) -> dict[str, str]:
    """A slot map (``{"cpu": "2", "mem": "4g"}``) normalised to the wire's decimal strings
    (``{"cpu": "2", "mem": "4294967296"}``); names must be slots the manager knows."""
    if not isinstance(value, Mapping):
        raise bad(field, "must be a JSON object of slot name -> amount")
    out: dict[str, Decimal] = {}
    for slot, amount in value.items():
        if slot not in known:
            raise bad(field, f"unknown resource slot {slot!r} (known: {', '.join(sorted(known))})")
        if slot_type(slot) == "bytes":
            out[slot] = Decimal(binary_size(amount, f"{field}.{slot}"))
            continue
        if isinstance(amount, bool) or not isinstance(amount, (str, int, float)):
            raise bad(f"{field}.{slot}", "must be a decimal number")
        try:
            number = Decimal(str(amount).strip())
        except InvalidOperation:
            raise bad(f"{field}.{slot}", f"{amount!r} is not a decimal number") from None
        if not slot_amount_in_range(number):
            raise bad(f"{field}.{slot}", f"{amount!r} is not a finite, non-negative number below 10**31")
        out[slot] = number
    return slots_to_json(out)


def integer(value: Any, field: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(field, "must be an integer")
    if minimum is not None and value < minimum:
        raise bad(field, f"must be at least {minimum}")
    return value


def json_object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise bad(field, "must be a JSON object")
    return dict(value)


def text(value: Any, field: str, max_length: int, *, nullable: bool = True) -> str | None:
    if value is None and nullable:
        return None
    if not isinstance(value, str) or len(value) > max_length or "\x00" in value:
        raise bad(field, f"must be a string of at most {max_length} characters")
    return value


def one_of(value: Any, field: str, allowed: Collection[str]) -> str:
    if value not in allowed:
        raise bad(field, f"must be one of {', '.join(sorted(allowed))}")
    return str(value)


def not_null(props: Mapping[str, Any], fields: Collection[str]) -> None:
    """Fields that may be omitted but, when given, not be null."""
    for field in fields:
        if field in props and props[field] is None:
            raise bad(field, "must not be null")
