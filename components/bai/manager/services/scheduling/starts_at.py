"""``starts_at`` of a batch session: an ISO-8601 time, or a duration from now as the original
writes them (``"30s"``, ``"1m"``, ``"1.5h"``, ``"1d2h"``; a bare number is seconds)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(
    r"^(?P<sign>[+-]?)"
    r"(?:(?P<days>\d+(?:\.\d+)?)(?:d|day|days))?"
    r"(?:(?P<hours>\d+(?:\.\d+)?)(?:h|hr|hrs|hour|hours))?"
    r"(?:(?P<minutes>\d+(?:\.\d+)?)(?:m|min|mins|minute|minutes))?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)(?:s|sec|secs|second|seconds)?)?$")
#: Ten years: a later start is a typo, and would overflow nothing but still never run.
MAX_DELAY = timedelta(days=3650)


def parse_starts_at(value: str, now: datetime) -> datetime:
    """The absolute start time; ValueError when ``value`` is neither form."""
    text = value.strip()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        try:
            when = now + _duration(text)
        except OverflowError:
            raise ValueError(f"starts_at out of range: {text!r}") from None
    else:
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)  # no zone given: UTC, as the manager's clock
    if when - now > MAX_DELAY:  # (an aware time's difference cannot overflow)
        raise ValueError("starts_at is more than ten years away")
    return when


def _duration(text: str) -> timedelta:
    m = _DURATION.match(text.replace(" ", ""))
    if not text or m is None or not any(m.group(g) for g in ("days", "hours", "minutes", "seconds")):
        raise ValueError(f"not an ISO-8601 time nor a duration like 30s, 5m, 1h: {text!r}")
    try:
        delta = timedelta(days=float(m.group("days") or 0), hours=float(m.group("hours") or 0),
                          minutes=float(m.group("minutes") or 0), seconds=float(m.group("seconds") or 0))
    except OverflowError:
        raise ValueError(f"duration out of range: {text!r}") from None
    return -delta if m.group("sign") == "-" else delta
