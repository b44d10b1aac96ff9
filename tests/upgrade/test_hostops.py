"""The host side of upgrades (installer/upgrade/hostops.py) against a real PostgreSQL and etcd
(throwaway, tests/fixtures/halfstack.py): a backup taken before a "newer release" changed the
schema, the data, the etcd namespace and the configs is restored exactly; the venv switch is one
rename; a corrupt dump is refused before anything is touched. The service directories are
scratch directories and no service is controlled (the installed node is left alone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from installer.upgrade import hostops
from tests.fixtures.halfstack import HalfStack

HOSTOPS = Path(hostops.__file__)


@pytest.fixture
def host(halfstack: HalfStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
         ) -> Iterator[dict[str, Path]]:
    name = f"upg_{os.getpid()}_{abs(hash(tmp_path)) % 100000}"
    halfstack.psql(f"create database {name}")
    halfstack.psql("create table users (email text primary key, note text);"
                   "insert into users values ('a@x', 'kept'), ('b@x', 'kept too');"
                   "create table alembic_version (version_num text primary key);"
                   "insert into alembic_version values ('0002');", db=name)
    config = tmp_path / "etc"
    config.mkdir()
    ns = name
    (config / "manager.toml").write_text(
        f'[etcd]\nnamespace = "{ns}"\naddr = "{halfstack.etcd_addr}"\n'
        f'[db]\naddr = "127.0.0.1:{halfstack.pg_port}"\nname = "{name}"\nuser = "postgres"\n'
        'password = ""\n')
    (config / "agent.toml").write_text("[agent]\nid = 'old'\n")
    units = tmp_path / "supervisor"
    units.mkdir()
    (units / "bai-manager.conf").write_text("[program:bai-manager]\ncommand=old\n")
    monkeypatch.setattr(hostops, "SUPERVISOR_DIR", units)
    monkeypatch.setattr(hostops, "SYSTEMD_DIR", tmp_path / "systemd")
    monkeypatch.setattr(hostops, "_systemd", lambda: False)
    state = tmp_path / "state"
    (state / "vfroot").mkdir(parents=True)
    (state / "manager.code").write_text("old-code\n")
    (state / "vfroot" / "user-file").write_text("user data is never in a backup")
    etcd = {"addr": halfstack.etcd_addr, "namespace": ns}
    hostops.etcd_replace(etcd, {f"/sorna/{ns}/config/redis/addr": "127.0.0.1:6379",
                                f"/sorna/{ns}/config/agent/rpc-secret": "s3cret"})
    yield {"config": config, "units": units, "state": state, "root": tmp_path}
    halfstack.psql(f"drop database {name} with (force)")


def _rows(halfstack: HalfStack, db: str, sql: str) -> list[str]:
    return [line for line in halfstack.psql(sql, db=db).splitlines() if line.strip()]


def test_backup_then_restore_returns_everything(halfstack: HalfStack, host: dict[str, Path]
                                                ) -> None:
    config, state = host["config"], host["state"]
    db = hostops.db_settings(config)
    etcd = hostops.etcd_settings(config)
    assert db and etcd
    before_keys = hostops.etcd_dump(etcd)
    dest = host["root"] / "backups" / "step-1"
    meta = hostops.backup(dest, config, state, host["root"] / "venv", "26.11.0")
    assert meta["parts"]["database"]["bytes"] > 0 and meta["parts"]["etcd"]["keys"] == 2
    assert (dest / "etcd.snapshot").stat().st_size > 0  # etcdctl is there: a snapshot too
    assert oct((dest).stat().st_mode & 0o777) == "0o700"
    tarred = meta["parts"]["configs"]["paths"]
    assert str(state / "manager.code") in tarred and not any("vfroot" in p for p in tarred)

    # the "newer release": schema, data, etcd and configs change, a service is added
    halfstack.psql("alter table users add column plan text; create table sessions (id int);"
                   "update users set note = 'changed'; delete from users where email = 'b@x';"
                   "update alembic_version set version_num = '0014d';", db=db["name"])
    hostops.etcd_replace(etcd, {f"/sorna/{etcd['namespace']}/config/redis/password": "new"})
    (config / "manager.toml").write_text((config / "manager.toml").read_text() + "# new\n")
    (config / "storage-proxy.toml").write_text("[storage-proxy]\n")
    (config / "release.toml").write_text('version = "26.12.1"\n')
    (host["units"] / "bai-storage-proxy.conf").write_text("[program:bai-storage-proxy]\n")
    (state / "manager.code").write_text("new-code\n")

    out = hostops.restore(dest, config, control=False)
    assert out["release"] == "26.11.0" and out["etcd_keys"] == 2
    assert sorted(out["configs"]["removed_units"]) == ["bai-storage-proxy"]
    assert _rows(halfstack, db["name"], "select email, note from users order by 1") == \
        ["a@x|kept", "b@x|kept too"]
    assert _rows(halfstack, db["name"], "select version_num from alembic_version") == ["0002"]
    assert _rows(halfstack, db["name"], "select count(*) from information_schema.tables "
                 "where table_name = 'sessions'") == ["0"]
    assert hostops.etcd_dump(etcd) == before_keys
    assert "# new" not in (config / "manager.toml").read_text()
    assert not (config / "storage-proxy.toml").exists() and not (config / "release.toml").exists()
    assert sorted(p.name for p in host["units"].iterdir()) == ["bai-manager.conf"]
    assert (state / "manager.code").read_text() == "old-code\n"
    assert (state / "vfroot" / "user-file").exists()


def test_a_corrupt_dump_is_refused_and_nothing_changes(halfstack: HalfStack,
                                                       host: dict[str, Path]) -> None:
    config, state = host["config"], host["state"]
    db = hostops.db_settings(config)
    assert db
    dest = host["root"] / "backups" / "step-1"
    hostops.backup(dest, config, state, host["root"] / "venv", "26.11.0")
    with (dest / "database.dump").open("r+b") as f:
        f.seek(20)
        f.write(b"garbage")
    halfstack.psql("update users set note = 'newer'", db=db["name"])
    with pytest.raises(hostops.Failure, match="does not match its checksum"):
        hostops.restore(dest, config, control=False)
    assert _rows(halfstack, db["name"], "select distinct note from users") == ["newer"]


def test_restore_of_a_broken_dump_keeps_the_database(halfstack: HalfStack,
                                                     host: dict[str, Path]) -> None:
    """pg_restore failing half-way (here: a dump of another table layout whose checksum was
    updated) rolls the whole restore back: the transaction covers the schema drop too."""
    config, state = host["config"], host["state"]
    db = hostops.db_settings(config)
    assert db
    dest = host["root"] / "backups" / "step-1"
    hostops.backup(dest, config, state, host["root"] / "venv", "26.11.0")
    dump = dest / "database.dump"
    dump.write_bytes(dump.read_bytes()[: dump.stat().st_size // 2])  # truncated
    meta = json.loads((dest / "backup.json").read_text())
    meta["parts"]["database"]["sha256"] = hostops._sha256(dump)
    (dest / "backup.json").write_text(json.dumps(meta))
    halfstack.psql("update users set note = 'newer'", db=db["name"])
    with pytest.raises(hostops.Failure):
        hostops.restore(dest, config, control=False)
    assert _rows(halfstack, db["name"], "select distinct note from users") == ["newer"]


def test_not_enough_disk_stops_before_writing(host: dict[str, Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hostops, "FREE_MARGIN", 1 << 60)
    dest = host["root"] / "backups" / "step-1"
    with pytest.raises(hostops.Failure, match="not enough disk"):
        hostops.backup(dest, host["config"], host["state"], host["root"] / "venv", "26.11.0")
    assert not dest.exists()


def test_adopt_and_switch_the_venv(tmp_path: Path) -> None:
    venv, releases = tmp_path / "venv", tmp_path / "releases"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60)
    assert hostops.adopt(venv, releases, "26.11.0") == {
        "adopted": True, "symlink": str(releases / "26.11.0" / "venv")}
    assert venv.is_symlink() and (venv / "bin" / "python").exists()
    assert hostops.adopt(venv, releases, "26.11.0")["adopted"] is False  # idempotent
    new = releases / "26.12.1" / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(new)], check=True,
                   timeout=60)
    done = hostops.switch(venv, new)
    assert done["was"] == str(releases / "26.11.0" / "venv") and os.readlink(venv) == str(new)
    with pytest.raises(hostops.Failure, match="not a virtual environment"):
        hostops.switch(venv, tmp_path / "nothing")
    assert os.readlink(venv) == str(new)


def test_cli_answers_json(host: dict[str, Path], tmp_path: Path) -> None:
    """The controller runs the file with the host's plain python3 (no bai code importable)."""
    run = subprocess.run(["/usr/bin/python3", "-I", str(HOSTOPS), "--config-dir",
                          str(host["config"]), "--venv", "/opt/bai/venv", "detect"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    doc = json.loads(run.stdout)
    assert doc["record"] is None and doc["migration_head"] == "0002"
    assert doc["has_manager_config"] is True
    hostops.record(host["config"], {"version": "26.12.1", "config-version": 3})
    assert hostops.read_record(host["config"]) == {"version": "26.12.1", "config-version": 3}
    bad = subprocess.run(["/usr/bin/python3", "-I", str(HOSTOPS), "restore", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "restore:" in json.loads(bad.stdout)["error"]


def _hostops(tmp_path: Path, *args: str, venv: Path) -> dict[str, Any]:
    run = subprocess.run(["/usr/bin/python3", "-I", str(HOSTOPS), "--config-dir", str(tmp_path / "etc"),
                          "--venv", str(venv), *args], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    doc: dict[str, Any] = json.loads(run.stdout)
    return doc


def test_clone_venv_copies_and_relocates_leaving_the_source_alone(tmp_path: Path) -> None:
    """A new release's venv starts as a copy of the one in use: its scripts run its own python,
    the packages are there, and the old venv (a rollback's) is byte for byte what it was."""
    src = tmp_path / "releases" / "26.12.0" / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(src)], check=True, timeout=60)
    site = next((src / "lib").glob("python3*/site-packages"))
    (site / "kept_dep.py").write_text("VALUE = 42\n")
    tool = src / "bin" / "tool"
    tool.write_text(f"#!{src}/bin/python\nimport kept_dep, sys\nprint(kept_dep.VALUE, sys.prefix)\n")
    tool.chmod(0o755)
    link = tmp_path / "venv"
    link.symlink_to(src)
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file() and not p.is_symlink()}
    dest = tmp_path / "releases" / "26.12.1" / "venv"
    doc = _hostops(tmp_path, "clone-venv", str(dest), venv=link)
    assert doc["cloned"] is True and doc["from"] == str(src) and doc["relocated"] == [str(src)]
    out = subprocess.run([str(dest / "bin" / "tool")], capture_output=True, text=True, check=True,
                         timeout=60).stdout.split()
    assert out == ["42", str(dest)]
    activate = (dest / "bin" / "activate").read_text()
    assert str(dest) in activate and str(src) not in activate
    assert (dest / "bin" / "python").is_symlink()
    assert not dest.with_name("venv.part").exists()
    assert before == {p: p.read_bytes() for p in src.rglob("*") if p.is_file() and not p.is_symlink()}
    # a venv of another Python is not copied (the caller builds a fresh one)
    cfg = src / "pyvenv.cfg"
    cfg.write_text(cfg.read_text().replace(f"version = {sys.version_info[0]}.{sys.version_info[1]}",
                                           "version = 2.7"))
    again = _hostops(tmp_path, "clone-venv", str(tmp_path / "other"), venv=link)
    assert again["cloned"] is False and "not" in again["why"]
    assert not (tmp_path / "other").exists()
