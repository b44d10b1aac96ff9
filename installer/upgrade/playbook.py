"""The upgrade playbook: check, upgrade step by step, roll back. No UI code: progress goes to an
``on_event`` callback (the CLI prints it, a TUI can show it) and to a JSON-lines record.

A step ``A -> B`` on every host of the inventory:

1. **preflight** (reads only): every host is at A; the database's migration head is A's (for a
   major step this is what the original's ``apply-missing-revisions`` needs: the schema is
   exactly the previous line's latest patch, so ``db upgrade`` applies every missing revision);
   the database, etcd and Redis answer; disk for the backup; running sessions listed, and a
   major step refused while any runs;
2. **prepare**: B's code and virtual environment under ``<venv>/../releases/B/`` on every host,
   while A still serves (no downtime yet); the venv starts as a relocated copy of A's, so pip
   installs only B itself and the dependencies B changed;
3. **backup** on every host (``hostops.py backup``): the first manager host dumps the database
   and etcd; every host keeps its configs and half-stack configuration;
4. **stop** the bai services (other hosts first, the managers last) -- a major step only;
5. **switch** ``/opt/bai/venv`` to B's venv (one rename; a plain-directory venv from before
   per-release venvs is first moved to ``releases/A/venv``);
6. **converge** with B's installer (the tree: this engine, ``engine.apply``: the manager and its
   migration first, then the agents and the storage proxies, each started in dependency order).
   A **patch** step to the tree rolls instead (:func:`converge_rolling`), with every session
   kept running: the half-stack and the manager with its migration, the storage proxies, then
   the agents ONE AT A TIME (drained, restarted onto B, back with their containers re-adopted,
   undrained: installer/upgrade/rolling.py, run on the first manager host), then the proxies and
   the webserver; the record has each agent's drain, restart and ready;
7. **verify** on the first manager host: the version endpoint, every agent ALIVE, a session runs
   ``print(1)``;
8. **record** the release on every host (``/etc/backend.ai/release.toml``).

A failure in 4-8 rolls the step back at once (:func:`rollback_step`): stop, switch the venv back,
restore the database, etcd, configs and half-stack configuration, start in order, verify. Every
phase is a JSON line in ``<record_dir>/<run>.jsonl``; ``bai-install rollback`` reads the newest
completed step from there.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyinfra.api.deploy import deploy
from pyinfra.api.facts import FactBase
from pyinfra.operations import files, server

from installer import engine
from installer import inventory as inventory_mod
from roles import settings as settings_mod
from roles.catalog import Role
from roles.settings import Settings

from . import paths as paths_mod
from .releases import Manifest, Release
from .releases import load as load_manifest

REPO = Path(__file__).resolve().parents[2]
HOSTOPS = Path(__file__).with_name("hostops.py")
#: Releases from this config-version on write the install record; older installs are
#: recognised by their database's migration head.
RECORD_SINCE_CONFIG_VERSION = 3
DEFAULT_RECORD_DIR = "/var/lib/bai/upgrades"
#: pip arguments for building a release's venv on a host (e.g. ``--find-links /wheels``)
PIP_ARGS_ENV = "BAI_UPGRADE_PIP_ARGS"

Emit = Callable[[dict[str, Any]], None]


class Refused(Exception):
    """The upgrade may not start; nothing was changed."""


class StepFailed(Exception):
    """A step failed after it changed something (it was rolled back when ``rolled_back``)."""

    def __init__(self, message: str, rolled_back: bool | None = None) -> None:
        super().__init__(message)
        self.rolled_back = rolled_back


# -- running hostops.py on the hosts, through the install engine ---------------------------------

def releases_dir(s: Settings) -> str:
    return str(Path(s.venv).parent / "releases")


def hostops_cmd(s: Settings, *args: str, or_else: str = "") -> str:
    """A shell command running hostops.py with the host's python3. The script travels inside
    the command (a here-document), so nothing needs copying first and the host's bai code,
    whatever its release, plays no part. ``or_else``: what runs when it fails (``true``)."""
    argv = ["--config-dir", s.config_dir, "--state-dir", s.state_dir, "--venv", s.venv,
            "--releases", releases_dir(s), *args]
    tail = f" || {or_else}" if or_else else ""
    return (f"python3 - {shlex.join(argv)} <<'BAI_HOSTOPS_EOF'{tail}\n{HOSTOPS.read_text()}\n"
            "BAI_HOSTOPS_EOF")


class HostOps(FactBase[dict[str, Any]]):
    """The JSON answer of a read-only hostops.py command (detect, health, sessions, free)."""

    def command(self, cmd: str) -> str:
        return cmd  # built with or_else="true": a fact command must not fail

    def process(self, output: list[str]) -> dict[str, Any]:
        for line in reversed(output):
            if line.startswith("{"):
                doc: dict[str, Any] = json.loads(line)
                return doc
        return {"error": "no answer: " + " ".join(output)[-500:]}

    @staticmethod
    def default() -> dict[str, Any]:
        return {"error": "no answer"}


def _settings(inv: inventory_mod.Inventory, host: str) -> Settings:
    return settings_mod.build(inv.data.get(host, {}), {})


def read(inv: inventory_mod.Inventory, hosts: Sequence[str], *args: str) -> dict[str, Any]:
    """Run a read-only hostops command on ``hosts``; {host: answer}."""
    out: dict[str, Any] = {}
    for host in hosts:
        cmd = hostops_cmd(_settings(inv, host), *args, or_else="true")
        try:
            out.update(engine.read_facts([(host, inv.data.get(host, {}))], HostOps, cmd=cmd))
        except Exception as exc:  # pyinfra says "No hosts remaining!" for a host it lost
            raise RuntimeError(f"{host}: could not read its state (unreachable? "
                               f"{type(exc).__name__}: {exc})") from exc
    return out


def _role(name: str, body: Callable[[Settings], None]) -> Any:
    """An ad-hoc role for one upgrade phase (the engine runs it like an install role)."""
    fn = deploy(name)(body)
    try:
        from roles.catalog import Role
    except ImportError:  # an engine from before the role registry takes the function itself
        return fn
    return Role(name=name, groups=("manager",), deploy=fn)


def act(inv: inventory_mod.Inventory, hosts: Sequence[str], name: str,
        body: Callable[[Settings, str], None], on_event: engine.EventHandler | None = None
        ) -> engine.RunResult:
    """Apply ``body(settings, host)``'s operations on ``hosts`` (in parallel) through the engine;
    raise :class:`StepFailed` naming the failed operation and its output."""
    targets = {h: inv.data.get(h, {}) for h in hosts}
    def bound(host: str) -> Callable[[Settings], None]:
        return lambda s: body(s, host)

    phase_roles = {h: [_role(name, bound(h))] for h in hosts}
    result = engine.run(targets, [engine.Phase(name, phase_roles)], on_event=on_event)
    if result.failed:
        bad = next((op for op in result.ops if op.ok is False), None)
        detail = f"{bad.host}: {bad.name}: {(bad.error or '')[-1500:]}" if bad else result.error
        raise StepFailed(f"{name} failed: {detail}")
    return result


def _shell(label: str, cmd: str) -> None:
    server.shell(name=label, commands=[cmd])


# -- what is installed ---------------------------------------------------------------------------

@dataclass
class HostRelease:
    host: str
    components: list[str]
    version: str | None
    how: str  # "record", "derived from migration head X", or why it is unknown
    migration_head: str | None = None
    venv: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "components": self.components, "version": self.version,
                "how": self.how, "migration_head": self.migration_head, "venv": self.venv}


def installed_release(m: Manifest, doc: dict[str, Any]) -> tuple[str | None, str]:
    """(version, how it is known) from a host's ``detect`` answer."""
    if "error" in doc:
        return None, f"unknown: {doc['error']}"
    record = doc.get("record")
    code = doc.get("code")
    code_version = code.get("version") if isinstance(code, dict) else None
    if isinstance(record, dict) and isinstance(record.get("version"), str):
        if code_version and code_version != record["version"]:
            # the code was changed behind the installer's back (a checkout updated in place)
            return None, (f"unknown: the install record says {record['version']}, the "
                          f"installed code says {code_version}")
        return record["version"], "record"
    if isinstance(code_version, str):
        return code_version, "the installed code's manifest"
    head = doc.get("migration_head")
    if not head:
        if doc.get("has_manager_config"):
            return None, f"unknown: the database did not answer ({doc.get('migration_head_error')})"
        return None, "unknown: no install record, and no manager here to read a schema from"
    older = [r for r in m.by_migration_head(head)
             if r.config_version < RECORD_SINCE_CONFIG_VERSION]
    if not older:
        return None, f"unknown: no release before the install record has migration head {head}"
    return str(older[-1].version), f"derived from migration head {head}"


@dataclass
class Check:
    hosts: list[HostRelease]
    installed: str | None
    target: str
    path: paths_mod.Path | None
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems and self.path is not None and self.path.allowed

    def as_dict(self) -> dict[str, Any]:
        return {"installed": self.installed, "target": self.target, "ok": self.ok,
                "problems": self.problems,
                "path": self.path.as_dict() if self.path else None,
                "hosts": [h.as_dict() for h in self.hosts]}


def _components(inv: inventory_mod.Inventory, host: str, present: list[str]) -> list[str]:
    groups = [g for g in inventory_mod.GROUPS if host in inv.groups.get(g, [])]
    return present or groups


def check(inv: inventory_mod.Inventory, to: str | None = None,
          manifest: Manifest | None = None) -> Check:
    """Every host's installed release, the target (default: the newest) and the path."""
    m = manifest or load_manifest()
    target = to or str(m.current.version)
    docs = read(inv, inv.hosts, "detect")
    hosts = []
    for host in inv.hosts:
        doc = docs.get(host) or {"error": "no answer"}
        version, how = installed_release(m, doc)
        hosts.append(HostRelease(host=host, components=_components(inv, host,
                                                                   doc.get("services") or []),
                                 version=version, how=how,
                                 migration_head=doc.get("migration_head"),
                                 venv=doc.get("venv") or {}))
    problems = [f"{h.host}: release {h.how}" for h in hosts if h.version is None]
    versions = sorted({h.version for h in hosts if h.version})
    if len(versions) > 1:
        problems.append("hosts run different releases (" + ", ".join(
            f"{h.host} {h.version}" for h in hosts) + "): bring them to one first")
    installed = versions[0] if len(versions) == 1 else None
    path = None
    if installed is not None:
        try:
            path = paths_mod.plan(m, installed, target)
        except ValueError as exc:
            problems.append(str(exc))
        if path is not None and not path.allowed:
            problems.append(f"forbidden ({path.rule}): {path.forbidden}")
    return Check(hosts=hosts, installed=installed, target=target, path=path, problems=problems)


# -- releases on the hosts -----------------------------------------------------------------------

def release_tarball(release: Release, cache: Path) -> Path:
    """The release's source as a tar on this machine: the tree (what git would commit) or the
    commit's ``git archive`` (cached: a commit never changes)."""
    cache.mkdir(parents=True, exist_ok=True)
    if release.commit:
        out = cache / f"{release.version}-{release.commit[:12]}.tar"
        if not out.exists():
            part = out.with_suffix(".part")
            with part.open("wb") as f:
                subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar",
                                release.commit], stdout=f, check=True, timeout=300)
            part.rename(out)
        return out
    out = cache / f"{release.version}-tree-{uuid.uuid4().hex[:8]}.tar"
    names = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "-co", "--exclude-standard"],
                           capture_output=True, check=True, timeout=60).stdout.split(b"\0")
    with tarfile.open(out, "w") as tar:
        for raw in names:
            if raw:
                path = REPO / os.fsdecode(raw)
                if path.is_file():
                    tar.add(path, arcname=os.fsdecode(raw), recursive=False)
    return out


def prepare_release(inv: inventory_mod.Inventory, release: Release, tarball: Path,
                    on_event: engine.EventHandler | None = None,
                    pip_args: str | None = None, reuse: bool = True) -> None:
    """B's code in ``releases/B/src`` and its own venv in ``releases/B/venv`` on every host
    (a plain, non-editable install: the venv holds the code it runs). Redone only when the
    source differs from the one a finished venv was built from. ``reuse``: start from a copy of
    the venv in use (only what the dependencies changed is installed) instead of an empty one."""
    import hashlib

    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    extra = pip_args if pip_args is not None else os.environ.get(PIP_ARGS_ENV, "")

    def body(s: Settings, host: str) -> None:
        home = f"{releases_dir(s)}/{release.version}"
        files.directory(name=f"Directory {home}", path=home, mode="755")
        files.put(name=f"Copy release {release.version}'s source", src=str(tarball),
                  dest=f"{home}/src.tar", mode="600")
        q = shlex.quote
        # The venv starts as a relocated copy of the one in use (hostops clone-venv): pip then
        # finds every unchanged dependency installed and adds only what the release changed
        # (from the index or BAI_UPGRADE_PIP_ARGS' wheels); without one, a fresh venv. No
        # bytecode compiled now (12x faster on a busy host; the services compile what they
        # import on first start); the build backend from the venv itself.
        clone = hostops_cmd(s, "clone-venv", f"{home}/venv", or_else="true") if reuse else "true"
        _shell(f"Build release {release.version}'s venv", (
            f"set -e\ncd {q(home)}\n"
            f"if [ \"$(cat .complete 2>/dev/null)\" = {digest} ]; then exit 0; fi\n"
            "rm -rf src venv venv.part .complete; mkdir src; tar -xf src.tar -C src\n"
            f"{clone}\n"
            "[ -x venv/bin/python ] || { rm -rf venv venv.part; python3 -m venv venv; }\n"
            f"venv/bin/pip install -q --disable-pip-version-check --no-compile {extra} "
            "'setuptools>=68' wheel\n"
            f"venv/bin/pip install -q --disable-pip-version-check --no-compile "
            f"--no-build-isolation {extra} ./src\n"
            f"echo {digest} > .complete"))

    act(inv, inv.hosts, f"prepare {release.version}", body, on_event)


# -- the record ----------------------------------------------------------------------------------

class Recorder:
    """One JSON line per phase of a run, in ``<dir>/<run>.jsonl``."""

    def __init__(self, directory: Path, run: str, emit: Emit | None = None) -> None:
        self.path = directory / f"{run}.jsonl"
        self.run = run
        self.emit = emit
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def __call__(self, phase: str, status: str, **detail: Any) -> None:
        line = {"time": time.time(), "run": self.run, "phase": phase, "status": status, **detail}
        with self.path.open("a") as f:
            f.write(json.dumps(line, default=str) + "\n")
        if self.emit:
            self.emit(line)


def last_step(directory: Path) -> dict[str, Any] | None:
    """The newest completed step not rolled back yet, from the records (a chain of steps rolls
    back one step per call, newest first)."""
    if not directory.is_dir():
        return None
    stack: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.jsonl"), key=lambda p: (p.stat().st_mtime, p.name)):
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("phase") == "step" and rec.get("status") == "done":
                stack.append(rec)
            elif rec.get("phase") == "rollback" and rec.get("status") == "done":
                stack = [d for d in stack if d.get("backup_dir") != rec.get("backup_dir")]
    return stack[-1] if stack else None


# -- the step ------------------------------------------------------------------------------------

def _managers(inv: inventory_mod.Inventory) -> list[str]:
    managers = inv.groups.get("manager") or []
    if not managers:
        raise Refused("the inventory has no manager host")
    return managers


def _non_managers(inv: inventory_mod.Inventory) -> list[str]:
    return [h for h in inv.hosts if h not in inv.groups.get("manager", [])]


def preflight(inv: inventory_mod.Inventory, m: Manifest, step: paths_mod.Step,
              backup_root: str) -> dict[str, Any]:
    """Reads only (one hostops round trip per host). Raises :class:`Refused` with every
    problem found."""
    problems: list[str] = []
    first = _managers(inv)[0]
    source = m.get(step.source)
    assert source is not None
    docs = read(inv, inv.hosts, "preflight", backup_root)
    for host in inv.hosts:
        doc = docs.get(host) or {}
        if "error" in doc:
            problems.append(f"{host}: {doc['error']}")
            continue
        version, how = installed_release(m, doc.get("detect") or {})
        if version != str(step.source):
            problems.append(f"{host} runs {version or 'an unknown release'} ({how}), "
                            f"not {step.source}")
        room = doc.get("free") or {}
        if not room.get("enough"):
            problems.append(f"{host}: not enough disk for the backup under {backup_root} "
                            f"({room.get('free')} bytes free, {room.get('needed')} needed)")
    main = docs.get(first) or {}
    head = (main.get("detect") or {}).get("migration_head")
    if head != source.migration_head:
        problems.append(f"the database's migration head is {head}, not {source.migration_head} "
                        f"of {step.source}: it was changed by hand; fix that first")
    health = main.get("health") or {}
    if not health.get("ok"):
        problems.append(f"{first}: the half-stack is not healthy: {health}")
    sessions = main.get("sessions", [])
    if "sessions_error" in main:
        problems.append(f"{first}: cannot list the sessions: {main['sessions_error']}")
    if step.requires_drain and sessions:
        names = ", ".join(f"{s['name'] or s['id']} ({s['status']})" for s in sessions[:20])
        problems.append(f"the major step {step.source} -> {step.target} needs every session "
                        f"ended first ({len(sessions)} running: {names})")
    if problems:
        raise Refused("; ".join(problems))
    return {"health": health, "sessions": sessions,
            "disk": {h: d.get("free") for h, d in docs.items()}}


def _services(inv: inventory_mod.Inventory, action: str, on_event: engine.EventHandler | None
              ) -> None:
    """Stop: the other hosts first, the managers last; start: the other way round."""
    order = [_non_managers(inv), _managers(inv)]
    if action == "start":
        order.reverse()
    for hosts in order:
        if hosts:
            act(inv, hosts, f"{action} services",
                lambda s, h: _shell(f"{action} the bai services", hostops_cmd(s, "services",
                                                                              action)),
                on_event)


def _verify(inv: inventory_mod.Inventory, session: bool, on_event: engine.EventHandler | None,
            deadline: int = 180) -> None:
    first = _managers(inv)[0]
    agents = len(inv.groups.get("agents", []))
    args = ["verify", settings_mod.build(inv.data.get(first, {}), {}).endpoint,
            "--agents", str(agents), "--deadline", str(deadline)]
    if session and agents:
        args.append("--session")
    act(inv, [first], "verify", lambda s, h: _shell("Verify the release", hostops_cmd(s, *args)),
        on_event)


def _record_release(inv: inventory_mod.Inventory, release: Release, previous: str,
                    on_event: engine.EventHandler | None) -> None:
    from roles.bai import tree_release

    commit = release.commit or (tree_release().get("commit") if release.is_tree else None)
    values = {"version": str(release.version), "config-version": release.config_version,
              "migration-head": release.migration_head, "commit": commit or "tree",
              "previous": previous, "installed": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                               time.gmtime())}
    act(inv, inv.hosts, "record", lambda s, h: _shell(
        "Write the install record", hostops_cmd(s, "record", json.dumps(values))), on_event)


Converge = Callable[[inventory_mod.Inventory, Release, engine.EventHandler | None], None]


def converge_tree(inv: inventory_mod.Inventory, release: Release,
                  on_event: engine.EventHandler | None) -> None:
    """The working tree's release: this engine, as ``bai-install install`` runs it."""
    if not release.is_tree:
        # an older release converges with its own installer, on each host (all-in-one hosts:
        # its default inventory is the host itself)
        def body(s: Settings, host: str) -> None:
            cli = f"{releases_dir(s)}/{release.version}/venv/bin/bai-install"
            _shell(f"Install {release.version} with its own installer",
                   f"cd {releases_dir(s)}/{release.version}/src && {cli} install "
                   "--non-interactive")
        act(inv, inv.hosts, f"converge {release.version}", body, on_event)
        return
    result = engine.apply(inv, on_event=on_event)
    if result.failed:
        bad = next((op for op in result.ops if op.ok is False), None)
        detail = f"{bad.host}: {bad.label}: {(bad.error or '')[-1500:]}" if bad else result.error
        raise StepFailed(f"converge failed: {detail}")


# -- a patch step: rolling, with the sessions kept running ----------------------------------------

def _phases_where(inv: inventory_mod.Inventory, keep: Callable[[str, Role], bool]
                  ) -> list[engine.Phase]:
    """The install's phases (engine.phases_for) with only the roles ``keep(host, role)``."""
    out = []
    for phase in engine.phases_for(inv):
        roles = {h: [r for r in rs if keep(h, r)] for h, rs in phase.roles.items()}
        roles = {h: rs for h, rs in roles.items() if rs}
        if roles:
            out.append(engine.Phase(phase.name, roles))
    return out


def _converge_phases(inv: inventory_mod.Inventory, phases: list[engine.Phase], what: str,
                     on_event: engine.EventHandler | None) -> None:
    if not phases:
        return
    result = engine.run(inv.data, phases, on_event=on_event)
    if result.failed:
        bad = next((op for op in result.ops if op.ok is False), None)
        detail = f"{bad.host}: {bad.label}: {(bad.error or '')[-1500:]}" if bad else result.error
        raise StepFailed(f"converge ({what}) failed: {detail}")


def remote_json(inv: inventory_mod.Inventory, host: str, command: str) -> dict[str, Any]:
    """Run ``command`` on ``host`` and return the last JSON line it printed (``{"error": ...}``
    when it failed without one)."""
    return read_cmd(inv, host, f"{command} || true")


def read_cmd(inv: inventory_mod.Inventory, host: str, cmd: str) -> dict[str, Any]:
    answer: dict[str, Any] = engine.read_facts([(host, inv.data.get(host, {}))], HostOps,
                                               cmd=cmd)[host]
    return answer


def converge_rolling(inv: inventory_mod.Inventory, release: Release, rec: Recorder,
                     on_event: engine.EventHandler | None) -> None:
    """A patch step with the new venv already in place (and the daemons' code stamps gone, so
    that each role restarts its daemon): converge in the original's order while sessions keep
    running: the manager with its migration, the storage proxies, then the agents one at a time
    (drained, converged and restarted, back with their containers re-adopted, undrained:
    installer/upgrade/rolling.py on the first manager host), then the rest of the install once
    (half-stack, proxies, webserver, the agents' host roles), every role converged exactly once."""
    agents = inv.groups.get("agents") or []
    converged: set[str] = set()

    def stage(names: set[str], hosts: Sequence[str] | None, what: str) -> None:
        """Converge the roles ``names`` (on ``hosts``; all when None), once each."""
        _converge_phases(inv, _phases_where(inv, lambda h, r: r.name in names and (
            hosts is None or h in hosts)), what, on_event)

    stage({"bai-manager"}, None, "the manager and its migration")
    rec("manager", "done")
    stage({"storage-proxy"}, None, "the storage proxies")
    rec("storage-proxy", "done")
    converged.update({"bai-manager", "storage-proxy"})

    first = _managers(inv)[0]
    s_first = _settings(inv, first)
    rolling = f"{s_first.bin('python')} -m installer.upgrade.rolling --config-dir " \
              f"{shlex.quote(s_first.config_dir)}"
    for index, host in enumerate(agents, 1):
        agent_id = _settings(inv, host).agent.id
        where = {"agent": agent_id, "host": host, "index": index, "total": len(agents)}
        t = time.monotonic()
        doc = remote_json(inv, first, f"{rolling} drain {shlex.quote(agent_id)}")
        if "drained" not in doc:
            rec("agent", "failed", stage="drain", error=doc.get("error"), **where)
            raise StepFailed(f"agent {agent_id} on {host}: {doc.get('error')}")
        drained = doc["drained"]
        rec("agent", "drain", seconds=round(time.monotonic() - t, 1),
            kernels=drained["kernels_before"], **where)
        t = time.monotonic()
        try:
            stage({"bai-agent"}, [host], f"agent {agent_id}")
        except StepFailed as exc:
            rec("agent", "failed", stage="restart", error=str(exc)[-1500:], **where)
            raise
        rec("agent", "restart", seconds=round(time.monotonic() - t, 1), **where)
        t = time.monotonic()
        doc = remote_json(inv, first, f"{rolling} ready {shlex.quote(json.dumps(drained))}")
        if "ready" not in doc:
            rec("agent", "failed", stage="ready", error=doc.get("error"), **where)
            raise StepFailed(f"agent {agent_id} on {host}: {doc.get('error')}")
        ready = doc["ready"]
        rec("agent", "ready", seconds=round(time.monotonic() - t, 1),
            kernels=ready["kernels_after"], restart_seconds=round(ready["restart_seconds"], 1),
            protocol=f"{ready['protocol_before']} -> {ready['protocol_after']}", **where)
    converged.add("bai-agent")

    # the rest of the install, in its order, once: the half-stack, the proxies and the webserver
    # (restarted onto the new code here), the agents' host roles
    from roles import catalog

    rest = {r.name for r in catalog.all_roles()} - converged
    stage(rest, None, "the rest: proxies, webserver, host roles")
    rec("proxies", "done")


@dataclass
class StepBackup:
    """What a rollback of the step needs, per host."""

    run: str
    source: str
    target: str
    backup_dir: str  # the same path on every host
    venvs: dict[str, str | None]  # host -> the venv symlink's target before the step

    def as_dict(self) -> dict[str, Any]:
        return {"step_run": self.run, "from": self.source, "to": self.target,
                "backup_dir": self.backup_dir, "venvs": self.venvs}


def run_step(inv: inventory_mod.Inventory, m: Manifest, step: paths_mod.Step, rec: Recorder, *,
             on_event: engine.EventHandler | None = None, converge: Converge = converge_tree,
             tarball: Path | None = None, cache: Path | None = None, verify_session: bool = True,
             pip_args: str | None = None) -> StepBackup:
    source, target = m.get(step.source), m.get(step.target)
    assert source is not None and target is not None
    first = _managers(inv)[0]
    s_first = _settings(inv, first)
    backup_dir = f"{s_first.state_dir}/upgrades/backups/{rec.run}-{step.source}-{step.target}"
    rec("preflight", "start", **step.as_dict())
    pre = preflight(inv, m, step, str(Path(backup_dir).parent))
    rec("preflight", "done", sessions=pre["sessions"], health=pre["health"])

    t = time.monotonic()
    tar = tarball or release_tarball(target, cache or Path(tempfile.gettempdir()) / "bai-releases")
    prepare_release(inv, target, tar, on_event, pip_args)
    rec("prepare", "done", release=str(target.version), seconds=round(time.monotonic() - t, 1))

    t = time.monotonic()
    detect = read(inv, inv.hosts, "detect")
    venvs = {h: (d.get("venv") or {}).get("symlink") for h, d in detect.items()}

    def backup_body(s: Settings, host: str) -> None:
        args = ["backup", backup_dir, "--release", str(step.source)]
        if host != first:
            args.append("--configs-only")
        _shell("Back up the database, etcd and configs", hostops_cmd(s, *args))

    act(inv, inv.hosts, "backup", backup_body, on_event)
    info = StepBackup(rec.run, str(step.source), str(step.target), backup_dir, venvs)
    rec("backup", "done", seconds=round(time.monotonic() - t, 1), **info.as_dict())

    # a patch step to this tree rolls (sessions kept); a major step, or a patch to an older
    # release (converged by its own installer, all at once), stops everything first
    rolling = step.kind == "patch" and target.is_tree and converge is converge_tree
    try:
        if not rolling:  # a major step: nothing runs across it
            t = time.monotonic()
            _services(inv, "stop", on_event)
            rec("stop", "done", seconds=round(time.monotonic() - t, 1))

        def switch_body(s: Settings, host: str) -> None:
            _shell("Keep the running venv as its release's", hostops_cmd(s, "adopt",
                                                                       str(step.source)))
            _shell(f"Switch the venv to {step.target}", hostops_cmd(
                s, "switch", f"{releases_dir(s)}/{step.target}/venv"))
            if rolling:
                # the running daemons now have new code under them: each restarts in its turn
                # (a code stamp that is gone reads as changed code to its role)
                _shell("Mark the daemons' code as changed",
                       f"rm -f {shlex.quote(s.state_dir)}/*.code")

        act(inv, inv.hosts, "switch", switch_body, on_event)
        # where the old venv now lives (adopted ones moved into releases/A/venv)
        info.venvs = {h: v or f"{releases_dir(_settings(inv, h))}/{step.source}/venv"
                      for h, v in venvs.items()}
        rec("switch", "done", venvs=info.venvs)

        t = time.monotonic()
        if rolling:
            converge_rolling(inv, target, rec, on_event)
        else:
            converge(inv, target, on_event)
        rec("converge", "done", seconds=round(time.monotonic() - t, 1), rolling=rolling)
        t = time.monotonic()
        _verify(inv, verify_session, on_event)
        rec("verify", "done", seconds=round(time.monotonic() - t, 1))
        _record_release(inv, target, str(step.source), on_event)
    except Exception as exc:
        rec("step", "failed", error=str(exc)[-3000:], **info.as_dict())
        try:
            rollback_step(inv, info, rec, on_event=on_event, verify_session=verify_session)
        except Exception as rb_exc:
            rec("rollback", "failed", error=str(rb_exc)[-3000:], **info.as_dict())
            raise StepFailed(f"{exc}; and the rollback failed too: {rb_exc}",
                             rolled_back=False) from exc
        raise StepFailed(f"{exc}; rolled back to {step.source}", rolled_back=True) from exc
    rec("step", "done", **info.as_dict())
    return info


def rollback_step(inv: inventory_mod.Inventory, info: StepBackup, rec: Recorder, *,
                  on_event: engine.EventHandler | None = None, verify_session: bool = True
                  ) -> None:
    """Back to the release before the step: stop, the venv back, restore the backup, start in
    order, verify."""
    first = _managers(inv)[0]
    t = time.monotonic()
    rec("rollback", "start", **info.as_dict())
    _services(inv, "stop", on_event)

    def body(s: Settings, host: str) -> None:
        venv = info.venvs.get(host) or f"{releases_dir(s)}/{info.source}/venv"
        _shell(f"Switch the venv back to {info.source}", hostops_cmd(s, "switch", venv,
                                                                     "--back"))
        _shell("Restore the backup", hostops_cmd(s, "restore", info.backup_dir))

    # the first manager host restores the database and etcd; the others their configs
    act(inv, [first], "restore", body, on_event)
    others = [h for h in inv.hosts if h != first]
    if others:
        act(inv, others, "restore", body, on_event)
    _services(inv, "start", on_event)
    _verify(inv, verify_session, on_event)
    rec("rollback", "done", seconds=round(time.monotonic() - t, 1), **info.as_dict())


# -- high level ----------------------------------------------------------------------------------

def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def upgrade(inv: inventory_mod.Inventory, to: str | None = None, *,
            manifest: Manifest | None = None, record_dir: Path | str = DEFAULT_RECORD_DIR,
            emit: Emit | None = None, on_event: engine.EventHandler | None = None,
            converge: Converge = converge_tree, tarballs: dict[str, Path] | None = None,
            verify_session: bool = True, pip_args: str | None = None) -> dict[str, Any]:
    """Check, then run every step of the path. Raises :class:`Refused` (nothing changed) or
    :class:`StepFailed` (the failed step was rolled back; earlier steps stay)."""
    m = manifest or load_manifest()
    c = check(inv, to, m)
    if not c.ok:
        raise Refused("; ".join(c.problems) or "no path")
    assert c.path is not None
    rec = Recorder(Path(record_dir), new_run_id(), emit)
    rec("upgrade", "start", **c.path.as_dict())
    done = []
    for step in c.path.steps:
        t = time.monotonic()
        tar = (tarballs or {}).get(str(step.target))
        run_step(inv, m, step, rec, on_event=on_event, converge=converge, tarball=tar,
                 verify_session=verify_session, pip_args=pip_args)
        done.append({**step.as_dict(), "seconds": round(time.monotonic() - t, 1)})
    rec("upgrade", "done", steps=done)
    return {"run": rec.run, "record": str(rec.path), "steps": done, "from": c.installed,
            "to": c.target}


def rollback(inv: inventory_mod.Inventory, *, record_dir: Path | str = DEFAULT_RECORD_DIR,
             emit: Emit | None = None, on_event: engine.EventHandler | None = None,
             verify_session: bool = True) -> dict[str, Any]:
    """Undo the last completed step (from the records), restoring its backup."""
    last = last_step(Path(record_dir))
    if last is None:
        raise Refused(f"no completed upgrade step to roll back in {record_dir}")
    info = StepBackup(run=last["step_run"], source=last["from"], target=last["to"],
                      backup_dir=last["backup_dir"], venvs=last["venvs"])
    c = check(inv, None)
    wrong = [h for h in c.hosts if h.version != info.target]
    if wrong:
        raise Refused("the hosts are not at the release the last step installed (" + ", ".join(
            f"{h.host} {h.version}" for h in wrong) + f", expected {info.target})")
    rec = Recorder(Path(record_dir), new_run_id(), emit)
    rollback_step(inv, info, rec, on_event=on_event, verify_session=verify_session)
    return {"run": rec.run, "record": str(rec.path), "from": info.target, "to": info.source}
