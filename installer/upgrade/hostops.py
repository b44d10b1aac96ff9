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
    clone-venv  copy the venv in use to a new release's venv, relocated (pip then adds only what
                the new release's dependencies change)
    health      the database, etcd and Redis the manager uses answer
    sessions    the sessions that hold (or will hold) containers
    preflight   detect + free + health + sessions in one answer
    verify      the version endpoint answers, the agents are ALIVE, a session runs print(1)
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
#: the half-stack's configuration a release writes (e.g. a Redis password since 26.12.0): kept
#: with each backup and put back by a restore, restarting the service whose files differ.
#: service -> (paths, systemd unit, supervisor program)
HALFSTACK: dict[str, tuple[tuple[str, ...], str, str]] = {
    "postgresql": (("/etc/postgresql",), "postgresql.service", "bai-postgresql"),
    "redis": (("/etc/redis",), "redis-server.service", "bai-redis"),
    "etcd": (("/etc/default/etcd",), "etcd.service", "bai-etcd"),
}


class Failure(Exception):
    pass


def _run(cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = 600,
         stdin: bytes | None = None) -> str:
    # (stdin is never inherited: the controller may have sent this script on it)
    proc = subprocess.run(cmd, input=stdin if stdin is not None else b"", capture_output=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
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


_CODE_SCRIPT = """
import json
try:
    from installer.upgrade.releases import load
except ImportError:
    print("null")
else:
    r = load(tree_head="").current
    print(json.dumps({"version": str(r.version), "config-version": r.config_version}))
"""


def code_release(venv: Path) -> dict[str, Any] | None:
    """The release the venv's code says it is (releases from 26.12.1 on ship their manifest);
    None for older code."""
    python = venv / "bin" / "python"
    if not python.exists():
        return None
    try:
        doc = json.loads(_run([str(python), "-c", _CODE_SCRIPT], timeout=60))
    except (Failure, subprocess.TimeoutExpired, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def detect(config_dir: Path, venv: Path) -> dict[str, Any]:
    record = read_record(config_dir)
    head = None
    head_error = None
    if (config_dir / "manager.toml").exists():
        try:
            head = migration_head(config_dir, venv)
        except (Failure, subprocess.TimeoutExpired, OSError, ValueError) as exc:
            head_error = str(exc)
    return {"record": record, "code": code_release(venv), "migration_head": head,
            "migration_head_error": head_error,
            "venv": venv_state(venv), "services": services_present(),
            "has_manager_config": (config_dir / "manager.toml").exists()}


_SQL_SCRIPT = """
import asyncio, json, sys, asyncpg
async def main():
    c = await asyncpg.connect(host=sys.argv[1], port=int(sys.argv[2]), user=sys.argv[3],
                              password=sys.argv[4], database=sys.argv[5], timeout=10)
    try:
        rows = await c.fetch(sys.argv[6])
    finally:
        await c.close()
    print(json.dumps([[str(v) for v in r.values()] for r in rows]))
asyncio.run(main())
"""


def query(config_dir: Path, venv: Path, sql: str) -> list[list[str]]:
    """Rows of ``sql`` on the manager's database, through the venv's asyncpg (the manager host
    need not have psql)."""
    db = db_settings(config_dir)
    if db is None:
        raise Failure("no manager.toml here: not a manager host")
    out = _run([str(venv / "bin" / "python"), "-c", _SQL_SCRIPT, db["host"], db["port"],
                db["user"], db["password"], db["name"], sql], timeout=30)
    rows: list[list[str]] = json.loads(out)
    return rows


#: session statuses that hold (or may soon hold) containers
LIVE = ("PENDING", "SCHEDULED", "PREPARING", "PULLING", "PREPARED", "CREATING", "RUNNING",
        "RESTARTING", "RUNNING_DEGRADED", "TERMINATING")


def live_sessions(config_dir: Path, venv: Path) -> list[dict[str, str]]:
    statuses = ", ".join(f"'{s}'" for s in LIVE)
    rows = query(config_dir, venv, "SELECT id, coalesce(name, ''), status FROM sessions "
                                   f"WHERE status IN ({statuses}) ORDER BY created_at")
    return [{"id": r[0], "name": r[1], "status": r[2]} for r in rows]


def _redis_ping(addr: str, password: str | None) -> bool:
    import socket

    host, _, port = addr.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        wire = b""
        if password:
            wire += (f"*2\r\n$4\r\nAUTH\r\n${len(password.encode())}\r\n".encode()
                     + password.encode() + b"\r\n")
        sock.sendall(wire + b"*1\r\n$4\r\nPING\r\n")
        answer = b""
        while b"PONG" not in answer and b"-" not in answer and len(answer) < 4096:
            chunk = sock.recv(1024)
            if not chunk:
                break
            answer += chunk
        return b"+PONG" in answer and b"-" not in answer


def health(config_dir: Path, venv: Path) -> dict[str, Any]:
    """Is the database, etcd and Redis this host's manager uses answering?"""
    out: dict[str, Any] = {}
    try:
        query(config_dir, venv, "SELECT 1")
        out["database"] = "ok"
    except (Failure, subprocess.TimeoutExpired, OSError) as exc:
        out["database"] = f"failed: {exc}"
    etcd = etcd_settings(config_dir)
    keys: dict[str, str] = {}
    if etcd is not None:
        try:
            with urllib.request.urlopen(f"http://{etcd['addr']}/health", timeout=5) as resp:
                ok = json.loads(resp.read(4096)).get("health") in ("true", True)
            keys = etcd_dump(etcd)
            out["etcd"] = "ok" if ok else "unhealthy"
        except (OSError, ValueError) as exc:
            out["etcd"] = f"failed: {exc}"
    prefix = f"/sorna/{etcd['namespace']}/" if etcd else ""
    redis_addr = keys.get(prefix + "config/redis/addr")
    if redis_addr:
        try:
            ping = _redis_ping(redis_addr, keys.get(prefix + "config/redis/password"))
            out["redis"] = "ok" if ping else "no PONG"
        except OSError as exc:
            out["redis"] = f"failed: {exc}"
    out["ok"] = all(v == "ok" for v in out.values())
    return out


def verify(config_dir: Path, venv: Path, endpoint: str, agents: int, session: bool,
           deadline: float) -> dict[str, Any]:
    """After an upgrade (or a rollback): the version endpoint answers, ``agents`` agents are
    ALIVE, and a session runs ``print(1)``. Polls each until ``deadline`` seconds."""
    end = time.monotonic() + deadline
    out: dict[str, Any] = {}
    last = ""
    while True:
        try:
            with urllib.request.urlopen(endpoint.rstrip("/") + "/", timeout=5) as resp:
                out["version"] = json.loads(resp.read(65536))
            break
        except (OSError, ValueError) as exc:
            last = str(exc)
        if time.monotonic() > end:
            raise Failure(f"the manager at {endpoint} does not answer: {last}")
        time.sleep(0.5)
    while agents:
        rows = query(config_dir, venv, "SELECT id FROM agents WHERE status = 'ALIVE'")
        if len(rows) >= agents:
            out["agents_alive"] = sorted(r[0] for r in rows)
            break
        if time.monotonic() > end:
            raise Failure(f"{len(rows)} of {agents} agents ALIVE after {deadline:.0f} s")
        time.sleep(1)
    if session:
        env_file = config_dir / "client.env"
        left = max(30, int(end - time.monotonic()))
        script = (f'set -a; . "$1"; set +a; exec timeout {left} "$2" run --rm -c "print(1)" '
                  "python")
        text = _run(["bash", "-c", script, "verify", str(env_file),
                     str(venv / "bin" / "backend.ai")], timeout=left + 10)
        if "1" not in text.split():
            raise Failure(f"the test session printed {text[-500:]!r}, not 1")
        out["session"] = "print(1) ran"
    return out


def preflight(config_dir: Path, venv: Path, backup_root: Path) -> dict[str, Any]:
    """One round trip before a step: what ``detect``, ``free`` and, on a manager host,
    ``health`` and ``sessions`` answer."""
    doc: dict[str, Any] = {"detect": detect(config_dir, venv),
                           "free": free(backup_root, config_dir)}
    if db_settings(config_dir) is not None:
        doc["health"] = health(config_dir, venv)
        try:
            doc["sessions"] = live_sessions(config_dir, venv)
        except (Failure, subprocess.TimeoutExpired, OSError, ValueError) as exc:
            doc["sessions_error"] = str(exc)
    return doc


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
           release: str | None, configs_only: bool = False) -> dict[str, Any]:
    """``configs_only``: every manager host but the first (the database and etcd are the
    cluster's, dumped once)."""
    t0 = time.monotonic()
    room = free(dest.parent, config_dir)
    if not room["enough"]:
        raise Failure(f"not enough disk for the backup under {room['path']}: "
                      f"{room['free']} bytes free, {room['needed']} needed")
    dest.mkdir(parents=True, exist_ok=False, mode=0o700)
    meta: dict[str, Any] = {"created": time.time(), "release": release,
                            "venv": venv_state(venv), "parts": {}, "seconds": {}}
    db = None if configs_only else db_settings(config_dir)
    if db is not None:
        t = time.monotonic()
        out = dest / "database.dump"
        _run(["pg_dump", "--format=custom", "--no-owner", f"--file={out}"], env=_pg_env(db),
             timeout=3600)
        meta["parts"]["database"] = {"file": out.name, "sha256": _sha256(out),
                                     "bytes": out.stat().st_size, "db": db["name"]}
        meta["seconds"]["database"] = round(time.monotonic() - t, 3)
    etcd = None if configs_only else etcd_settings(config_dir)
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
    present = {name: [p for p in paths if Path(p).exists()]
               for name, (paths, _, _) in HALFSTACK.items()}
    present = {name: paths for name, paths in present.items() if paths}
    if present:
        with tarfile.open(dest / "halfstack.tar", "w") as tar:
            for hs_paths in present.values():
                for hs_path in hs_paths:
                    tar.add(hs_path, arcname=hs_path.lstrip("/"))
        meta["parts"]["halfstack"] = {"file": "halfstack.tar", "services": present}
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


def _files_under(paths: list[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for path in paths:
        p = Path(path)
        if p.is_file():
            out[str(p)] = p.read_bytes()
        elif p.is_dir():
            for root, _, files in os.walk(p):
                for name in files:
                    full = os.path.join(root, name)
                    if os.path.isfile(full) and not os.path.islink(full):
                        out[full] = Path(full).read_bytes()
    return out


def _restore_halfstack(tar_path: Path, services: dict[str, list[str]]) -> list[str]:
    """Put the half-stack's configuration files back where they differ; restart those services
    (a rollback across the Redis password, for one, must take it away again)."""
    restarted = []
    with tarfile.open(tar_path) as tar:
        saved = {"/" + m.name: m for m in tar.getmembers() if m.isfile()}
        for name, paths in services.items():
            mine = {k: m for k, m in saved.items()
                    if any(k == p or k.startswith(p.rstrip("/") + "/") for p in paths)}
            now = _files_under(paths)
            wanted = {}
            for k, m in mine.items():
                data = tar.extractfile(m)
                assert data is not None
                wanted[k] = (data.read(), m)
            if {k: v[0] for k, v in wanted.items()} == now:
                continue
            for k in set(now) - set(wanted):
                os.unlink(k)
            for k, (content, m) in wanted.items():
                target = Path(k)
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.restore")
                tmp.write_bytes(content)
                os.chmod(tmp, m.mode & 0o7777)
                os.chown(tmp, m.uid, m.gid)
                os.replace(tmp, target)
            _, unit, program = HALFSTACK[name]
            if _systemd():
                _run(["systemctl", "restart", unit], timeout=180)
            else:
                _run(["supervisorctl", "restart", program], timeout=180)
            restarted.append(name)
    return restarted


def restore(src: Path, config_dir: Path, control: bool = True) -> dict[str, Any]:
    meta = json.loads((src / "backup.json").read_text())
    out: dict[str, Any] = {"dir": str(src), "release": meta.get("release"), "seconds": {}}
    hs_part = meta["parts"].get("halfstack")
    if hs_part and control:
        out["halfstack_restarted"] = _restore_halfstack(src / hs_part["file"], hs_part["services"])
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
    try:
        os.rename(venv, home)
    except OSError as exc:
        if exc.errno != 18:  # EXDEV: another file system (or an overlayfs lower layer)
            raise
        part = home.with_name("venv.part")
        shutil.rmtree(part, ignore_errors=True)
        shutil.copytree(venv, part, symlinks=True)
        os.rename(part, home)
        shutil.rmtree(venv)
    os.symlink(home, venv)
    return {"adopted": True, "symlink": str(home)}


def switch(venv: Path, target: Path, back: bool = False) -> dict[str, Any]:
    """Point ``venv`` at ``target`` in one rename(2): there is no moment without a venv.
    ``back`` (a rollback): a venv that is still a plain directory was never switched away from
    (the step failed before), so there is nothing to do."""
    if back and venv.is_dir() and not venv.is_symlink():
        return {"venv": str(venv), "now": str(venv), "was": None, "unchanged": True}
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


def _venv_version(venv: Path) -> tuple[int, int] | None:
    try:
        cfg = (venv / "pyvenv.cfg").read_text()
    except OSError:
        return None
    for line in cfg.splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version", "version_info"):
            parts = value.strip().split(".")
            if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
                return int(parts[0]), int(parts[1])
    return None


def clone_venv(venv: Path, dest: Path) -> dict[str, Any]:
    """Copy the venv now in use (``venv``, resolved) to ``dest`` and relocate it there (the
    scripts' ``#!`` lines and the activate scripts name the venv's path), so that a new release's
    venv starts with every dependency already installed and pip adds only what changed. A copy,
    not links: the old release's venv stays exactly as it was, for a rollback. Answers
    ``cloned: false`` (and copies nothing) when the venv is not one of this host's Python."""
    src = Path(os.path.realpath(venv))
    mine = sys.version_info[:2]
    if not (src / "bin" / "python").exists():
        return {"cloned": False, "why": f"{src} is not a virtual environment"}
    if _venv_version(src) != mine:
        return {"cloned": False, "why": f"{src} is Python {_venv_version(src)}, not {mine}"}
    part = dest.with_name(dest.name + ".part")  # renamed to dest once complete
    for stale in (dest, part):
        if stale.is_symlink():
            stale.unlink()
        elif stale.exists():
            shutil.rmtree(stale)
    t = time.monotonic()
    shutil.copytree(src, part, symlinks=True)
    old_prefixes: set[bytes] = set()
    new_prefix = str(dest).encode()
    for script in sorted((part / "bin").iterdir()):
        if script.is_symlink() or not script.is_file():
            continue
        data = script.read_bytes()
        first, nl, rest = data.partition(b"\n")
        if first.startswith(b"#!") and b"/bin/python" in first:
            interp = first[2:].strip()
            prefix = interp[: interp.rindex(b"/bin/python")]
            if prefix != new_prefix:
                old_prefixes.add(prefix)
                _rewrite(script, b"#!" + new_prefix + interp[len(prefix):] + nl + rest)
    for name in ("activate", "activate.csh", "activate.fish", "Activate.ps1"):
        path = part / "bin" / name
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            for prefix in old_prefixes | {str(src).encode(), str(venv).encode()}:
                data = data.replace(prefix, new_prefix)
            _rewrite(path, data)
    os.rename(part, dest)
    return {"cloned": True, "from": str(src), "relocated": sorted(p.decode() for p in old_prefixes),
            "seconds": round(time.monotonic() - t, 2)}


def _rewrite(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.reloc")
    tmp.write_bytes(data)
    os.chmod(tmp, path.stat().st_mode & 0o7777)
    os.replace(tmp, path)


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
    s.add_argument("--configs-only", action="store_true")
    s = sub.add_parser("restore")
    s.add_argument("dir", type=Path)
    s = sub.add_parser("adopt")
    s.add_argument("version")
    s = sub.add_parser("switch")
    s.add_argument("target", type=Path)
    s.add_argument("--back", action="store_true")
    s = sub.add_parser("services")
    s.add_argument("action", choices=["stop", "start", "restart"])
    s.add_argument("names", nargs="*")
    s = sub.add_parser("record")
    s.add_argument("json")
    s = sub.add_parser("clone-venv")
    s.add_argument("dest", type=Path)
    sub.add_parser("health")
    sub.add_parser("sessions")
    s = sub.add_parser("preflight")
    s.add_argument("backup_root", type=Path)
    s = sub.add_parser("verify")
    s.add_argument("endpoint")
    s.add_argument("--agents", type=int, default=0)
    s.add_argument("--session", action="store_true")
    s.add_argument("--deadline", type=float, default=120)
    a = p.parse_args(argv)
    try:
        if a.cmd == "detect":
            doc = detect(a.config_dir, a.venv)
        elif a.cmd == "free":
            doc = free(a.path, a.config_dir)
        elif a.cmd == "backup":
            doc = backup(a.dir, a.config_dir, a.state_dir, a.venv, a.release, a.configs_only)
        elif a.cmd == "restore":
            doc = restore(a.dir, a.config_dir)
        elif a.cmd == "adopt":
            doc = adopt(a.venv, a.releases, a.version)
        elif a.cmd == "switch":
            doc = switch(a.venv, a.target, a.back)
        elif a.cmd == "services":
            doc = services(a.action, a.names or None)
        elif a.cmd == "record":
            doc = record(a.config_dir, json.loads(a.json))
        elif a.cmd == "clone-venv":
            doc = clone_venv(a.venv, a.dest)
        elif a.cmd == "health":
            doc = health(a.config_dir, a.venv)
        elif a.cmd == "sessions":
            doc = {"sessions": live_sessions(a.config_dir, a.venv)}
        elif a.cmd == "preflight":
            doc = preflight(a.config_dir, a.venv, a.backup_root)
        else:
            doc = verify(a.config_dir, a.venv, a.endpoint, a.agents, a.session, a.deadline)
    except (Failure, OSError, subprocess.TimeoutExpired, ValueError, KeyError) as exc:
        print(json.dumps({"error": f"{a.cmd}: {exc}"}))
        return 1
    print(json.dumps(doc, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
