"""The upgrade playbook end to end, on a Docker-capable systemd test host running the first
release (26.11.0, the walking skeleton, installed from its commit by its own installer):

1. ``upgrade --check`` reports the release (derived from the database: it predates the install
   record), the target (the tree, 26.12.1) and the one major step;
2. a running session refuses the major step, and nothing changes;
3. a release whose migration fails (a migration that raises, added to the tree's source by this
   test only: no switch in the product can trigger it) rolls back automatically to a working
   26.11.0 with its data;
4. the upgrade to the tree: data intact, the old admin keypair still signs, verification
   (version endpoint, agent ALIVE, a session runs print(1)) passed, the install record written;
5. a downgrade is refused and changes nothing;
6. a PATCH step (the tree re-labelled as the next patch in a manifest of the test's own: the
   code paths are the product's) is rolling: a session started before keeps answering an
   execute loop during the upgrade, its container is never restarted, the agent is drained,
   restarted and back (the record says so), a virtual folder's files are intact, and the
   operator's 26.12.0-style flat inventory is read with a warning naming the nested keys;
7. ``bai-install rollback`` undoes that patch step (the session still answers);
8. ``bai-install rollback`` again brings 26.11.0 back (code, database, etcd, configs), verified.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import time
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from installer import inventory as inventory_mod
from installer.upgrade import cli, playbook
from installer.upgrade.releases import MANIFEST, Manifest, load, tree_migration_head
from roles import settings as settings_mod
from roles.settings import FlatKeyWarning

from .conftest import PIP_ARGS, OldNode, snapshot, start_exec_loop, stop_exec_loop

pytestmark = pytest.mark.timeout(900)

USER = "kept-across-upgrades@example.com"


def _failing_release(tmp: Path) -> Path:
    m = load()
    tar = playbook.release_tarball(m.current, tmp)
    heads = tree_migration_head().split("+")
    down = repr(heads[0]) if len(heads) == 1 else repr(tuple(heads))
    body = (f'revision = "0099_upgrade_test_failure"\ndown_revision = {down}\n'
            "def upgrade():\n    raise RuntimeError('injected by tests/upgrade: this migration "
            "always fails')\n\ndef downgrade():\n    pass\n")
    src = tmp / "0099_upgrade_test_failure.py"
    src.write_text(body)
    with tarfile.open(tar, "a") as t:
        t.add(src, arcname="components/bai/manager/store/migrations/versions/"
                           "0099_upgrade_test_failure.py")
    return tar


def _upgrade(node: OldNode, **kw: object) -> dict[str, object]:
    return playbook.upgrade(node.inv, record_dir=node.record_dir, pip_args=PIP_ARGS,
                            **kw)  # type: ignore[arg-type]


def test_1_check_reports_the_old_release(old_node: OldNode) -> None:
    old_node.sql(f"INSERT INTO users (uuid, email, domain_name, full_name) VALUES "
                 f"(gen_random_uuid(), '{USER}', 'default', 'Kept')")
    result = CliRunner().invoke(cli.upgrade, ["--check", "--json", "-i", old_node.inv.path])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["installed"] == "26.11.0" and doc["target"] == str(load().current.version)
    host = doc["hosts"][0]
    assert host["how"] == "derived from migration head 0002"
    assert set(host["components"]) == {"manager", "agent"}
    assert [s["kind"] for s in doc["path"]["steps"]] == ["major"]
    assert doc["path"]["requires_drain"] is True


def test_2_a_running_session_refuses_the_major_step(old_node: OldNode) -> None:
    old_node.client("session create -t keep1 python")
    old_node.client("run -t keep1 -c 'x = 41' python")
    before = snapshot(old_node)
    with pytest.raises(playbook.Refused, match="keep1 .RUNNING."):
        _upgrade(old_node)
    assert snapshot(old_node) == before
    assert "backups" not in old_node.sh("ls /var/lib/bai/upgrades 2>/dev/null || true")
    old_node.client("session destroy keep1")


def test_3_a_failing_migration_rolls_back_to_the_old_release(old_node: OldNode,
                                                              tmp_path: Path) -> None:
    before = snapshot(old_node)
    with pytest.raises(playbook.StepFailed, match="injected by tests/upgrade") as info:
        # (no test session in the rollback's verification: this test runs one itself)
        _upgrade(old_node, tarballs={str(load().current.version): _failing_release(tmp_path)},
                 verify_session=False)
    assert info.value.rolled_back is True
    after = snapshot(old_node)
    # the old venv moved under releases/ and the symlink points at it: same code, same data
    assert after["venv"] == "/opt/bai/releases/26.11.0/venv"
    assert after["sessions"] == before["sessions"]
    assert all(row.endswith("|TERMINATED") for row in after["sessions"])
    same = ("users", "keypairs", "record", "head")
    assert {k: after[k] for k in same} == {k: before[k] for k in same}
    assert old_node.client("run --rm -c 'print(6*7)' python").split()[-1] == "42"
    lines = [json.loads(x) for p in old_node.record_dir.glob("*.jsonl")
             for x in p.read_text().splitlines()]
    assert [x["status"] for x in lines if x["phase"] == "rollback"] == ["start", "done"]


def test_4_upgrade_to_the_tree_keeps_the_data(old_node: OldNode) -> None:
    before = snapshot(old_node)
    done = _upgrade(old_node)
    tree = str(load().current.version)
    assert done["from"] == "26.11.0" and done["to"] == tree
    after = snapshot(old_node)
    assert after["users"] == before["users"] and USER in " ".join(after["users"])
    assert after["keypairs"][: len(before["keypairs"])] == before["keypairs"] or \
        set(before["keypairs"]) <= set(after["keypairs"])
    assert ("keep1|TERMINATED" in after["sessions"])
    assert after["head"] == [tree_migration_head()]
    assert after["venv"] == f"/opt/bai/releases/{tree}/venv"
    assert f'version = "{tree}"' in after["record"]
    # the old admin keypair (client.env of 26.11.0) signs against the new manager
    assert old_node.client("run --rm -c 'print(6*7)' python").split()[-1] == "42"
    check = playbook.check(old_node.inv)
    assert check.installed == tree and check.hosts[0].how == "record"
    # the manager, root under 26.11.0, now runs as its own account (no overlay here: no docker
    # group), its config root:bai-manager 640 instead of root:root 600
    pid = old_node.sh("systemctl show -p MainPID --value bai-manager.service").strip()
    assert old_node.sh(f"ps -o user= -p {pid}").split() == ["bai-manager"]
    assert "docker" not in old_node.sh("id -nG bai-manager").split()
    assert old_node.sh("stat -c '%U:%G %a' /etc/backend.ai/manager.toml").split() == ["root:bai-manager", "640"]


def test_5_a_downgrade_is_refused_and_changes_nothing(old_node: OldNode) -> None:
    before = snapshot(old_node)
    result = CliRunner().invoke(cli.upgrade, ["--to", "26.11.0", "--json", "-i",
                                              old_node.inv.path])
    assert result.exit_code == 2, result.output
    assert "no-downgrade" in result.output
    assert snapshot(old_node) == before


def _next_patch(tmp: Path) -> tuple[Manifest, Path]:
    """A manifest where the tree's release is a commit and the tree is the next patch of its
    line, and the tree's source carrying that manifest (so that the upgraded code knows itself
    as the next patch)."""
    doc = tomllib.loads(MANIFEST.read_text())
    tree = doc["release"][-1]
    head = subprocess.run(["git", "-C", str(MANIFEST.parent), "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    tree.update({"commit": head, "migration-head": tree_migration_head()})
    major, minor, patch = tree["version"].split(".")
    doc["release"].append({"version": f"{major}.{minor}.{int(patch) + 1}",
                           "config-version": tree["config-version"],
                           "notes": "tests/upgrade: the tree re-labelled as the next patch"})
    lines = []
    for rel in doc["release"]:
        lines.append("[[release]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in rel.items()]
    manifest = tmp / "releases.toml"
    manifest.write_text("\n".join(lines) + "\n")
    m = load(manifest)
    tar = playbook.release_tarball(m.current, tmp)
    with tarfile.open(tar, "a") as t:
        t.add(manifest, arcname="installer/releases.toml")
    return m, tar


def _container(node: OldNode) -> str:
    """The running session container(s): id and start time (a restart changes the time)."""
    return node.sh("docker ps -q --no-trunc | xargs -r docker inspect -f "
                   "'{{.Id}} {{.State.StartedAt}}'").strip()


def test_6_a_patch_step_keeps_a_running_session(old_node: OldNode, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    m, tar = _next_patch(tmp_path)
    old_node.client("session create -t keep2 python")
    old_node.client("run -t keep2 -c 'x = 41' python")
    src = "/tmp/keepdata-src"
    old_node.sh(f"mkdir -p {src} && head -c 300000 /dev/urandom > {src}/blob.bin && "
                f"echo kept across the patch > {src}/note.txt")
    old_node.client("vfolder create keepdata")
    old_node.client(f"vfolder upload keepdata note.txt blob.bin -b {src}")
    sums = old_node.sh(f"cd {src} && sha256sum note.txt blob.bin")
    container = _container(old_node)
    assert container, "the session's container is not running"
    start_exec_loop(old_node.host, "keep2", "print(x + 1)", "42")
    # the operator's 26.12.0-style inventory (flat keys), read afresh: warned, not refused
    monkeypatch.setattr(settings_mod, "_FLAT_WARNED", set())
    with pytest.warns(FlatKeyWarning, match="jupyter_image: an old flat key, read as "
                                            "kernel_image.jupyter_image"):
        inv = inventory_mod.load(old_node.inv.path)
    t0 = time.monotonic()
    done = playbook.upgrade(inv, manifest=m, record_dir=old_node.record_dir, pip_args=PIP_ARGS,
                            tarballs={str(m.current.version): tar})
    upgrade_s = time.monotonic() - t0
    loop = stop_exec_loop(old_node.host)
    print(f"patch upgrade {upgrade_s:.1f} s; execute loop during it: {loop}")
    assert loop["answered"] and loop["last_answered"], loop
    assert done["steps"] and [s["kind"] for s in done["steps"]] == ["patch"]
    # the session's container was never restarted (same id, same start), and it is RUNNING
    assert set(container.splitlines()) <= set(_container(old_node).splitlines())
    assert "keep2|RUNNING" in old_node.sql("SELECT name, status FROM sessions")
    # the record: the agent was drained with the session's kernel, restarted and back with it
    lines = [json.loads(x) for x in Path(done["record"]).read_text().splitlines()]
    agent = [x for x in lines if x["phase"] == "agent"]
    assert [x["status"] for x in agent] == ["drain", "restart", "ready"], agent
    assert agent[0]["kernels"] and agent[2]["kernels"] == agent[0]["kernels"]
    assert not any(x["phase"] == "stop" for x in lines)  # nothing was stopped for a patch
    # the folder's files, byte for byte
    old_node.sh("rm -rf /tmp/keepdata-dst && mkdir /tmp/keepdata-dst")
    old_node.client("vfolder download keepdata note.txt blob.bin -b /tmp/keepdata-dst")
    assert old_node.sh("cd /tmp/keepdata-dst && sha256sum note.txt blob.bin") == sums
    assert playbook.check(inv, manifest=m).installed == str(m.current.version)


def test_7_rollback_undoes_the_patch_step(old_node: OldNode) -> None:
    result = CliRunner().invoke(cli.rollback, ["--json", "--yes", "-i", old_node.inv.path,
                                               "--record-dir", str(old_node.record_dir)])
    assert result.exit_code == 0, result.output
    tree = str(load().current.version)
    assert json.loads(result.output)["to"] == tree
    after = snapshot(old_node)
    assert after["venv"] == f"/opt/bai/releases/{tree}/venv"
    assert f'version = "{tree}"' in after["record"]
    assert "42" in old_node.client("run -t keep2 -c 'print(x + 1)' python").splitlines()
    old_node.client("session destroy keep2")


def test_8_rollback_restores_the_previous_release(old_node: OldNode) -> None:
    result = CliRunner().invoke(cli.rollback, ["--json", "--yes", "-i", old_node.inv.path,
                                               "--record-dir", str(old_node.record_dir)])
    assert result.exit_code == 0, result.output
    after = snapshot(old_node)
    assert after["head"] == ["0002"] and after["record"] == "none"
    assert after["venv"] == "/opt/bai/releases/26.11.0/venv"
    assert USER in " ".join(after["users"])
    assert playbook.check(old_node.inv).installed == "26.11.0"
    # the services the newer release added are gone again
    units = old_node.sh("ls /etc/systemd/system | grep '^bai-' || true").split()
    assert sorted(units) == ["bai-agent.service", "bai-manager.service"]
    # 26.11.0's manager ran as root with a root-only config: both restored as they were
    pid = old_node.sh("systemctl show -p MainPID --value bai-manager.service").strip()
    assert old_node.sh(f"ps -o user= -p {pid}").split() == ["root"]
    assert old_node.sh("stat -c '%U:%G %a' /etc/backend.ai/manager.toml").split() == ["root:root", "600"]
    assert old_node.client("run --rm -c 'print(6*7)' python").split()[-1] == "42"
