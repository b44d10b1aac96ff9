"""The ``bai-install upgrade`` screen (Textual), over the upgrade engine (installer/upgrade/playbook.py):

* the cluster: every host, its components and the release each runs (and how that is known);
* the target: only the releases an allowed path leads to from the installed one;
* the path: its steps (patch: sessions keep running; major: every session must end first), or
  why it is forbidden, and the engine's problems (hosts that disagree, unknown releases);
* Upgrade (asks first): live progress per phase (preflight, prepare, backup, stop, switch,
  converge, verify), per host and component (the engine's operations), the preflight results
  (health, running sessions), the backup, the verification; a failed step is rolled back by the
  engine and shown so;
* Rollback (asks first, naming the step and its backup): the last completed step undone.

The engine has no UI code: everything that reads or changes hosts goes through an
:class:`UpgradeBackend` in a worker thread (pyinfra's own thread: installer.tui.backend), and its
progress (the record's JSON lines, the engine's events) comes back with ``call_from_thread``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Header, Label, RichLog, Select, Static

from .. import engine
from .. import inventory as inventory_mod
from ..upgrade import paths as paths_mod
from ..upgrade import playbook
from ..upgrade.releases import Manifest, Version
from ..upgrade.releases import load as load_manifest
from .backend import in_engine_thread

#: The phases of one step, in the engine's order (installer/upgrade/playbook.py run_step).
PHASES: tuple[tuple[str, str], ...] = (
    ("preflight", "versions, health, disk, running sessions"),
    ("prepare", "the target's code and venv on every host"),
    ("backup", "database, etcd, configs, the running venv kept"),
    ("stop", "services stopped: other hosts first, managers last"),
    ("switch", "the venv switched to the target"),
    ("converge", "the target's installer: manager + migration, agents, proxies"),
    ("verify", "version endpoint, agent heartbeats, a session runs print(1)"),
)
Emit = Callable[[dict[str, Any]], None]


class UpgradeBackend:
    """What the screen asks of the installer (the real thing: the playbook over the inventory's
    hosts). Every method may block: the screen calls them from a worker thread."""

    def __init__(self, inventory_path: str | None = None, record_dir: str = playbook.DEFAULT_RECORD_DIR,
                 manifest: Manifest | None = None) -> None:
        self.inventory_path = inventory_path
        self.record_dir = record_dir
        self._manifest = manifest
        self._inventory: inventory_mod.Inventory | None = None

    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = load_manifest()
        return self._manifest

    def _inv(self) -> inventory_mod.Inventory:
        if self._inventory is None:
            self._inventory = inventory_mod.load(self.inventory_path)
        return self._inventory

    def check(self, to: str | None) -> playbook.Check:
        return in_engine_thread(playbook.check, self._inv(), to, self.manifest())

    def last_step(self) -> dict[str, Any] | None:
        return playbook.last_step(Path(self.record_dir))

    def upgrade(self, to: str, emit: Emit, on_event: engine.EventHandler) -> dict[str, Any]:
        return in_engine_thread(playbook.upgrade, self._inv(), to, manifest=self.manifest(),
                                record_dir=self.record_dir, emit=emit, on_event=on_event)

    def rollback(self, emit: Emit, on_event: engine.EventHandler) -> dict[str, Any]:
        return in_engine_thread(playbook.rollback, self._inv(), record_dir=self.record_dir, emit=emit,
                                on_event=on_event)


def allowed_targets(m: Manifest, installed: str) -> list[str]:
    """The releases newer than ``installed`` that an allowed path reaches, oldest first."""
    out = []
    for release in m.releases:
        version = str(release.version)
        if release.version > Version.parse(installed):
            if paths_mod.plan(m, installed, version).allowed:
                out.append(version)
    return out


def describe_path(path: paths_mod.Path) -> str:
    if not path.allowed:
        return f"[red]forbidden[/red] ({path.rule}): {path.forbidden}"
    if not path.steps:
        return "nothing to do: already there"
    lines = []
    for i, step in enumerate(path.steps, 1):
        how = ("major: every session must be ended first" if step.requires_drain
               else "patch: running sessions keep running")
        lines.append(f"{i}. {step.source} -> {step.target}  ({how})")
    return "\n".join(lines)


class Confirm(ModalScreen[bool]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(False)", "No")]

    def __init__(self, question: str, yes: str) -> None:
        super().__init__()
        self.question, self.yes = question, yes

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question, id="question")
            with Horizontal(classes="buttons"):
                yield Button(self.yes, id="yes", variant="warning")
                yield Button("Cancel", id="no")

    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def _no(self) -> None:
        self.dismiss(False)


class UpgradeScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("q", "app.quit", "Quit"), Binding("r", "recheck", "Check again")]

    def __init__(self, backend: UpgradeBackend, to: str | None = None) -> None:
        super().__init__()
        self.backend = backend
        self.wanted = to
        self.check: playbook.Check | None = None
        self.busy = False
        self._step_total = 0
        self._step_index = 0

    # --- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="body"):
            yield Label("Cluster", classes="section")
            yield DataTable(id="cluster", cursor_type="none", show_cursor=False)
            with Horizontal(id="target-row"):
                yield Label("Target release ", id="target-label")
                yield Select[str]([], id="target", prompt="(reading the hosts...)", allow_blank=True)
            yield Static("", id="path")
            yield Static("", id="problems")
            with Horizontal(classes="buttons"):
                yield Button("Upgrade", id="upgrade", variant="primary", disabled=True)
                yield Button("Rollback", id="rollback", variant="warning", disabled=True)
                yield Button("Quit", id="quit")
            yield Static("", id="step")
            yield DataTable(id="phases", cursor_type="none", show_cursor=False)
            yield Static("", id="preflight")
            yield Static("", id="backup")
            yield Static("", id="verify")
            yield Label("Hosts and components", classes="section")
            yield DataTable(id="hosts", cursor_type="none", show_cursor=False)
            yield Static("", id="outcome")
            yield RichLog(id="log", max_lines=2000, wrap=True, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.app.title = "bai-install upgrade"
        for table, columns in (("#cluster", ("Host", "Component", "Release", "How it is known")),
                               ("#phases", ("Phase", "Status", "Seconds", "What")),
                               ("#hosts", ("Host", "Component", "Ops", "Status", "Operation"))):
            widget = self.query_one(table, DataTable)
            for column in columns:
                widget.add_column(column, key=column)
        self._reset_phases()
        self.run_check()

    # --- the cluster, the target and the path ------------------------------------------------

    def action_recheck(self) -> None:
        if not self.busy:
            self.run_check()

    @work(thread=True, exclusive=True, group="check")
    def run_check(self) -> None:
        try:
            c = self.backend.check(self.wanted)
            last = self.backend.last_step()
        except Exception as exc:
            self.app.call_from_thread(self._error, f"cannot read the hosts: {exc}")
            return
        self.app.call_from_thread(self.show_check, c, last)

    def show_check(self, c: playbook.Check, last: dict[str, Any] | None) -> None:
        self.check = c
        table = self.query_one("#cluster", DataTable)
        table.clear()
        for h in c.hosts:
            for component in h.components or ["-"]:
                table.add_row(h.host, component, h.version or "?", h.how)
        select = self.query_one("#target", Select)
        targets = allowed_targets(self.backend.manifest(), c.installed) if c.installed else []
        select.set_options([(t, t) for t in targets])
        select.prompt = "(no newer release an allowed path reaches)" if not targets else "(choose)"
        if c.target in targets:
            select.value = c.target
        elif targets:
            select.value = targets[-1]
        problems = [p for p in c.problems if not p.startswith("forbidden")]
        self.query_one("#problems", Static).update(
            "\n".join(f"[red]refused:[/red] {p}" for p in problems))
        rollback = self.query_one("#rollback", Button)
        rollback.disabled = last is None
        rollback.label = f"Rollback {last['to']} -> {last['from']}" if last else "Rollback"
        self._show_path()

    @on(Select.Changed, "#target")
    def _target_changed(self) -> None:
        self._show_path()

    def _target(self) -> str | None:
        value = self.query_one("#target", Select).value
        return value if isinstance(value, str) else None

    def _show_path(self) -> None:
        c, target = self.check, self._target()
        path_text, ok = "", False
        if c is not None and c.installed is None:
            path_text = "no path: the installed release is not known on every host (see refused)"
        elif c is not None and target is not None:
            path = paths_mod.plan(self.backend.manifest(), c.installed or "", target)
            path_text = f"Path {c.installed} -> {target}:\n" + describe_path(path)
            ok = path.allowed and bool(path.steps) and not [p for p in c.problems if not p.startswith("forbidden")]
        elif c is not None:
            path_text = f"{c.installed} is the newest release an allowed path reaches: nothing to upgrade"
        self.query_one("#path", Static).update(path_text)
        self.query_one("#upgrade", Button).disabled = not ok or self.busy

    # --- upgrade and rollback ----------------------------------------------------------------

    @on(Button.Pressed, "#quit")
    def _quit(self) -> None:
        if not self.busy:
            self.app.exit()

    @on(Button.Pressed, "#upgrade")
    def _ask_upgrade(self) -> None:
        target, c = self._target(), self.check
        if target is None or c is None or self.busy:
            return
        question = (f"Upgrade every host from {c.installed} to {target}?\n"
                    "A backup is taken before each step; a failed step is rolled back.")
        self.app.push_screen(Confirm(question, "Upgrade"), lambda yes: self._start("upgrade", target) if yes else None)

    @on(Button.Pressed, "#rollback")
    def _ask_rollback(self) -> None:
        last = None if self.busy else self.backend.last_step()
        if last is None:
            return
        question = (f"Roll back the last step, {last['from']} -> {last['to']}?\n"
                    f"Restores {last['from']}'s code, database, etcd and configs from {last['backup_dir']}.")
        self.app.push_screen(Confirm(question, "Roll back"), lambda yes: self._start("rollback", None) if yes else None)

    def _start(self, what: str, target: str | None) -> None:
        self.busy = True
        for button in ("#upgrade", "#rollback", "#quit"):
            self.query_one(button, Button).disabled = True
        self.query_one("#outcome", Static).update("")
        self.query_one("#hosts", DataTable).clear()
        for widget in ("#preflight", "#backup", "#verify"):
            self.query_one(widget, Static).update("")
        self._reset_phases()
        self._step_total = self._step_index = 0
        self.query_one("#step", Static).update("")
        self.run_engine(what, target)

    @work(thread=True, exclusive=True, group="engine")
    def run_engine(self, what: str, target: str | None) -> None:
        def emit(line: dict[str, Any]) -> None:
            self.app.call_from_thread(self.on_record, line)

        def on_event(ev: engine.Event) -> None:
            self.app.call_from_thread(self.on_engine_event, ev)

        try:
            if what == "upgrade":
                assert target is not None
                done = self.backend.upgrade(target, emit, on_event)
                text = f"[green]Upgraded[/green] {done.get('from')} -> {done.get('to')} (record: {done.get('record')})"
            else:
                done = self.backend.rollback(emit, on_event)
                text = f"[green]Rolled back[/green] {done.get('from')} -> {done.get('to')} (record: {done.get('record')})"
        except playbook.Refused as exc:
            text = f"[red]Refused[/red] (nothing changed): {exc}"
        except playbook.StepFailed as exc:
            state = {True: "the step was rolled back", False: "the rollback failed too",
                     None: "not rolled back"}[exc.rolled_back]
            text = f"[red]Failed[/red] ({state}): {exc}"
        except Exception as exc:
            text = f"[red]Failed[/red]: {exc!r}"
        self.app.call_from_thread(self.finished, text)

    def finished(self, text: str) -> None:
        self.busy = False
        self.query_one("#outcome", Static).update(text)
        self.query_one("#quit", Button).disabled = False
        self.run_check()  # the releases now, and what a rollback would undo

    # --- progress ----------------------------------------------------------------------------

    def _reset_phases(self) -> None:
        table = self.query_one("#phases", DataTable)
        table.clear()
        for name, what in PHASES:
            table.add_row(name, "pending", "", what, key=name)

    def _set_phase(self, name: str, status: str, seconds: Any = None) -> None:
        table = self.query_one("#phases", DataTable)
        if name not in table.rows:
            table.add_row(name, "", "", "", key=name)
        table.update_cell(name, "Status", status, update_width=True)
        if seconds is not None:
            table.update_cell(name, "Seconds", f"{seconds}", update_width=True)
        # the engine records only what finished: the next phase is the one under way
        if status == "done":
            order = [n for n, _ in PHASES]
            if name in order and order.index(name) + 1 < len(order):
                following = order[order.index(name) + 1]
                if table.get_cell(following, "Status") == "pending":
                    table.update_cell(following, "Status", "running", update_width=True)

    def _running_phase(self) -> str | None:
        table = self.query_one("#phases", DataTable)
        return next((n for n, _ in PHASES if table.get_cell(n, "Status") == "running"), None)

    def on_record(self, line: dict[str, Any]) -> None:
        phase, status = str(line.get("phase")), str(line.get("status"))
        log = self.query_one("#log", RichLog)
        detail = f" {line['seconds']} s" if "seconds" in line else ""
        error = f": {str(line.get('error'))[-300:]}" if status == "failed" and line.get("error") else ""
        log.write(f"{phase} {status}{detail}{error}")
        if phase == "upgrade" and status == "start":
            self._step_total, self._step_index = len(line.get("steps") or []), 0
        if phase == "preflight" and status == "start":
            self._step_index += 1
            if self._step_index > 1:
                self._reset_phases()
                self.query_one("#hosts", DataTable).clear()
            kind = "major" if line.get("requires_drain") else "patch"
            self.query_one("#step", Static).update(
                f"Step {self._step_index} of {self._step_total or 1}: {line.get('from')} -> {line.get('to')} ({kind})")
            self._set_phase("preflight", "running")
        elif phase in dict(PHASES) and status == "done":
            if phase == "switch" and self.query_one("#phases", DataTable).get_cell("stop", "Status") != "done":
                self._set_phase("stop", "none: a rolling patch step")  # nothing stops for a patch
            self._set_phase(phase, "done", line.get("seconds"))
            if phase == "preflight":
                self.query_one("#preflight", Static).update(self._preflight_text(line))
            elif phase == "backup":
                venvs = line.get("venvs") or {}
                self.query_one("#backup", Static).update(
                    f"Backup: {line.get('backup_dir')} (database dump, etcd snapshot, configs)"
                    + (f"; the previous venv kept on {len(venvs)} host(s)" if venvs else ""))
            elif phase == "verify":
                self.query_one("#verify", Static).update(
                    "[green]Verified[/green]: version endpoint, agent heartbeats, a session ran print(1)")
        elif phase == "agent":  # a rolling patch step: each agent drained, restarted, ready
            self._set_phase("converge", f"agent {line.get('index')}/{line.get('total')} {line.get('agent')}: "
                                        f"{status}")
        elif phase == "step" and status == "failed":
            running = self._running_phase()
            if running is not None:
                self._set_phase(running, "failed")
        elif phase == "rollback":
            self._set_phase("rollback", {"start": "running"}.get(status, status), line.get("seconds"))
            if status == "start" and self._step_index == 0:  # a rollback of its own, not of a failed step
                self.query_one("#step", Static).update(f"Rollback: {line.get('to')} -> {line.get('from')}")

    @staticmethod
    def _preflight_text(line: dict[str, Any]) -> str:
        health = line.get("health") or {}
        sessions = line.get("sessions") or []
        ok = "[green]healthy[/green]" if health.get("ok") else f"[red]not healthy[/red] {health}"
        names = ", ".join(str(s.get("name") or s.get("id")) for s in sessions[:10])
        more = f" and {len(sessions) - 10} more" if len(sessions) > 10 else ""
        running = f"{len(sessions)} running session(s): {names}{more}" if sessions else "no running sessions"
        return f"Preflight: database, etcd, Redis {ok}; {running}"

    def on_engine_event(self, ev: engine.Event) -> None:
        op = ev.op
        if op is None:
            return
        table = self.query_one("#hosts", DataTable)
        key = f"{op.host}\x00{op.role}"
        if key not in table.rows:
            table.add_row(op.host, op.role, "", "", "", key=key)
        if ev.kind == "start":
            status = "running"
        elif op.ok is False:
            status = "failed"
        else:
            status = "changed" if op.changed else "ok"
        table.update_cell(key, "Ops", f"{ev.index}/{ev.total}", update_width=True)
        table.update_cell(key, "Status", status, update_width=True)
        table.update_cell(key, "Operation", op.name[:60], update_width=True)
        if op.ok is False and op.error:
            self.query_one("#log", RichLog).write(f"{op.host}: {op.label}: {op.error[-500:]}")

    def _error(self, text: str) -> None:
        self.query_one("#problems", Static).update(f"[red]{text}[/red]")


class UpgradeApp(App[None]):
    CSS = """
    .section { text-style: bold; margin: 1 0 0 0; }
    #target-row { height: 3; }
    #target-label { padding: 1 0 0 0; }
    #target { width: 40; }
    .buttons { height: 3; margin: 1 0 0 0; }
    .buttons Button { margin: 0 2 0 0; }
    #cluster, #phases, #hosts { height: auto; max-height: 12; }
    #step { text-style: bold; margin: 1 0 0 0; }
    #log { height: 8; border: round $panel; }
    Confirm { align: center middle; }
    #dialog { width: 72; height: auto; border: thick $warning; padding: 1 2; background: $surface; }
    """

    def __init__(self, backend: UpgradeBackend, to: str | None = None) -> None:
        super().__init__()
        self.backend, self.to = backend, to

    def on_mount(self) -> None:
        self.push_screen(UpgradeScreen(self.backend, self.to))


def run_upgrade_tui(inventory_path: str | None = None, to: str | None = None,
                    record_dir: str = playbook.DEFAULT_RECORD_DIR) -> None:
    """``bai-install upgrade`` on a terminal."""
    UpgradeApp(UpgradeBackend(inventory_path, record_dir), to).run()
