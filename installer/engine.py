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

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from roles import catalog
from roles import settings as settings_mod
from roles.catalog import Role
from roles.settings import Settings

from . import inventory as inventory_mod
from . import pyinfra_driver as driver

RoleFn = Callable[..., Any]  # a pyinfra @deploy function taking (settings)
RoleLike = Role | RoleFn  # a catalog role, or its @deploy function (tests, ad-hoc use)

verbose_logging = driver.verbose_logging


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

    def by_host(self) -> dict[str, dict[str, list[OpRecord]]]:
        """{host: {role: its operations, in order}}, hosts and roles in the order they ran (or
        would run)."""
        out: dict[str, dict[str, list[OpRecord]]] = {}
        for op in self.ops:
            out.setdefault(op.host, {}).setdefault(op.role, []).append(op)
        return out


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


# -- running phases through the pyinfra driver ----------------------------------------------------

def read_facts(targets: Sequence[tuple[str, dict[str, Any]]], fact: Any, **kwargs: Any
               ) -> dict[str, Any]:
    """Read one fact from every target (no operations)."""
    return driver.read_facts(targets, fact, **kwargs)


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


def _prepare(session: driver.Session, phase: Phase, settings: dict[str, Settings]
             ) -> dict[tuple[str, str], OpRecord]:
    """Add every role's operations; return one record per (host, op id)."""
    records: dict[tuple[str, str], OpRecord] = {}
    for host in session.host_names:
        for role in phase.roles[host]:
            for op in session.add(host, role.deploy, settings[host]):
                records[(host, op.op_id)] = OpRecord(phase=phase.name, host=host, role=role.name,
                                                     name=op.name, conditional=op.conditional)
    return records


def _execute(session: driver.Session, records: dict[tuple[str, str], OpRecord], phase: str,
             on_event: EventHandler | None) -> None:
    """Run the phase; one event when each operation starts on a host and one when it ends."""
    totals = Counter(host for host, _ in records)
    index: dict[tuple[str, str], int] = {}
    started: Counter[str] = Counter()

    def on_start(host: str, op_id: str) -> None:
        started[host] += 1
        index[(host, op_id)] = started[host]
        if on_event:
            on_event(Event("start", phase, records[(host, op_id)], started[host], totals[host]))

    def on_end(host: str, op_id: str, outcome: driver.OpOutcome) -> None:
        rec = records[(host, op_id)]
        rec.ok, rec.changed, rec.seconds, rec.error = (outcome.ok, outcome.changed, outcome.seconds,
                                                       outcome.error)
        if on_event:
            on_event(Event("end", phase, rec, index[(host, op_id)], totals[host]))

    session.execute(on_start=on_start, on_end=on_end)


def run(targets: dict[str, dict[str, Any]], phases: Sequence[Phase], *, dry: bool = False,
        on_event: EventHandler | None = None) -> RunResult:
    """Plan (``dry``) or apply ``phases`` on ``targets`` ({pyinfra host name: host data})."""
    result = RunResult(mode="plan" if dry else "apply")
    secrets = resolve_secrets(targets)
    result.settings = {name: settings_mod.build(data, secrets) for name, data in targets.items()}
    for phase in phases:
        if on_event:
            on_event(Event("phase", phase.name))
        # the phase's group is each host's pyinfra group (roles/overlay.py: manager-group hosts
        # join the swarm as managers)
        with driver.session([(h, targets[h]) for h in phase.roles], check_for_changes=dry,
                            groups={phase.name: list(phase.roles)}) as session:
            records = _prepare(session, phase, result.settings)
            order = session.op_order()
            if dry:
                # host by host, each host's operations in order (so grouped by role)
                totals = Counter(host for host, _ in records)
                hosts = {h: i for i, h in enumerate(session.host_names)}
                planned = sorted(_in_order_items(records, order), key=lambda kv: hosts[kv[0][0]])
                counts: Counter[str] = Counter()
                for (host, op_id), rec in planned:
                    rec.changed = session.will_change(host, op_id)
                    rec.ok = True
                    counts[host] += 1
                    if on_event:
                        on_event(Event("end", phase.name, rec, counts[host], totals[host]))
                result.ops.extend(rec for _, rec in planned)
                continue
            _execute(session, records, phase.name, on_event)
            result.ops.extend(_in_order(records, order))
            failed = [r for r in records.values() if r.ok is False]
            if failed:
                result.failed = True
                result.error = f"{failed[0].host}: {failed[0].label} failed"
                break
    return result


def _in_order_items(records: dict[tuple[str, str], OpRecord], order: list[str]
                    ) -> list[tuple[tuple[str, str], OpRecord]]:
    pos = {op_id: i for i, op_id in enumerate(order)}
    return sorted(records.items(), key=lambda kv: pos[kv[0][1]])


def _in_order(records: dict[tuple[str, str], OpRecord], order: list[str]) -> list[OpRecord]:
    return [rec for _, rec in _in_order_items(records, order)]


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
    with driver.session([(h, inv.data[h]) for h in inv.hosts]) as session:
        for host in session.host_names:
            s = settings_mod.build(inv.data[host], {})
            kind = session.fact(host, ServiceManager)
            sup = session.fact(host, SupervisorState) if kind == "supervisor" else None
            for role in catalog.roles_for_host(inv.groups, host, s):
                group = next(g for g in role.groups if host in inv.groups.get(g, []))
                for svc in role.services(s):
                    if sup is not None:
                        st = sup["programs"].get(svc.program, "external" if sup["up"] else
                                                 "supervisord down")
                        if svc.name == "dockerd" and svc.program not in sup["programs"]:
                            st = "external"
                    else:
                        unit = session.fact(host, SystemdUnit, unit=svc.unit)
                        st = f"{unit['active']}/{unit['enabled']}"
                    ready = session.fact(host, Check, cmd=svc.ready)
                    rows.append({"host": host, "group": group, "service": svc.name,
                                 "manager": kind, "state": st, "ready": ready})
    return rows
