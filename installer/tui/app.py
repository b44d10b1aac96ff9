"""The ``bai-install`` wizard (Textual): this machine -> what to install -> key settings ->
preflight -> plan -> apply -> finish.

Everything that touches hosts goes through a :class:`~installer.tui.backend.Backend` (the engine,
preflight, the inventory), run in worker threads; engine events come back through
``call_from_thread``. Esc goes back a screen; during the apply, Esc or Ctrl+Q asks, then stops
the run cleanly after the operations under way (nothing new starts). Every wizard run keeps a log
file (installer/runlog.py), shown on the last screen.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widget import Widget
from textual.widgets import (
    Button,
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    ProgressBar,
    RadioButton,
    RadioSet,
    RichLog,
    Select,
    Static,
)

from .. import engine, preflight, runconfig, runner
from .. import inventory as inventory_mod
from ..runlog import RunLog, open_log
from .backend import KEY_SETTINGS, Backend, MachineInfo, get_path, nested

#: Summary values kept out of the run log.
SECRET_KEYS = ("secret_key", "web_password")
STEPS = ("This machine", "What to install", "Settings", "Preflight", "Plan", "Apply", "Finish")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _step(n: int) -> str:
    return f"Step {n} of {len(STEPS)}: {STEPS[n - 1]}"


class WizardScreen(Screen[None]):
    """A step: a title line, a body, a row of buttons. Esc goes back."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]

    @property
    def wizard(self) -> InstallWizard:
        app = self.app
        assert isinstance(app, InstallWizard)
        return app

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:  # the default screen, then the first step
            self.app.pop_screen()

    def error(self, text: str) -> None:
        self.query_one("#error", Static).update(text)

    def frame(self, step: int, *body: Widget, buttons: Iterable[Button], error_line: bool = True) -> ComposeResult:
        """What every step shows around its own widgets: the header, which step it is, the line
        errors show on (``#error``), its row of buttons and the key bindings."""
        yield Header()
        yield Label(_step(step), classes="step")
        yield from body
        if error_line:
            yield Static("", id="error", classes="error")
        yield Horizontal(*buttons, classes="buttons")
        yield Footer()


class DetectScreen(WizardScreen):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.quit_wizard", "Quit")]

    def compose(self) -> ComposeResult:
        yield from self.frame(1, Static("Looking at this machine...", id="intro"),
                              DataTable(id="machine", cursor_type="none", show_cursor=False),
                              buttons=[Button("Quit", id="quit"),
                                       Button("Next", id="next", variant="primary", disabled=True)])

    def on_mount(self) -> None:
        table = self.query_one("#machine", DataTable)
        table.add_columns("", "")
        self.detect()

    @work(thread=True, exclusive=True, group="detect")
    def detect(self) -> None:
        try:
            info = self.wizard.backend.detect()
        except Exception as exc:  # shown; the wizard still goes on (preflight checks again)
            self.app.call_from_thread(self.error, f"could not read this machine: {exc}")
            self.app.call_from_thread(self._ready)
            return
        self.app.call_from_thread(self.show, info)

    def show(self, info: MachineInfo) -> None:
        self.wizard.machine = info
        table = self.query_one("#machine", DataTable)
        table.add_row("OS", info.os)
        table.add_row("CPUs", str(info.cpus))
        table.add_row("Memory", _gib(info.memory))
        table.add_row("Free disk on /", _gib(info.disk_free))
        table.add_row("Docker", info.docker or "not installed (the installer adds Debian's docker.io)")
        table.add_row("NVIDIA GPUs", ", ".join(info.gpus) if info.gpus else "none")
        self.query_one("#intro", Static).update(
            "bai installs Backend.AI's manager, agents, storage and app proxies with PostgreSQL, "
            "Redis and etcd, on this machine or on the hosts of an inventory.")
        self._ready()

    def _ready(self) -> None:
        self.query_one("#next", Button).disabled = False
        self.query_one("#next", Button).focus()

    @on(Button.Pressed, "#next")
    def next(self) -> None:
        self.app.push_screen(ModeScreen())

    @on(Button.Pressed, "#quit")
    def quit(self) -> None:
        self.wizard.action_quit_wizard()


class ModeScreen(WizardScreen):
    def compose(self) -> ComposeResult:
        cfg = self.wizard.cfg
        mode = RadioSet(
            RadioButton("All-in-one: everything on this machine", id="aio",
                        value=not (cfg.inventory or cfg.from_stack)),
            RadioButton("The hosts of an inventory file (inventories/*.py)", id="file", value=bool(cfg.inventory)),
            RadioButton("The inventory of a Pulumi stack (stack output JSON)", id="stack",
                        value=bool(cfg.from_stack)),
            id="mode")
        yield from self.frame(2, mode, Input(value=cfg.inventory or cfg.from_stack or "",
                                             placeholder="path of the file", id="path"),
                              buttons=[Button("Back", id="back"), Button("Next", id="next", variant="primary")])

    def on_mount(self) -> None:
        self._sync()

    @on(RadioSet.Changed)
    def _sync(self) -> None:
        pressed = self.query_one("#mode", RadioSet).pressed_button
        self.query_one("#path", Input).disabled = pressed is None or pressed.id == "aio"

    @on(Button.Pressed, "#back")
    def back(self) -> None:
        self.action_back()

    @on(Input.Submitted, "#path")
    @on(Button.Pressed, "#next")
    def next(self) -> None:
        pressed = self.query_one("#mode", RadioSet).pressed_button
        mode = pressed.id if pressed else "aio"
        path = self.query_one("#path", Input).value.strip()
        cfg = self.wizard.cfg
        if mode != "aio" and not path:
            self.error("give the path of the file")
            return
        cfg.inventory = path if mode == "file" else None
        cfg.from_stack = path if mode == "stack" else None
        cfg.hosts = copy.deepcopy(self.wizard.initial_hosts)
        try:
            self.wizard.inv = self.wizard.base_inv = self.wizard.backend.load(cfg)
        except Exception as exc:  # InventoryError, RunConfigError, SettingsError: all for the user
            self.error(str(exc))
            return
        self.error("")
        self.app.push_screen(SettingsScreen())


class SettingsScreen(WizardScreen):
    """A form over the key settings of one host at a time (a host selector on top)."""

    def compose(self) -> ComposeResult:
        inv = self.wizard.inv
        assert inv is not None
        form = VerticalScroll(*(Horizontal(Label(label, classes="label"),
                                           Input(id=f"set-{path.replace('.', '-')}", classes="value"),
                                           classes="field")
                                for path, label in KEY_SETTINGS), id="form")
        yield from self.frame(3, Select([(h, h) for h in inv.hosts], allow_blank=False, value=inv.hosts[0], id="host"),
                              form, buttons=[Button("Back", id="back"), Button("Next", id="next", variant="primary")])

    def on_mount(self) -> None:
        self._host = self.query_one("#host", Select).value
        self._fill()

    def _input(self, path: str) -> Input:
        return self.query_one(f"#set-{path.replace('.', '-')}", Input)

    def _settings(self, inv: inventory_mod.Inventory | None) -> Any:
        assert inv is not None
        return self.wizard.backend.settings(inv)[str(self._host)]

    def _fill(self) -> None:
        """The shown host's values, edits included (the last inventory that loaded)."""
        s = self._settings(self.wizard.inv)
        for path, _ in KEY_SETTINGS:
            self._input(path).value = str(get_path(s, path))

    def _collect(self) -> None:
        """The shown host's fields that differ from the inventory (and config file) become its
        overrides in the run config, replacing earlier edits of them."""
        base = self._settings(self.wizard.base_inv)
        host = str(self._host)
        overrides = copy.deepcopy(self.wizard.initial_hosts.get(host, {}))
        for path, _ in KEY_SETTINGS:
            text = self._input(path).value.strip()
            old = get_path(base, path)
            if text == str(old):
                continue
            value: Any = text
            if isinstance(old, int) and text.lstrip("-").isdigit():
                value = int(text)
            overrides = runconfig.merge(overrides, nested(path, value))
        if overrides:
            self.wizard.cfg.hosts[host] = overrides
        else:
            self.wizard.cfg.hosts.pop(host, None)

    @on(Select.Changed, "#host")
    def _other_host(self, event: Select.Changed) -> None:
        if event.value == self._host:
            return
        self._collect()
        if not self._reload():
            event.select.value = self._host
            return
        self._host = event.value
        self._fill()

    def _reload(self) -> bool:
        try:
            self.wizard.inv = self.wizard.backend.load(self.wizard.cfg)
        except Exception as exc:
            self.error(str(exc))
            return False
        self.error("")
        return True

    @on(Button.Pressed, "#back")
    def back(self) -> None:
        self.action_back()

    @on(Button.Pressed, "#next")
    def next(self) -> None:
        self._collect()
        if self._reload():
            self.app.push_screen(PreflightScreen())


class PreflightScreen(WizardScreen):
    STYLE: ClassVar[dict[str, str]] = {"ok": "green", "warn": "yellow", "fail": "bold red"}

    def compose(self) -> ComposeResult:
        yield from self.frame(4, Static("Checking every host (nothing is changed)...", id="verdict"),
                              DataTable(id="checks", cursor_type="row", zebra_stripes=True), Static("", id="remedies"),
                              buttons=[Button("Back", id="back"), Button("Check again", id="again", disabled=True),
                                       Button("Next", id="next", variant="primary", disabled=True)])

    def on_mount(self) -> None:
        self.query_one("#checks", DataTable).add_columns("", "host", "check", "result")
        self.check()

    @work(thread=True, exclusive=True, group="preflight")
    def check(self) -> None:
        w = self.wizard
        assert w.inv is not None
        try:
            results = w.backend.preflight(w.inv, w.cfg.preflight)
        except Exception as exc:
            self.app.call_from_thread(self.error, f"preflight could not run: {exc}")
            self.app.call_from_thread(self._enable, False)
            return
        w.run_log.data("preflight", [r.as_dict() for r in results])
        self.app.call_from_thread(self.show, results)

    def show(self, results: list[preflight.CheckResult]) -> None:
        self.wizard.checks = results
        table = self.query_one("#checks", DataTable)
        table.clear()
        for r in results:
            style = self.STYLE[r.status]
            table.add_row(f"[{style}]{r.status.upper()}[/{style}]", r.host, r.check, r.message)
        s = preflight.summary(results)
        bad = preflight.failed(results)
        verdict = f"{s['ok']} ok, {s['warn']} warning(s), {s['fail']} failure(s). "
        verdict += ("Fix the failures to go on: Back to change settings, or fix the host and "
                    "Check again." if bad else "Ready to plan.")
        self.query_one("#verdict", Static).update(verdict)
        remedies = [f"{r.host} {r.check}: {r.remedy}" for r in results
                    if r.status != "ok" and r.remedy]
        self.query_one("#remedies", Static).update(
            "\n".join(dict.fromkeys(remedies)) if remedies else "")
        self._enable(not bad)

    def _enable(self, ok: bool) -> None:
        self.query_one("#again", Button).disabled = False
        self.query_one("#next", Button).disabled = not ok
        (self.query_one("#next", Button) if ok else self.query_one("#again", Button)).focus()

    @on(Button.Pressed, "#again")
    def again(self) -> None:
        self.query_one("#next", Button).disabled = True
        self.query_one("#again", Button).disabled = True
        self.query_one("#verdict", Static).update("Checking every host (nothing is changed)...")
        self.check()

    @on(Button.Pressed, "#back")
    def back(self) -> None:
        self.action_back()

    @on(Button.Pressed, "#next")
    def next(self) -> None:
        self.app.push_screen(PlanScreen())


class PlanScreen(WizardScreen):
    def compose(self) -> ComposeResult:
        yield from self.frame(5, Static("Planning: reading every host's facts (nothing is changed)...", id="summary"),
                              DataTable(id="plan", cursor_type="row", zebra_stripes=True),
                              buttons=[Button("Back", id="back"),
                                       Button("Apply", id="apply", variant="primary", disabled=True)])

    def on_mount(self) -> None:
        self.query_one("#plan", DataTable).add_columns("host", "role", "operation", "")
        self.make_plan()

    @work(thread=True, exclusive=True, group="plan")
    def make_plan(self) -> None:
        w = self.wizard
        assert w.inv is not None
        w.run_log.line("wizard", "plan")
        try:
            result = w.backend.plan(w.inv, runner.Tracker(log=w.run_log))
        except Exception as exc:
            self.app.call_from_thread(self.error, f"planning failed: {type(exc).__name__}: {exc}")
            return
        self.app.call_from_thread(self.show, result)

    def show(self, result: engine.RunResult) -> None:
        self.wizard.plan = result
        table = self.query_one("#plan", DataTable)
        for op in result.ops:
            mark = ("[yellow]change?[/yellow]" if op.conditional else "[yellow]change[/yellow]") \
                if op.changed else "[dim]unchanged[/dim]"
            table.add_row(op.host, op.role, op.name, mark)
        will = [op for op in result.ops if op.changed and not op.conditional]
        hosts = len({op.host for op in result.ops})
        if result.failed:
            self.error(f"planning failed: {result.error}")
            return
        self.query_one("#summary", Static).update(
            f"{len(will)} of {len(result.ops)} operations on {hosts} host(s) would change "
            "something (change? = only if an earlier step changes). Apply to go ahead.")
        self.query_one("#apply", Button).disabled = False
        self.query_one("#apply", Button).focus()

    @on(Button.Pressed, "#back")
    def back(self) -> None:
        self.action_back()

    @on(Button.Pressed, "#apply")
    def apply(self) -> None:
        self.app.push_screen(ApplyScreen())


class ConfirmStop(ModalScreen[bool]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(False)", "Go on")]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Stop the install? The operations under way finish; nothing new "
                        "starts. A later run completes it.")
            with Horizontal(classes="buttons"):
                yield Button("Go on installing", id="no", variant="primary")
                yield Button("Stop", id="yes", variant="error")

    @on(Button.Pressed, "#yes")
    def yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def no(self) -> None:
        self.dismiss(False)


class ApplyScreen(WizardScreen):
    """Per-host progress (one bar per host, the operation under way next to it) and a log pane
    of finished operations."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.quit_wizard", "Stop")]

    def compose(self) -> ComposeResult:
        w = self.wizard
        assert w.inv is not None
        hosts = VerticalScroll(*(Horizontal(Label(host, classes="hostname"),
                                            ProgressBar(total=self._totals.get(host) or None, show_eta=False,
                                                        id=f"bar-{i}"),
                                            Label("", id=f"op-{i}", classes="current"), classes="host")
                                 for i, host in enumerate(self._hosts())), id="hosts")
        yield from self.frame(6, Static("Applying...", id="status"), hosts,
                              RichLog(id="log", markup=True, wrap=False, max_lines=2000), error_line=False,
                              buttons=[Button("Stop", id="stop", variant="error"),
                                       Button("Next", id="next", variant="primary", disabled=True)])

    def _hosts(self) -> list[str]:
        w = self.wizard
        assert w.inv is not None
        plan = w.plan
        self._totals: dict[str, int] = {}
        if plan is not None:
            for op in plan.ops:
                self._totals[op.host] = self._totals.get(op.host, 0) + 1
        self._index = {h: i for i, h in enumerate(w.inv.hosts)}
        self._done: dict[str, int] = {}
        return list(w.inv.hosts)

    def on_mount(self) -> None:
        w = self.wizard
        w.tracker = runner.Tracker(log=w.run_log, forward=self._from_engine)
        self.run_apply()

    def _from_engine(self, ev: engine.Event) -> None:
        self.app.call_from_thread(self.on_engine_event, ev)

    def on_engine_event(self, ev: engine.Event) -> None:
        log = self.query_one("#log", RichLog)
        if ev.kind == "phase":
            log.write(f"[bold]== {ev.phase} ==[/bold]")
            return
        op = ev.op
        if op is None or op.host not in self._index:
            return
        i = self._index[op.host]
        if ev.kind == "start":
            done = self._done.get(op.host, 0)
            total = max(self._totals.get(op.host, 0), done + 1)
            self.query_one(f"#op-{i}", Label).update(f"{done + 1}/{total}  {op.role} | {op.name}")
            return
        self._done[op.host] = self._done.get(op.host, 0) + 1
        bar = self.query_one(f"#bar-{i}", ProgressBar)
        total = max(self._totals.get(op.host, 0), self._done[op.host])
        bar.update(total=total, progress=self._done[op.host])
        if op.ok is False:
            log.write(f"[bold red]FAILED[/bold red]  {op.host}  {op.label}")
            for line in (op.error or "").splitlines()[-10:]:
                log.write(f"        | {line}", shrink=False)
        elif op.changed:
            log.write(f"[green]changed[/green] {op.host}  {op.label}")
        else:
            log.write(f"[dim]ok      {op.host}  {op.label}[/dim]")

    @work(thread=True, exclusive=True, group="apply")
    def run_apply(self) -> None:
        w = self.wizard
        assert w.inv is not None and w.tracker is not None
        w.run_log.line("wizard", "apply")
        outcome: dict[str, Any]
        try:
            result = w.backend.apply(w.inv, w.tracker)
        except runner.Cancelled:
            outcome = {"state": "stopped", "why": "stopped on request"}
        except Exception as exc:
            outcome = {"state": "failed", "why": f"{type(exc).__name__}: {exc}"}
        else:
            if result.failed:
                outcome = {"state": "failed", "why": result.error or "an operation failed"}
            else:
                changed = len(result.changed)
                outcome = {"state": "done", "changed": changed, "operations": len(result.ops)}
                try:
                    outcome.update(w.backend.summary(w.inv, result))
                except Exception as exc:
                    outcome["summary_error"] = str(exc)
        if outcome["state"] != "done":
            outcome["account"] = runner.account(w.inv, w.tracker).lines()
        # the credentials are shown on the finish screen, never written to the log
        w.run_log.data("summary", {k: v for k, v in outcome.items() if k not in SECRET_KEYS})
        self.app.call_from_thread(self.finished, outcome)

    def finished(self, outcome: dict[str, Any]) -> None:
        self.wizard.outcome = outcome
        state = outcome["state"]
        text = {"done": "Done. Next: the summary.",
                "failed": f"Failed: {outcome.get('why')}. Next: what was done and what was not.",
                "stopped": "Stopped. Next: what was done and what was not."}[state]
        self.query_one("#status", Static).update(text)
        for i in range(len(self._index)):
            self.query_one(f"#op-{i}", Label).update("")
        self.query_one("#stop", Button).disabled = True
        self.query_one("#next", Button).disabled = False
        self.query_one("#next", Button).focus()

    def action_back(self) -> None:
        self.wizard.action_quit_wizard()

    @on(Button.Pressed, "#stop")
    def stop(self) -> None:
        self.wizard.action_quit_wizard()

    @on(Button.Pressed, "#next")
    def next(self) -> None:
        self.app.push_screen(FinishScreen())


class FinishScreen(WizardScreen):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.quit_wizard", "Quit")]

    def compose(self) -> ComposeResult:
        yield from self.frame(7, Static(self._text(), id="finish"), error_line=False,
                              buttons=[Button("Quit", id="quit", variant="primary")])

    def on_mount(self) -> None:
        self.query_one("#quit", Button).focus()

    def _text(self) -> str:
        w = self.wizard
        o = w.outcome or {"state": "failed", "why": "nothing was applied"}
        lines: list[str] = []
        if o["state"] == "done":
            lines.append(f"[green bold]Installed.[/green bold] {o['changed']} of {o['operations']} "
                         "operations changed something.")
            if o.get("access_key"):
                lines += ["", f"API endpoint:     {o['endpoint']}",
                          f"Admin access key: {o['access_key']}",
                          f"Admin secret key: {o['secret_key']}",
                          f"Client env file:  {o['client_env']}"]
                if o.get("web"):
                    lines.append(f"Web UI:           {o['web']}  (log in as {o.get('web_user')} / "
                                 f"{o.get('web_password')})")
                lines += ["",
                          "Next steps:",
                          f"  . {o['client_env']}",
                          "  backend.ai run --rm -c 'print(6*7)' python",
                          "  bai-install status"]
            else:
                lines += ["", "This inventory has no manager host: no endpoint or keypair to show.",
                          "Next steps: bai-install status"]
        else:
            lines.append(f"[red bold]Install {o['state']}[/red bold]: {o.get('why')}")
            lines += [""] + list(o.get("account", []))
        lines += ["", f"Log of this run: {w.run_log.path}"]
        return "\n".join(lines)

    @on(Button.Pressed, "#quit")
    def quit(self) -> None:
        self.wizard.action_quit_wizard()


#: The screen of each step, in order.
STEP_SCREENS: tuple[type[WizardScreen], ...] = (DetectScreen, ModeScreen, SettingsScreen,
                                                 PreflightScreen, PlanScreen, ApplyScreen,
                                                 FinishScreen)


class InstallWizard(App[int]):
    """The wizard. ``backend`` does the work (the real one by default); ``config`` holds the
    choices (a ``bai-install.toml`` can pre-fill them); ``log_opener`` opens the run log."""

    TITLE = "bai-install"
    SUB_TITLE = "install Backend.AI (bai)"
    CSS = """
    .step { text-style: bold; color: $accent; margin: 1 1 0 1; }
    #intro, #verdict, #summary, #status { margin: 0 1 1 1; }
    .error { color: $error; margin: 0 1; height: auto; }
    .buttons { height: auto; dock: bottom; margin: 0 1 1 1; }
    .buttons Button { margin-right: 2; }
    DataTable { height: 1fr; margin: 0 1; }
    #machine { height: auto; }
    #remedies { color: $warning; margin: 0 1; height: auto; max-height: 6; }
    #path { margin: 0 1; }
    RadioSet { margin: 0 1; }
    #host { margin: 0 1; width: 60; }
    .field { height: 3; }
    .field .label { width: 36; padding: 1 1 0 1; }
    .field .value { width: 1fr; }
    #hosts { height: auto; max-height: 12; margin: 0 1; }
    .host { height: 1; }
    .hostname { width: 30; }
    .host ProgressBar { width: 50; }
    .current { width: 1fr; color: $text-muted; }
    #log { height: 1fr; margin: 0 1; border: round $primary; }
    #finish { margin: 0 2; }
    ConfirmStop { align: center middle; }
    #dialog { width: 64; height: auto; border: thick $error; padding: 1 2; background: $surface; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("ctrl+q", "quit_wizard", "Quit", priority=True)]

    def __init__(self, backend: Backend | None = None, config: runconfig.RunConfig | None = None,
                 log_opener: Callable[[], RunLog] | None = None) -> None:
        super().__init__()
        self.backend = backend or Backend()
        self.cfg = config or runconfig.RunConfig()
        self._run_log_opener = log_opener or (lambda: open_log(self.cfg.log_dir))
        self._run_log: RunLog | None = None
        self.machine: MachineInfo | None = None
        self.initial_hosts = copy.deepcopy(self.cfg.hosts)
        #: the chosen inventory with the config file's overrides, and with the form's edits too
        self.base_inv: inventory_mod.Inventory | None = None
        self.inv: inventory_mod.Inventory | None = None
        self.checks: list[preflight.CheckResult] = []
        self.plan: engine.RunResult | None = None
        self.tracker: runner.Tracker | None = None
        self.outcome: dict[str, Any] | None = None

    @property
    def run_log(self) -> RunLog:
        """This wizard run's log file, opened on first use."""
        if self._run_log is None:
            self._run_log = self._run_log_opener()
            self._run_log.line("command", "bai-install (wizard)")
        return self._run_log

    def on_mount(self) -> None:
        self.push_screen(DetectScreen())

    @property
    def applying(self) -> bool:
        """From the apply screen's start until its run has ended."""
        return self.tracker is not None and self.outcome is None

    def action_quit_wizard(self) -> None:
        if not self.applying:
            self.exit(self.exit_code_for(self.outcome))
            return

        def answer(stop: bool | None) -> None:
            if stop and self.tracker is not None:
                self.run_log.line("wizard", "stop asked: stopping after the operations under way")
                self.tracker.cancel()
                screen = self.screen
                if isinstance(screen, ApplyScreen):
                    screen.query_one("#status", Static).update(
                        "Stopping after the operations under way...")

        self.push_screen(ConfirmStop(), answer)

    @staticmethod
    def exit_code_for(outcome: dict[str, Any] | None) -> int:
        if outcome is None:
            return 1  # left before installing
        return {"done": 0, "failed": 1, "stopped": 130}[outcome["state"]]

    def on_unmount(self) -> None:
        if self._run_log is not None:
            self._run_log.line("exit", str(self.exit_code_for(self.outcome)))
            self._run_log.close()


def run_wizard(config: runconfig.RunConfig | None = None) -> int:
    if os.geteuid() != 0:
        print("bai-install: the wizard installs on this machine or on remote hosts as root; "
              "run it as root (sudo bai-install)")
        return 2
    app = InstallWizard(config=config)
    code = app.run()
    if app._run_log is not None:
        print(f"log: {app._run_log.path}")
    return int(code) if code is not None else 1
