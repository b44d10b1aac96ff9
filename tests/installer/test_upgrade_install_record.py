"""The install record (/etc/backend.ai/release.toml) that ``bai-install install`` writes on every
host (roles/base.py, roles/bai.py): the tree's release from its manifest, in the keys the upgrade
reads, written once per release (a re-run, or an upgrade's own record of the same release, is
left as it is)."""

from __future__ import annotations

import tomllib

from installer.upgrade.playbook import installed_release
from installer.upgrade.releases import load
from roles.bai import release_record_text, tree_release


def test_the_record_names_the_trees_release_and_reads_back_as_it() -> None:
    m = load()
    release = tree_release()
    assert release["version"] == str(m.current.version)
    assert release["config-version"] == m.current.config_version
    text = release_record_text(release, "2026-12-02T01:00:00Z")
    doc = tomllib.loads(text)
    assert doc["version"] == str(m.current.version) and doc["installed"] == "2026-12-02T01:00:00Z"
    assert len(doc.get("commit", "x" * 40)) == 40
    # what `bai-install upgrade` makes of a host with this record and this code
    assert installed_release(m, {"record": doc, "code": {"version": doc["version"]}}) == (
        str(m.current.version), "record")


def test_the_installed_node_has_its_record_and_a_rerun_keeps_it() -> None:
    """The all-in-one node bootstrap.sh installed from this tree (tests/run.sh re-checks it
    first): its record is this release, and the base role would not touch it again."""
    from pathlib import Path

    from installer import engine
    from roles import base

    doc = tomllib.loads(Path("/etc/backend.ai/release.toml").read_text())
    assert (doc["version"], doc["config-version"]) == (tree_release()["version"],
                                                      tree_release()["config-version"])
    result = engine.run({"@local": {}}, [engine.Phase("base", {"@local": [base.ROLE]})], dry=True)
    record = [op for op in result.ops if op.name.startswith("Record release ")]
    assert [(op.name, op.changed) for op in record] == [
        (f"Record release {doc['version']} in /etc/backend.ai/release.toml", False)]
