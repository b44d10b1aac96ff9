"""How a host's installed release is known (installer/upgrade/playbook.installed_release): the
install record first, else the installed code's own manifest, else (code from before the
manifest) the database's migration head among the releases that predate the record."""

from __future__ import annotations

from typing import Any

import pytest

from installer.upgrade.playbook import installed_release
from installer.upgrade.releases import parse

M = parse({"release": [
    {"version": "26.11.0", "commit": "a" * 40, "migration-head": "0002", "config-version": 1},
    {"version": "26.12.0", "commit": "b" * 40, "migration-head": "0014d", "config-version": 2},
    {"version": "26.12.1", "config-version": 3},
]}, tree_head="0014d")

CASES: list[tuple[dict[str, Any], str | None, str]] = [
    ({"record": {"version": "26.12.1"}, "code": {"version": "26.12.1"},
      "migration_head": "0014d"}, "26.12.1", "record"),
    ({"record": None, "code": {"version": "26.12.1"}, "migration_head": "0014d"},
     "26.12.1", "the installed code's manifest"),
    ({"record": None, "code": None, "migration_head": "0002"}, "26.11.0",
     "derived from migration head 0002"),
    # 0014d is also the tree's head; code without a manifest predates the record: 26.12.0
    ({"record": None, "code": None, "migration_head": "0014d"}, "26.12.0",
     "derived from migration head 0014d"),
    ({"record": {"version": "26.12.1"}, "code": {"version": "26.12.2"}}, None,
     "unknown: the install record says 26.12.1, the installed code says 26.12.2"),
    ({"record": None, "code": None, "migration_head": "0099"}, None,
     "unknown: no release before the install record has migration head 0099"),
    ({"record": None, "code": None, "migration_head": None, "has_manager_config": False}, None,
     "unknown: no install record, and no manager here to read a schema from"),
    ({"record": None, "code": None, "migration_head": None, "has_manager_config": True,
      "migration_head_error": "connection refused"}, None,
     "unknown: the database did not answer (connection refused)"),
    ({"error": "detect: boom"}, None, "unknown: detect: boom"),
]


@pytest.mark.parametrize(("doc", "version", "how"), CASES)
def test_installed_release(doc: dict[str, Any], version: str | None, how: str) -> None:
    assert installed_release(M, doc) == (version, how)
