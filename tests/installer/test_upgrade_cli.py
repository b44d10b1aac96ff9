"""``bai-install upgrade --check`` and the refusals of ``upgrade`` / ``rollback`` against the
installed all-in-one node (read-only: facts through the engine on @local), as an operator runs
them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from installer.upgrade.releases import load

BAI_INSTALL = "/opt/bai/venv/bin/bai-install"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BAI_INSTALL, *args], capture_output=True, text=True, timeout=120)


def test_check_on_the_installed_node() -> None:
    tree = str(load().current.version)
    r = _run("upgrade", "--check", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["installed"] == tree and doc["target"] == tree and doc["ok"] is True
    assert doc["path"]["steps"] == [] and doc["problems"] == []
    host = doc["hosts"][0]
    assert host["host"] == "@local" and host["migration_head"] == load().current.migration_head
    assert host["how"] in ("record", "the installed code's manifest")
    assert {"manager", "agent"} <= set(host["components"])
    text = _run("upgrade", "--check")
    assert text.returncode == 0 and "nothing to do" in text.stdout


def test_forbidden_targets_are_refused_with_the_rule(tmp_path: Path) -> None:
    first = str(load().releases[0].version)
    r = _run("upgrade", "--check", "--json", "--to", first)
    assert r.returncode == 2
    doc = json.loads(r.stdout)
    assert doc["path"]["rule"] == "no-downgrade" and "rollback" in doc["problems"][0]
    r = _run("upgrade", "--json", "--to", "99.01.0", "--record-dir", str(tmp_path))
    assert r.returncode == 2 and "not a release of the manifest" in r.stdout
    assert not list(tmp_path.iterdir())  # refused before anything was recorded
    r = _run("upgrade", "--check", "--to", "26.13.0")
    assert r.returncode != 0 and "not a release version" in (r.stdout + r.stderr)


def test_rollback_without_a_completed_step_is_refused(tmp_path: Path) -> None:
    r = _run("rollback", "--json", "--yes", "--record-dir", str(tmp_path / "none"))
    assert r.returncode == 2
    assert "no completed upgrade step" in json.loads(r.stdout)["refused"]
