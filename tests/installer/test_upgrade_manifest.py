"""The release manifest: the real one matches the repository's history (each release's commit
exists and its recorded migration head is that commit's Alembic head), and malformed manifests
are refused with a message naming the release and the key."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path
from typing import Any

import pytest

from installer.upgrade.releases import ManifestError, Version, load, parse, tree_migration_head

REPO = Path(__file__).resolve().parents[2]
VERSIONS = "components/bai/manager/store/migrations/versions"


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True,
                          text=True, timeout=30).stdout


def _heads_at(commit: str) -> str:
    """The Alembic heads of the migrations as they were at ``commit`` (read, not imported)."""
    revisions: dict[str, tuple[str, ...]] = {}
    for name in _git("ls-tree", "--name-only", f"{commit}:{VERSIONS}").split():
        if not name.endswith(".py") or name == "__init__.py":
            continue
        tree = ast.parse(_git("show", f"{commit}:{VERSIONS}/{name}"))
        values: dict[str, Any] = {}
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                if node.targets[0].id in ("revision", "down_revision"):
                    values[node.targets[0].id] = ast.literal_eval(node.value)
        down = values.get("down_revision")
        revisions[values["revision"]] = (down,) if isinstance(down, str) else tuple(down or ())
    parents = {p for downs in revisions.values() for p in downs}
    return "+".join(sorted(set(revisions) - parents))


def test_real_manifest_matches_history() -> None:
    m = load()
    assert m.current.is_tree and m.current.migration_head == tree_migration_head()
    recorded = [r for r in m.releases if r.commit]
    assert {r.commit[:7] for r in recorded if r.commit} >= {"189f6e9", "a094254"}
    for r in recorded:
        assert r.commit is not None
        assert _git("cat-file", "-t", r.commit).strip() == "commit", r.version
        assert r.migration_head == _heads_at(r.commit), f"{r.version}: recorded head"
        assert r.notes and r.config_changes
    # the skeleton's schema is older than the session's start, which is not newer than the tree
    assert m.releases[0].migration_head == "0002"
    assert [r.config_version for r in m.releases] == sorted(r.config_version for r in m.releases)


def _doc(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"release": list(entries)}


OLD = {"version": "26.11.0", "commit": "a" * 40, "migration-head": "0002", "config-version": 1}
TREE = {"version": "26.11.1", "config-version": 1}

BAD = [
    (_doc(), "no \\[\\[release\\]\\] entries"),
    (_doc({**OLD, "version": "26.13.0"}, TREE), "not a release version"),
    (_doc({**OLD, "version": "26.11"}, TREE), "not a release version"),
    (_doc(OLD, {**TREE, "commit": "b" * 40}), "the last release is the working tree"),
    (_doc(OLD, {**TREE, "migration-head": "0003"}), "read from the code"),
    (_doc({**OLD, "commit": "abc"}, TREE), "release 26.11.0: `commit` must be a full"),
    (_doc({k: v for k, v in OLD.items() if k != "migration-head"}, TREE),
     "release 26.11.0: `migration-head`"),
    (_doc({**OLD, "config-version": "1"}, TREE), "`config-version` must be a positive"),
    (_doc({**OLD, "config-version": True}, TREE), "`config-version` must be a positive"),
    (_doc({**OLD, "colour": "red"}, TREE), "unknown keys colour"),
    (_doc(OLD, {**TREE, "version": "26.11.2"}), "should be 26.11.1"),
    (_doc(OLD, {**TREE, "version": "26.12.1"}), "should be 26.12.0"),
    (_doc(OLD, {**TREE, "version": "26.11.0"}), "oldest first"),
    (_doc({**OLD, "config-version": 2}, TREE), "lowers config-version"),
    (_doc(OLD, {**OLD, "version": "26.11.1"}, {**TREE, "version": "26.11.2"}), "listed twice"),
]


@pytest.mark.parametrize(("doc", "message"), BAD)
def test_malformed_manifests_are_refused(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse(doc, tree_head="0003")


def test_versions_order_and_print() -> None:
    assert Version.parse("26.09.10") > Version.parse("26.09.9") > Version.parse("25.12.30")
    assert str(Version.parse("26.09.0")) == "26.09.0" and Version.parse("26.09.0").line == "26.09"
    m = parse(_doc(OLD, TREE), tree_head="0003")
    assert m.current.migration_head == "0003" and m.get("26.11.0") is m.releases[0]
    assert m.by_migration_head("0002") == [m.releases[0]] and m.get("26.11.5") is None
