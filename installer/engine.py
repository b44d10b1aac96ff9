"""The install engine: roles applied through the pyinfra Python API, with no UI code.

``plan()`` prepares every role with change detection on and executes nothing; ``apply()``
executes them. Both report through an ``on_event`` callback (one event when an operation starts
and one when it ends, with changed/failed and timing), which the CLI prints and a TUI can show.

Hosts run in *phases* by group: half-stack first, then the manager, the agents, then the storage
proxies, so that a later group can rely on what an earlier one started. The roles come from the
catalog (roles/catalog.py): in a phase, a host gets its group's enabled roles in catalog order,
and a host in several groups (all-in-one) gets each role once.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import gevent
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.facts import get_fact
from pyinfra.api.operations import run_host_op
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host, ctx_state

from roles import catalog
from roles import settings as settings_mod
from roles.catalog import Role
from roles.settings import Settings

from . import inventory as inventory_mod

RoleFn = Callable[..., Any]  # a pyinfra @deploy function taking (settings)
RoleLike = Role | RoleFn  # a catalog role, or its @deploy function (tests, ad-hoc use)

logging.getLogger("pyinfra").addHandler(logging.NullHandler())
logging.getLogger("pyinfra").propagate = False


def verbose_logging() -> None:
    """Send pyinfra's own log (commands, noop reasons, failures) to stderr."""
    log = logging.getLogger("pyinfra")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("pyinfra: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


@dataclass
class OpRecord:
    phase: str
    host: str
    role: str
    name: str
    conditional: bool = False
    changed: bool | None = None  # apply: did change; plan: would change
    ok: bool | None = None
    seconds: float | None = None
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.role} | {self.name}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"label": self.label}


@dataclass
class Event:
    kind: Literal["phase", "start", "end"]
    phase: str
    op: OpRecord | None = None
    index: int = 0  # 1-based position of the op in its phase
    total: int = 0  # ops in the phase


EventHandler = Callable[[Event], None]


@dataclass
class Phase:
    name: str
    roles: dict[str, list[Role]]  # host name -> roles, in order

    def __post_init__(self) -> None:
        self.roles = {host: [catalog.of(r) for r in roles] for host, roles in self.roles.items()}


@dataclass
class RunResult:
    mode: Literal["plan", "apply"]
    ops: list[OpRecord] = field(default_factory=list)
    failed: bool = False
    error: str | None = None
    settings: dict[str, Settings] = field(default_factory=dict)

    @property
    def changed(self) -> list[OpRecord]:
        return [op for op in self.ops if op.changed]

    def changed_by_host(self, host: str) -> dict[str, bool]:
        return {op.label: bool(op.changed) for op in self.ops if op.host == host}


# -- roles per group ----------------------------------------------------------------------------

def phases_for(inv: inventory_mod.Inventory) -> list[Phase]:
    """One phase per group (in :data:`roles.catalog.GROUPS` order) with the roles each of its
    hosts has not had in an earlier phase, in catalog order, optional ones where enabled."""
    done: dict[str, set[str]] = {}
    phases = []
    for group in catalog.GROUPS:
        roles: dict[str, list[Role]] = {}
        for host in inv.groups.get(group, []):
            applied = done.setdefault(host, set())
            s = settings_mod.build(inv.data.get(host, {}), {})
            wanted = [r for r in catalog.for_group(group) if r.name not in applied and r.enabled(s)]
            applied.update(r.name for r in wanted)
            if wanted:
                roles[host] = wanted
        if roles:
            phases.append(Phase(group, roles))
    return phases


def role_name(role: RoleLike) -> str:
    return catalog.of(role).name


# -- pyinfra plumbing -----------------------------------------------------------------------------

def _new_state(targets: Sequence[tuple[str, dict[str, Any]]], check_for_changes: bool) -> State:
    config = Config()
    state = State(inventory=Inventory((list(targets), {})), config=config,
                  check_for_changes=check_for_changes)
    state.set_stage(StateStage.Connect)
    connect_all(state)
    missing = [h.name for h in state.inventory if not h.connected]
    if missing:
        raise RuntimeError(f"could not connect to {', '.join(missing)}")
    return state


def read_facts(targets: Sequence[tuple[str, dict[str, Any]]], fact: Any, **kwargs: Any
               ) -> dict[str, Any]:
    """Read one fact from every target (no operations)."""
    state = _new_state(targets, check_for_changes=False)
    try:
        state.set_stage(StateStage.Prepare)
        return {h.name: get_fact(state, h, fact, kwargs=kwargs) for h in state.inventory}
    finally:
        state.set_stage(StateStage.Disconnect)
        disconnect_all(state)


def resolve_secrets(targets: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Secrets kept on the hosts (first host that has a value wins), completed with fresh
    values for any that is missing. A rerun therefore reuses what the first run generated."""
    from roles._facts import FileText

    found: dict[str, str] = {}
    by_path: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, data in targets.items():
        path = settings_mod.build(data, {}).secrets_path
        by_path.setdefault(path, []).append((name, data))
    for path, group in by_path.items():
        texts = read_facts(group, FileText, path=path)
        for name, _ in group:
            for key, value in settings_mod.parse_secrets(texts.get(name) or "").items():
                found.setdefault(key, value)
    return settings_mod.generate_secrets(found)


def _finish(rec: OpRecord, meta: Any, seconds: float) -> None:
    rec.ok = meta.did_succeed()
    rec.changed = meta.did_change()
    rec.seconds = round(seconds, 3)
    if not rec.ok:
        lines = [line.line for line in (meta._combined_output or [])]
        rec.error = "\n".join(lines[-40:]) or "failed (no output)"


def _execute(state: State, records: dict[tuple[str, str], OpRecord], order: list[str],
             phase: str, on_event: EventHandler | None) -> None:
    """Run each host's operations in order, hosts in parallel and independent of each other
    (a slow host does not hold the others at every step). A host stops at its first failure."""
    total = {h.name: sum(1 for op_hash in order if (h.name, op_hash) in records)
             for h in state.inventory}

    def run_host(host: Any) -> None:
        index = 0
        for op_hash in order:
            rec = records.get((host.name, op_hash))
            if rec is None:
                continue
            index += 1
            if on_event:
                on_event(Event("start", phase, rec, index, total[host.name]))
            t0 = time.monotonic()
            with ctx_host.use(host):
                ok = run_host_op(state, host, op_hash)
            _finish(rec, state.ops[host][op_hash].operation_meta, time.monotonic() - t0)
            if on_event:
                on_event(Event("end", phase, rec, index, total[host.name]))
            if not ok:
                return

    state.is_executing = True
    with ctx_state.use(state):
        greenlets = [state.pool.spawn(run_host, host) for host in state.inventory]
        gevent.joinall(greenlets)
    for g in greenlets:
        if g.exception is not None:
            raise g.exception


def _prepare(state: State, phase: Phase, settings: dict[str, Settings]
             ) -> dict[tuple[str, str], OpRecord]:
    """Add every role's operations; return one record per (host, op hash)."""
    state.set_stage(StateStage.Prepare)
    records: dict[tuple[str, str], OpRecord] = {}
    for host in state.inventory:
        for role in phase.roles[host.name]:
            before = len(host.op_hash_order)
            add_deploy(state, role.deploy, settings[host.name], host=host)
            for op_hash in host.op_hash_order[before:]:
                data = state.ops[host][op_hash]
                records[(host.name, op_hash)] = OpRecord(
                    phase=phase.name,
                    host=host.name,
                    role=role.name,
                    name=data.global_arguments.get("name") or "operation",
                    conditional=bool(data.global_arguments.get("_if")),
                )
    return records


def run(targets: dict[str, dict[str, Any]], phases: Sequence[Phase], *, dry: bool = False,
        on_event: EventHandler | None = None) -> RunResult:
    """Plan (``dry``) or apply ``phases`` on ``targets`` ({pyinfra host name: host data})."""
    result = RunResult(mode="plan" if dry else "apply")
    secrets = resolve_secrets(targets)
    result.settings = {name: settings_mod.build(data, secrets) for name, data in targets.items()}
    for phase in phases:
        if on_event:
            on_event(Event("phase", phase.name))
        state = _new_state([(h, targets[h]) for h in phase.roles], check_for_changes=dry)
        try:
            records = _prepare(state, phase, result.settings)
            order = state.get_op_order()
            if dry:
                totals = Counter(host_name for host_name, _ in records)
                counts: Counter[str] = Counter()
                for (host_name, op_hash), rec in records.items():
                    host = state.inventory.get_host(host_name)
                    rec.changed = bool(state.ops[host][op_hash].operation_meta._maybe_is_change)
                    rec.ok = True
                    counts[host_name] += 1
                    if on_event:
                        on_event(Event("end", phase.name, rec, counts[host_name],
                                       totals[host_name]))
                result.ops.extend(_in_order(records, order))
                continue
            state.set_stage(StateStage.Execute)
            _execute(state, records, order, phase.name, on_event)
            result.ops.extend(_in_order(records, order))
            failed = [r for r in records.values() if r.ok is False]
            if failed:
                result.failed = True
                result.error = f"{failed[0].host}: {failed[0].label} failed"
            if result.failed:
                break
        finally:
            state.set_stage(StateStage.Disconnect)
            disconnect_all(state)
    return result


def _in_order(records: dict[tuple[str, str], OpRecord], order: list[str]) -> list[OpRecord]:
    pos = {op_hash: i for i, op_hash in enumerate(order)}
    return [rec for (_, op_hash), rec in sorted(records.items(), key=lambda kv: pos[kv[0][1]])]


# -- high level ----------------------------------------------------------------------------------

def plan(inv: inventory_mod.Inventory, on_event: EventHandler | None = None) -> RunResult:
    return run(inv.data, phases_for(inv), dry=True, on_event=on_event)


def apply(inv: inventory_mod.Inventory, on_event: EventHandler | None = None) -> RunResult:
    return run(inv.data, phases_for(inv), dry=False, on_event=on_event)


def apply_roles(target: str, roles: Sequence[RoleLike], on_event: EventHandler | None = None,
                **host_data: Any) -> dict[str, bool]:
    """Apply roles to one target (tests, ad-hoc use); return {op label: changed}; raise on
    failure."""
    result = run({target: host_data}, [Phase("roles", {target: [catalog.of(r) for r in roles]})],
                 on_event=on_event)
    if result.failed:
        bad = [op for op in result.ops if op.ok is False]
        detail = f"{bad[0].label}: {bad[0].error}" if bad else result.error
        raise RuntimeError(f"deploy failed on {target}: {detail}")
    return result.changed_by_host(target)


def status(inv: inventory_mod.Inventory) -> list[dict[str, Any]]:
    """One row per (host, service of its enabled roles, in catalog order): which manager runs
    it, its state there, and whether its readiness check passes. Reads facts only."""
    from roles._facts import Check, ServiceManager, SupervisorState, SystemdUnit

    rows: list[dict[str, Any]] = []
    targets = [(h, inv.data[h]) for h in inv.hosts]
    state = _new_state(targets, check_for_changes=False)
    try:
        state.set_stage(StateStage.Prepare)
        for host in state.inventory:
            s = settings_mod.build(inv.data[host.name], {})
            kind = get_fact(state, host, ServiceManager)
            sup = get_fact(state, host, SupervisorState) if kind == "supervisor" else None
            for role in catalog.roles_for_host(inv.groups, host.name, s):
                group = next(g for g in role.groups if host.name in inv.groups.get(g, []))
                for svc in role.services(s):
                    if sup is not None:
                        st = sup["programs"].get(svc.program, "external" if sup["up"] else
                                                 "supervisord down")
                        if svc.name == "dockerd" and svc.program not in sup["programs"]:
                            st = "external"
                    else:
                        unit = get_fact(state, host, SystemdUnit, kwargs={"unit": svc.unit})
                        st = f"{unit['active']}/{unit['enabled']}"
                    ready = get_fact(state, host, Check, kwargs={"cmd": svc.ready})
                    rows.append({"host": host.name, "group": group, "service": svc.name,
                                 "manager": kind, "state": st, "ready": ready})
    finally:
        state.set_stage(StateStage.Disconnect)
        disconnect_all(state)
    return rows
