"""The checks of what superadmins write (services/admin_inputs.py): slot maps normalised to the
wire's decimal strings, binary sizes as the original parses them, names, and clear refusals."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from bai.common.types import slot_amount_in_range
from bai.manager import errors
from bai.manager.services import admin_inputs as check

KNOWN = {"cpu", "mem", "cuda.device", "cuda.mem"}


@pytest.mark.parametrize(("raw", "wire"), [
    ({"cpu": 2, "mem": "4g"}, {"cpu": "2", "mem": "4294967296"}),
    ({"cpu": "0.50", "mem": "512MiB"}, {"cpu": "0.5", "mem": "536870912"}),
    ({"cpu": 1.25, "mem": 1073741824}, {"cpu": "1.25", "mem": "1073741824"}),
    ({"mem": "1.5k", "cuda.mem": "2gb"}, {"mem": "1536", "cuda.mem": "2147483648"}),
    ({"cuda.device": "1", "cpu": "0"}, {"cuda.device": "1", "cpu": "0"}),
    ({}, {}),
])
def test_slots_are_normalised(raw: dict[str, object], wire: dict[str, str]) -> None:
    assert check.slots(raw, KNOWN, "resource_slots") == wire


@pytest.mark.parametrize(("raw", "needle"), [
    ({"gpu": 1}, "unknown resource slot 'gpu'"),
    ({"cpu": -1}, "resource_slots.cpu"),
    ({"cpu": "Infinity"}, "resource_slots.cpu"),
    ({"cpu": "NaN"}, "resource_slots.cpu"),
    ({"cpu": True}, "resource_slots.cpu"),
    ({"cpu": None}, "resource_slots.cpu"),
    ({"mem": "0.5"}, "whole, non-negative number of bytes"),
    ({"mem": "4x"}, "resource_slots.mem"),
    ({"mem": False}, "resource_slots.mem"),
    (["cpu"], "JSON object"),
])
def test_bad_slots_are_refused(raw: object, needle: str) -> None:
    with pytest.raises(errors.InvalidAPIParameters) as exc:
        check.slots(raw, KNOWN, "resource_slots")
    assert needle in str(exc.value)


@pytest.mark.parametrize(("value", "size"), [
    ("64m", 64 * 2**20), ("1G", 2**30), ("2 GiB", 2 * 2**30), ("100", 100), (4096, 4096), ("1t", 2**40),
    ("3bytes", 3),
])
def test_binary_sizes(value: object, size: int) -> None:
    assert check.binary_size(value, "shared_memory") == size


@pytest.mark.parametrize("value", ["-1", "1.2", "lots", "", True, "1q"])
def test_bad_binary_sizes(value: object) -> None:
    with pytest.raises(errors.InvalidAPIParameters, match="shared_memory"):
        check.binary_size(value, "shared_memory")


@pytest.mark.parametrize("value", ["", " lead", "trail ", "a\x00b", "tab\there", "x" * 257])
def test_bad_names(value: str) -> None:
    with pytest.raises(errors.InvalidAPIParameters, match="^name:"):
        check.name(value)


def test_names_and_other_fields() -> None:
    assert check.name("gpu-small.v2 (team A)") == "gpu-small.v2 (team A)"
    assert check.integer(0, "max_vfolder_count", minimum=0) == 0
    for bad in (True, 1.5, "3"):
        with pytest.raises(errors.InvalidAPIParameters, match="must be an integer"):
            check.integer(bad, "n")
    with pytest.raises(errors.InvalidAPIParameters, match="must be at least 1"):
        check.integer(0, "max_containers_per_session", minimum=1)
    with pytest.raises(errors.InvalidAPIParameters, match="must not be null"):
        check.not_null({"idle_timeout": None}, ("idle_timeout",))
    assert check.slot_type("cuda.mem") == "bytes" and check.slot_type("cuda.shares") == "count"


@pytest.mark.parametrize("amount", ["1e999999999", "1E+31", "Infinity", "NaN", "-1", "-0.5"])
def test_slot_amounts_out_of_range_are_refused_at_once(amount: str) -> None:
    # int(Decimal("1e999999999")) would build a billion-digit number on the event loop
    from bai.manager.services.accounts.inputs import resource_slots

    started = time.monotonic()
    with pytest.raises(errors.InvalidAPIParameters, match="cpu"):
        check.slots({"cpu": amount}, {"cpu", "mem"}, "resource_slots")
    with pytest.raises(errors.InvalidAPIParameters, match="cpu"):
        resource_slots({"cpu": amount})
    assert time.monotonic() - started < 1


def test_slot_amounts_up_to_the_bound_are_kept() -> None:
    assert slot_amount_in_range(Decimal("1e30")) and slot_amount_in_range(Decimal(0))
    assert not slot_amount_in_range(Decimal("1e31"))
    assert check.slots({"cpu": "1e3"}, {"cpu"}, "resource_slots") == {"cpu": "1000"}
