"""Value types shared by every component: statuses, resource slots, binary sizes."""

from __future__ import annotations

import enum
import re
from decimal import Decimal


class SessionStatus(enum.StrEnum):
    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    PULLING = "PULLING"
    PREPARING = "PREPARING"
    RUNNING = "RUNNING"
    RESTARTING = "RESTARTING"
    RUNNING_DEGRADED = "RUNNING_DEGRADED"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"


class KernelStatus(enum.StrEnum):
    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    PREPARING = "PREPARING"
    BUILDING = "BUILDING"
    PULLING = "PULLING"
    RUNNING = "RUNNING"
    RESTARTING = "RESTARTING"
    RESIZING = "RESIZING"
    SUSPENDED = "SUSPENDED"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"


DEAD_SESSION_STATUSES = frozenset({SessionStatus.TERMINATED, SessionStatus.CANCELLED})
#: Statuses whose kernels hold agent resources.
RESOURCE_OCCUPYING_SESSION_STATUSES = frozenset(set(SessionStatus) - {
    SessionStatus.PENDING, SessionStatus.TERMINATED, SessionStatus.CANCELLED,
})


class SessionTypes(enum.StrEnum):
    INTERACTIVE = "interactive"
    BATCH = "batch"
    INFERENCE = "inference"
    SYSTEM = "system"


SESSION_NAME_RE = re.compile(r"^(?=.{4,64}$)\w[\w.-]*\w$", re.ASCII)

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtpe]?)(i?b?)?\s*$", re.IGNORECASE)
_SIZE_MULT = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50, "e": 2**60}


def parse_binary_size(value: str | int | float | Decimal) -> int:
    """``"4g"`` -> 4294967296. Suffixes are binary (k = 1024), as in the original."""
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return int(value)
    m = _SIZE_RE.match(str(value))
    if not m:
        raise ValueError(f"invalid size: {value!r}")
    number, unit = Decimal(m.group(1)), m.group(2).lower()
    return int(number * _SIZE_MULT[unit])


#: Slot name -> type. Intrinsic slots only; compute plugins add theirs at run time.
INTRINSIC_SLOTS: dict[str, str] = {"cpu": "count", "mem": "bytes"}

ResourceSlots = dict[str, Decimal]

#: No slot amount is 10**31 or more (not even bytes): larger ones are refused where they come in,
#: never computed with (``int(Decimal("1e999999999"))`` would build a billion-digit number).
MAX_SLOT_AMOUNT_EXPONENT = 30


def slot_amount_in_range(amount: Decimal) -> bool:
    """Finite, non-negative and below 10**31."""
    return amount.is_finite() and amount >= 0 and (amount == 0 or amount.adjusted() <= MAX_SLOT_AMOUNT_EXPONENT)


def normalize_slots(raw: dict[str, object], slot_types: dict[str, str]) -> ResourceSlots:
    """Turn request values (``"1"``, ``2``, ``"512m"``) into Decimals; raises KeyError/ValueError."""
    out: ResourceSlots = {}
    for key, value in raw.items():
        kind = slot_types[key]
        if kind == "bytes":
            out[key] = Decimal(parse_binary_size(value))  # type: ignore[arg-type]
        else:
            out[key] = Decimal(str(value))
    return out


def slots_to_json(slots: ResourceSlots) -> dict[str, str]:
    """Decimals go on the wire as strings, as the original does."""
    return {k: (str(int(v)) if v == v.to_integral_value() else str(v.normalize())) for k, v in slots.items()}


def slots_from_json(raw: dict[str, str] | None) -> ResourceSlots:
    return {k: Decimal(str(v)) for k, v in (raw or {}).items()}
