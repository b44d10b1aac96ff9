"""Upgrade work done ON a host, by the host's own ``python3`` (standard library only: the host's
bai environment may be an old release that has none of this, or the one being replaced).

The controller copies this file to ``/var/lib/bai/upgrades/hostops.py`` and runs
``python3 hostops.py COMMAND ...``; every command prints one JSON document on stdout and exits 0
on success, 1 with ``{"error": ...}`` on failure.

    detect      the release installed here: the install record, else derived from the database's
                migration head (through the bai venv's python and asyncpg)
    free        free bytes under a path and what a backup of this host would need
    backup      into DIR: database dump (pg_dump custom format), etcd (a snapshot when etcdctl is
                there, and always a JSON dump of the namespace's keys), configs (/etc/backend.ai,
                the bai service definitions, the state directory's stamps), the venv's target
    restore     from DIR: the database (pg_restore --clean, one transaction), the etcd namespace
                (replaced in one transaction), the configs; bai service definitions the backup
                does not have are removed
    adopt       turn a venv directory into ``releases/<version>/venv`` + a symlink to it
    switch      point the venv symlink at another release's venv, atomically (rename(2))
    services    stop or start the bai services present here, in dependency order
    record      write the install record (``release.toml``)
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

RECORD = "release.toml"
#: bai's services in the order they start (dependencies first); stop runs it backwards.
START_ORDER = ("manager", "storage-proxy", "agent", "app-proxy", "webserver")
SYSTEMD_DIR = Path("/etc/systemd/system")
SUPERVISOR_DIR = Path("/etc/supervisor/conf.d")
#: room kept free beyond what a backup needs
FREE_MARGIN = 256 * 1024 * 1024


class Failure(Exception):
    pass


def _run(cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = 600,
         stdin: bytes | None = None) -> str:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise Failure(f"{' '.join(cmd[:3])} failed ({proc.returncode}): "
                      f"{proc.stderr.decode(errors='replace').strip()[-2000:]}")
    return proc.stdout.decode(errors="replace")


# -- configuration as the installed release wrote it ---------------------------------------------

def manager_config(config_dir: Path) -> dict[str, Any]:
    path = config_dir / "manager.toml"
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}


def db_settings(config_dir: Path) -> dict[str, str] | None:
    db = manager_config(config_dir).get("db")
    if not isinstance(db, dict):
        return None
    host, _, port = str(db.get("addr", "127.0.0.1:5432")).rpartition(":")
    return {"host": host, "port": port, "user": str(db.get("user", "bai")),
            "password": str(db.get("password", "")), "name": str(db.get("name", "backend"))}


def etcd_settings(config_dir: Path) -> dict[str, str] | None:
    etcd = manager_config(config_dir).get("etcd")
    if not isinstance(etcd, dict):
        return None
    return {"addr": str(etcd.get("addr", "127.0.0.1:2379")),
            "namespace": str(etcd.get("namespace", "local"))}


def _pg_env(db: dict[str, str]) -> dict[str, str]:
    return {"PGHOST": db["host"], "PGPORT": db["port"], "PGUSER": db["user"],
            "PGPASSWORD": db["password"], "PGDATABASE": db["name"], "PGCONNECT_TIMEOUT": "10"}


# -- detect ----------------------------------------------------------------------------------------

_HEAD_SCRIPT = """
import asyncio, json, sys, asyncpg
async def main():
    c = await asyncpg.connect(host=sys.argv[1], port=int(sys.argv[2]), user=sys.argv[3],
                              password=sys.argv[4], database=sys.argv[5], timeout=10)
    try:
        rows = await c.fetch("SELECT version_num FROM alembic_version")
    except asyncpg.UndefinedTableError:
        rows = []
    finally:
        await c.close()
    print(json.dumps(sorted(r["version_num"] for r in rows)))
asyncio.run(main())
"""


def migration_head(config_dir: Path, venv: Path) -> str | None:
    """The database's Alembic revision(s), "+"-joined; None when there is no manager config."""
    db = db_settings(config_dir)
    if db is None:
        return None
    out = _run([str(venv / "bin" / "python"), "-c", _HEAD_SCRIPT, db["host"], db["port"],
                db["user"], db["password"], db["name"]], timeout=30)
    return "+".join(json.loads(out))


def read_record(config_dir: Path) -> dict[str, Any] | None:
    try:
        return tomllib.loads((config_dir / RECORD).read_text())
    except FileNotFoundError:
        return None


def venv_state(venv: Path) -> dict[str, Any]:
    target = os.readlink(venv) if venv.is_symlink() else None
    return {"path": str(venv), "exists": venv.exists(), "symlink": target}


def detect(config_dir: Path, venv: Path) -> dict[str, Any]:
    record = read_record(config_dir)
    head = None
    head_error = None
    if (config_dir / "manager.toml").exists():
        try:
            head = migration_head(config_dir, venv)
        except (Failure, subprocess.TimeoutExpired, OSError, ValueError) as exc:
            head_error = str(exc)
    return {"record": record, "migration_head": head, "migration_head_error": head_error,
            "venv": venv_state(venv), "services": services_present(),
            "has_manager_config": (config_dir / "manager.toml").exists()}


# -- services --------------------------------------------------------------------------------------

def _systemd() -> bool:
    try:
        return Path("/proc/1/comm").read_text().strip() == "systemd" and \
            Path("/run/systemd/system").is_dir()
    except OSError:
        return False


def services_present() -> list[str]:
    """bai's services defined on this host, in start order."""
    found = []
    for name in START_ORDER:
        if (SYSTEMD_DIR / f"bai-{name}.service").exists() if _systemd() else \
                (SUPERVISOR_DIR / f"bai-{name}.conf").exists():
            found.append(name)
    return found


def services(action: str, names: list[str] | None = None) -> dict[str, Any]:
    present = services_present()
    todo = [n for n in present if names is None or n in names]
    if action == "stop":
        todo.reverse()
    done = []
    for name in todo:
        if _systemd():
            _run(["systemctl", action, f"bai-{name}.service"], timeout=120)
        else:
            if action == "start":  # a definition restored from a backup must be (re)read first
                _run(["supervisorctl", "update", f"bai-{name}"], timeout=60)
            out = subprocess.run(["supervisorctl", action, f"bai-{name}"], capture_output=True,
                                 timeout=120, text=True)
            text = out.stdout + out.stderr
            if out.returncode != 0 and "already started" not in text and \
                    "not running" not in text:
                raise Failure(f"supervisorctl {action} bai-{name}: {text.strip()}")
        done.append(name)
    return {"action": action, "services": done}


def _forget_services(keep: set[str], control: bool = True) -> list[str]:
    """Remove bai service definitions that are not in ``keep`` (file names), stopping them
    first (``control``: tests over scratch directories leave the host's services alone)."""
    removed = []
    systemd = _systemd()
    base = SYSTEMD_DIR if systemd else SUPERVISOR_DIR
    for path in sorted(base.glob("bai-*.service" if systemd else "bai-*.conf")):
        if path.name in keep:
            continue
        if control and systemd:
            subprocess.run(["systemctl", "disable", "--now", path.name], capture_output=True,
                           timeout=120)
        elif control:
            subprocess.run(["supervisorctl", "stop", path.stem], capture_output=True,
                           timeout=120)
        path.unlink()
        removed.append(path.stem)
    if removed and control and systemd:
        _run(["systemctl", "daemon-reload"], timeout=60)
    elif removed and control:
        subprocess.run(["supervisorctl", "update"], capture_output=True, timeout=60)
    return removed


# -- disk ------------------------------------------------------------------------------------------

def _tree_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def needed_bytes(config_dir: Path) -> int:
    """What a backup of this host takes: the database (its size on disk bounds the dump), the
    etcd namespace and the configs, plus a margin."""
    need = _tree_size(config_dir) + FREE_MARGIN
    db = db_settings(config_dir)
    if db is not None and shutil.which("psql"):
        out = _run(["psql", "-X", "-t", "-A", "-c",
                    "SELECT pg_database_size(current_database())"], env=_pg_env(db), timeout=30)
        need += int(out.strip() or 0)
    etcd = etcd_settings(config_dir)
    if etcd is not None:
        need += sum(len(k) + len(v) for k, v in etcd_dump(etcd).items()) * 2
    return need


def free(path: Path, config_dir: Path) -> dict[str, Any]:
    probe = path
    while not probe.exists():
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    need = needed_bytes(config_dir)
    return {"path": str(path), "free": usage.free, "needed": need, "enough": usage.free >= need}


# -- etcd through its JSON gateway (every etcd >= 3.3 serves it on the client port) ---------------

def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _prefix_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


def _etcd_call(addr: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(f"http://{addr}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=15) as resp:
        answer: dict[str, Any] = json.loads(resp.read(64 * 1024 * 1024))
        return answer


def etcd_dump(etcd: dict[str, str]) -> dict[str, str]:
    """Every key under ``/sorna/<namespace>/`` with its value."""
    prefix = f"/sorna/{etcd['namespace']}/"
    answer = _etcd_call(etcd["addr"], "/v3/kv/range",
                        {"key": _b64(prefix), "range_end": _prefix_end(prefix)})
    return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
            for kv in answer.get("kvs", [])}


def etcd_replace(etcd: dict[str, str], keys: dict[str, str]) -> int:
    """Make the namespace hold exactly ``keys``, in one transaction (etcd refuses a transaction
    whose operations overlap, so keys that go are deleted one by one, not as a range)."""
    prefix = f"/sorna/{etcd['namespace']}/"
    if any(not k.startswith(prefix) for k in keys):
        raise Failure(f"the etcd dump holds keys outside {prefix}")
    gone = sorted(set(etcd_dump(etcd)) - set(keys))
    ops: list[dict[str, Any]] = [{"request_delete_range": {"key": _b64(k)}} for k in gone]
    ops += [{"request_put": {"key": _b64(k), "value": _b64(v)}} for k, v in sorted(keys.items())]
    if ops:
        _etcd_call(etcd["addr"], "/v3/kv/txn", {"compare": [], "success": ops})
    return len(keys)


# -- backup / restore ------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _config_paths(config_dir: Path, state_dir: Path) -> list[Path]:
    paths = [config_dir] if config_dir.is_dir() else []
    paths += sorted(SYSTEMD_DIR.glob("bai-*.service")) + sorted(SUPERVISOR_DIR.glob("bai-*.conf"))
    if state_dir.is_dir():  # the stamps only (code, fixtures, redis digests), never user data
        paths += sorted(p for p in state_dir.iterdir() if p.is_file() and not p.is_symlink())
    return paths


def backup(dest: Path, config_dir: Path, state_dir: Path, venv: Path,
           release: str | None) -> dict[str, Any]:
    t0 = time.monotonic()
    room = free(dest.parent, config_dir)
    if not room["enough"]:
        raise Failure(f"not enough disk for the backup under {room['path']}: "
                      f"{room['free']} bytes free, {room['needed']} needed")
    dest.mkdir(parents=True, exist_ok=False, mode=0o700)
    meta: dict[str, Any] = {"created": time.time(), "release": release,
                            "venv": venv_state(venv), "parts": {}, "seconds": {}}
    db = db_settings(config_dir)
    if db is not None:
        t = time.monotonic()
        out = dest / "database.dump"
        _run(["pg_dump", "--format=custom", "--no-owner", f"--file={out}"], env=_pg_env(db),
             timeout=3600)
        meta["parts"]["database"] = {"file": out.name, "sha256": _sha256(out),
                                     "bytes": out.stat().st_size, "db": db["name"]}
        meta["seconds"]["database"] = round(time.monotonic() - t, 3)
    etcd = etcd_settings(config_dir)
    if etcd is not None:
        t = time.monotonic()
        keys = etcd_dump(etcd)
        out = dest / "etcd-keys.json"
        out.write_text(json.dumps(keys, indent=1, sort_keys=True))
        out.chmod(0o600)
        meta["parts"]["etcd"] = {"file": out.name, "keys": len(keys), **etcd}
        if shutil.which("etcdctl"):  # a whole-cluster snapshot too, for disaster recovery
            snap = dest / "etcd.snapshot"
            _run(["etcdctl", f"--endpoints=http://{etcd['addr']}", "--dial-timeout=5s",
                  "snapshot", "save", str(snap)], env={"ETCDCTL_API": "3"}, timeout=600)
            meta["parts"]["etcd"]["snapshot"] = snap.name
        meta["seconds"]["etcd"] = round(time.monotonic() - t, 3)
    t = time.monotonic()
    with tarfile.open(dest / "configs.tar", "w") as tar:
        for path in _config_paths(config_dir, state_dir):
            tar.add(str(path), arcname=str(path).lstrip("/"))
    meta["parts"]["configs"] = {"file": "configs.tar",
                                "paths": [str(p) for p in _config_paths(config_dir, state_dir)]}
    meta["seconds"]["configs"] = round(time.monotonic() - t, 3)
    meta["seconds"]["total"] = round(time.monotonic() - t0, 3)
    (dest / "backup.json").write_text(json.dumps(meta, indent=1))
    return {"dir": str(dest), **meta}


def _restore_configs(src: Path, config_dir: Path, control: bool) -> dict[str, Any]:
    with tarfile.open(src / "configs.tar") as tar:
        members = tar.getmembers()
        names = {"/" + m.name for m in members}
        for m in members:  # confined: only the paths backup() wrote
            if m.issym() or m.islnk() or m.isdev() or ".." in Path(m.name).parts:
                raise Failure(f"unexpected entry in configs.tar: {m.name}")
        kept_units = {Path(n).name for n in names
                      if n.startswith(str(SYSTEMD_DIR) + "/") or
                      n.startswith(str(SUPERVISOR_DIR) + "/")}
        removed_units = _forget_services(kept_units, control)
        removed_files = []
        if config_dir.is_dir():  # files the newer release added go; user data is not here
            for root, _, files in os.walk(config_dir):
                for name in files:
                    path = os.path.join(root, name)
                    if path not in names:
                        os.unlink(path)
                        removed_files.append(path)
        for m in members:
            if m.isdir():
                Path("/" + m.name).mkdir(parents=True, exist_ok=True)
                continue
            data = tar.extractfile(m)
            assert data is not None
            target = Path("/" + m.name)
            tmp = target.with_name(f".{target.name}.restore")
            tmp.write_bytes(data.read())
            os.chmod(tmp, m.mode & 0o7777)
            os.chown(tmp, m.uid, m.gid)
            os.replace(tmp, target)
    if control and _systemd():
        _run(["systemctl", "daemon-reload"], timeout=60)
    return {"removed_units": removed_units, "removed_files": removed_files}


def restore(src: Path, config_dir: Path, control: bool = True) -> dict[str, Any]:
    meta = json.loads((src / "backup.json").read_text())
    out: dict[str, Any] = {"dir": str(src), "release": meta.get("release"), "seconds": {}}
    db_part = meta["parts"].get("database")
    if db_part:
        t = time.monotonic()
        dump = src / db_part["file"]
        if _sha256(dump) != db_part["sha256"]:
            raise Failure(f"{dump} does not match its checksum: not restoring it")
        db = db_settings(config_dir)
        assert db is not None
        # The newer release's tables go with the old schema: the public schema is recreated and
        # the dump restored in ONE transaction, committed only when pg_restore produced all of
        # it (a truncated dump ends psql's input without COMMIT: rolled back, nothing changed).
        # The dump streams through a pipe, never whole in memory.
        script = ("set -o pipefail; { printf '%s\\n' 'BEGIN; DROP SCHEMA public CASCADE; "
                  "CREATE SCHEMA public;'; pg_restore --no-owner --no-privileges -f - \"$1\" "
                  "&& printf '%s\\n' 'COMMIT;'; } | psql -X -q -v ON_ERROR_STOP=1")
        _run(["bash", "-c", script, "restore", str(dump)], env=_pg_env(db), timeout=3600)
        out["seconds"]["database"] = round(time.monotonic() - t, 3)
    etcd_part = meta["parts"].get("etcd")
    if etcd_part:
        t = time.monotonic()
        keys = json.loads((src / etcd_part["file"]).read_text())
        out["etcd_keys"] = etcd_replace({"addr": etcd_part["addr"],
                                         "namespace": etcd_part["namespace"]}, keys)
        out["seconds"]["etcd"] = round(time.monotonic() - t, 3)
    # configs last: the database and etcd are restored first (the database in one
    # transaction), so that a failure there leaves this host as it was
    t = time.monotonic()
    out["configs"] = _restore_configs(src, config_dir, control)
    out["seconds"]["configs"] = round(time.monotonic() - t, 3)
    return out


# -- venvs -----------------------------------------------------------------------------------------

def adopt(venv: Path, releases: Path, version: str) -> dict[str, Any]:
    """A venv that is a plain directory (an install from before per-release venvs) becomes
    ``releases/<version>/venv``, and ``venv`` a symlink to it. Its scripts keep working: their
    ``#!`` line names ``venv``, which now resolves through the link (and, after a later switch
    and a rollback, points back at it)."""
    if venv.is_symlink():
        return {"adopted": False, "symlink": os.readlink(venv)}
    home = releases / version / "venv"
    if home.exists():
        raise Failure(f"{home} exists already; not moving {venv} over it")
    home.parent.mkdir(parents=True, exist_ok=True)
    os.rename(venv, home)
    os.symlink(home, venv)
    return {"adopted": True, "symlink": str(home)}


def switch(venv: Path, target: Path) -> dict[str, Any]:
    """Point ``venv`` at ``target`` in one rename(2): there is no moment without a venv."""
    if not (target / "bin" / "python").exists():
        raise Failure(f"{target} is not a virtual environment")
    if venv.exists() and not venv.is_symlink():
        raise Failure(f"{venv} is a directory: adopt it first")
    previous = os.readlink(venv) if venv.is_symlink() else None
    tmp = venv.with_name(f".{venv.name}.switch")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, venv)
    return {"venv": str(venv), "now": str(target), "was": previous}


def record(config_dir: Path, values: dict[str, Any]) -> dict[str, Any]:
    lines = ["# written by bai-install: the bai release installed on this host"]
    for key, value in values.items():
        if isinstance(value, int):
            lines.append(f"{key} = {value}")
        else:
            lines.append(f"{key} = {json.dumps(str(value))}")
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # what we write must read back
    config_dir.mkdir(parents=True, exist_ok=True)
    tmp = config_dir / f".{RECORD}.tmp"
    tmp.write_text(text)
    tmp.chmod(0o644)
    os.replace(tmp, config_dir / RECORD)
    return {"record": str(config_dir / RECORD), **values}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hostops.py")
    p.add_argument("--config-dir", default="/etc/backend.ai", type=Path)
    p.add_argument("--state-dir", default="/var/lib/bai", type=Path)
    p.add_argument("--venv", default="/opt/bai/venv", type=Path)
    p.add_argument("--releases", default="/opt/bai/releases", type=Path)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("detect")
    s = sub.add_parser("free")
    s.add_argument("path", type=Path)
    s = sub.add_parser("backup")
    s.add_argument("dir", type=Path)
    s.add_argument("--release", default=None)
    s = sub.add_parser("restore")
    s.add_argument("dir", type=Path)
    s = sub.add_parser("adopt")
    s.add_argument("version")
    s = sub.add_parser("switch")
    s.add_argument("target", type=Path)
    s = sub.add_parser("services")
    s.add_argument("action", choices=["stop", "start", "restart"])
    s.add_argument("names", nargs="*")
    s = sub.add_parser("record")
    s.add_argument("json")
    a = p.parse_args(argv)
    try:
        if a.cmd == "detect":
            doc = detect(a.config_dir, a.venv)
        elif a.cmd == "free":
            doc = free(a.path, a.config_dir)
        elif a.cmd == "backup":
            doc = backup(a.dir, a.config_dir, a.state_dir, a.venv, a.release)
        elif a.cmd == "restore":
            doc = restore(a.dir, a.config_dir)
        elif a.cmd == "adopt":
            doc = adopt(a.venv, a.releases, a.version)
        elif a.cmd == "switch":
            doc = switch(a.venv, a.target)
        elif a.cmd == "services":
            doc = services(a.action, a.names or None)
        else:
            doc = record(a.config_dir, json.loads(a.json))
    except (Failure, OSError, subprocess.TimeoutExpired, ValueError, KeyError) as exc:
        print(json.dumps({"error": f"{a.cmd}: {exc}"}))
        return 1
    print(json.dumps(doc, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
