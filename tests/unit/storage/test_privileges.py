"""The storage proxy gives files to the kernel's uid exactly when it holds CAP_CHOWN in its
effective set: as root, or as its own account with the capabilities its service grants."""

from __future__ import annotations

import os

from bai.storage.server import can_chown


def _status(cap_eff: str) -> str:
    return f"Name:\tbai-storage-pro\nUid:\t999\t999\t999\t999\nCapInh:\t{cap_eff}\nCapEff:\t{cap_eff}\n"


def test_the_capabilities_the_installed_service_grants_include_chown() -> None:
    assert can_chown(_status("000000000000000b"))  # chown, dac_override, fowner


def test_without_cap_chown_files_are_not_given_away() -> None:
    assert not can_chown(_status("000000000000000a"))  # dac_override, fowner only
    assert not can_chown(_status("0000000000000000"))


def test_root_holds_it() -> None:
    assert can_chown(_status("000001ffffffffff"))


def test_this_process_reads_its_own_status() -> None:
    # (the tests run as root, whose effective set holds CAP_CHOWN)
    assert can_chown() == (os.geteuid() == 0)
