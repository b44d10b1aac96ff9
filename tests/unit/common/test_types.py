from decimal import Decimal

import pytest

from bai.common.types import SESSION_NAME_RE, parse_binary_size, slots_to_json


@pytest.mark.parametrize(("raw", "expected"), [
    ("4g", 4 * 2**30), ("256m", 256 * 2**20), ("1.5k", 1536), ("64", 64), (1024, 1024), ("2GiB", 2 * 2**30),
])
def test_binary_sizes(raw: str | int, expected: int) -> None:
    assert parse_binary_size(raw) == expected


@pytest.mark.parametrize("raw", ["", "g", "4x", "-1g", "1 2"])
def test_bad_sizes(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_binary_size(raw)


def test_slots_wire_format() -> None:
    assert slots_to_json({"cpu": Decimal("1.50"), "mem": Decimal(268435456)}) == {"cpu": "1.5", "mem": "268435456"}


@pytest.mark.parametrize(("name", "ok"), [
    ("anchor-s1", True), ("abc", False), ("a" * 65, False), ("-bad", False), ("good.name_1", True), ("한글이름", False),
])
def test_session_names(name: str, ok: bool) -> None:
    assert bool(SESSION_NAME_RE.match(name)) is ok
