"""The ``bai-install`` wizard driven by Textual's pilot against the real engine: every screen on
this machine's installed node (detect, all-in-one, settings, preflight, a real plan; never an
apply here), bad input on each screen (a missing file, a bad setting, a port in use: the wizard
stays and says why), and a real apply onto a systemd test host (the half-stack roles) with its
per-host progress and log pane, then a run stopped on request. Without a terminal,
``bai-install`` prints its help and exits 2."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from textual.widgets import Button, DataTable, Input, ProgressBar, RadioButton, RichLog, Static

from installer import runconfig
from installer.runlog import RunLog
from installer.tui import app as wizard
from tests.installer.test_preflight import REPO

SIZE = (120, 40)


def make(tmp_path: Path, **cfg: Any) -> wizard.InstallWizard:
    return wizard.InstallWizard(config=runconfig.RunConfig(**cfg),
                                log_opener=lambda: RunLog(tmp_path / "logs"))


async def settle(pilot: Any) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def until(pilot: Any, cond: Any, what: str) -> None:
    """Process messages until ``cond()`` holds (bounded: 200 rounds of the message loop)."""
    for _ in range(200):
        if cond():
            return
        await pilot.pause()
    raise AssertionError(f"never happened: {what}")


async def press(pilot: Any, selector: str) -> None:
    """Press a button of the current screen (as a click or Enter does; a second click within the
    button's press animation would be ignored, as it is for a user)."""
    button = pilot.app.screen.query_one(selector, Button)
    assert not button.disabled, f"{selector} is disabled"
    button.press()
    await pilot.pause()


def text(app: Any, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).content)


async def test_every_screen_up_to_the_plan_on_the_installed_node(tmp_path: Path) -> None:
    """All-in-one is the default choice; the plan is made for this node's half-stack (an
    inventory file naming @local in that group: a shorter plan than the whole node's)."""
    inv = tmp_path / "halfstack.py"
    inv.write_text("halfstack = ['@local']\n")
    app = make(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, wizard.DetectScreen)
        machine = app.screen.query_one("#machine", DataTable)
        assert machine.row_count == 6
        assert "Debian GNU/Linux 12" in str(machine.get_row_at(0)[1])
        await press(pilot, "#next")
        await settle(pilot)
        assert isinstance(app.screen, wizard.ModeScreen)
        assert app.screen.query_one("#aio", RadioButton).value is True
        await pilot.click("#file")
        app.screen.query_one("#path", Input).value = str(inv)
        await press(pilot, "#next")
        await settle(pilot)
        assert isinstance(app.screen, wizard.SettingsScreen)
        assert app.screen.query_one("#set-manager-addr", Input).value == "127.0.0.1:8081"
        assert app.screen.query_one("#set-postgresql-port", Input).value == "5432"
        await press(pilot, "#next")
        await settle(pilot)
        assert isinstance(app.screen, wizard.PreflightScreen)
        assert not app.screen.query_one("#next", Button).disabled, text(app, "#verdict")
        assert "0 failure(s)" in text(app, "#verdict")
        assert app.screen.query_one("#checks", DataTable).row_count == len(app.checks) > 5
        await press(pilot, "#next")
        await settle(pilot)
        assert isinstance(app.screen, wizard.PlanScreen)
        plan = app.screen.query_one("#plan", DataTable)
        assert app.plan is not None and plan.row_count == len(app.plan.ops) > 20
        roles = {str(plan.get_row_at(i)[1]) for i in range(plan.row_count)}
        assert {"base", "postgresql", "redis", "etcd"} <= roles
        assert not {"bai-manager", "bai-agent", "storage-proxy"} & roles
        assert {str(plan.get_row_at(i)[0]) for i in range(plan.row_count)} == {"@local"}
        assert "operations on 1 host(s) would change something" in text(app, "#summary")
        assert not app.screen.query_one("#apply", Button).disabled
        # Esc goes back, screen by screen
        for screen in (wizard.PreflightScreen, wizard.SettingsScreen, wizard.ModeScreen,
                       wizard.DetectScreen):
            await pilot.press("escape")
            await pilot.pause()
            assert isinstance(app.screen, screen)
        await pilot.press("ctrl+q")
        await pilot.pause()
    assert app.return_value == 1  # left before installing
    assert "plan" in next((tmp_path / "logs").glob("install-*.log")).read_text()


async def test_bad_input_keeps_the_wizard_on_its_screen(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    port = sock.getsockname()[1]
    app = make(tmp_path)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await press(pilot, "#next")
            await settle(pilot)
            await pilot.click("#file")
            await press(pilot, "#next")
            await until(pilot, lambda: text(app, "#error") == "give the path of the file", "no path refused")
            assert isinstance(app.screen, wizard.ModeScreen)
            app.screen.query_one("#path", Input).value = str(tmp_path / "missing.py")
            await press(pilot, "#next")
            await until(pilot, lambda: "not found" in text(app, "#error"), "missing file refused")
            assert isinstance(app.screen, wizard.ModeScreen)
            await pilot.click("#aio")
            await press(pilot, "#next")
            await settle(pilot)
            assert isinstance(app.screen, wizard.SettingsScreen)
            app.screen.query_one("#set-postgresql-port", Input).value = "many"
            await press(pilot, "#next")
            await until(pilot, lambda: "@local: setting postgresql.port" in text(app, "#error"), "bad port refused")
            assert isinstance(app.screen, wizard.SettingsScreen)
            app.screen.query_one("#set-postgresql-port", Input).value = "5432"
            app.screen.query_one("#set-manager-addr", Input).value = f"127.0.0.1:{port}"
            await press(pilot, "#next")
            await settle(pilot)
            assert isinstance(app.screen, wizard.PreflightScreen)
            assert app.cfg.hosts == {"@local": {"manager": {"addr": f"127.0.0.1:{port}"}}}
            # the port in use fails preflight: no going on
            assert app.screen.query_one("#next", Button).disabled
            assert "1 failure(s)" in text(app, "#verdict")
            assert "give this service another port" in text(app, "#remedies")
            await pilot.press("escape")
            await pilot.pause()
            assert isinstance(app.screen, wizard.SettingsScreen)
            await pilot.press("ctrl+q")
    finally:
        sock.close()


async def test_apply_on_a_systemd_host_then_stop_on_request(halfstack_inventory: Path, tmp_path: Path) -> None:
    app = make(tmp_path, inventory=str(halfstack_inventory))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await press(pilot, "#next")
        await settle(pilot)
        assert app.screen.query_one("#file", RadioButton).value is True
        await press(pilot, "#next")
        await settle(pilot)
        await press(pilot, "#next")
        await settle(pilot)
        assert isinstance(app.screen, wizard.PreflightScreen), text(app, "#error")
        assert not app.screen.query_one("#next", Button).disabled, text(app, "#remedies")
        await press(pilot, "#next")
        await settle(pilot)
        assert isinstance(app.screen, wizard.PlanScreen)
        assert app.plan is not None
        planned = len(app.plan.ops)
        await press(pilot, "#apply")
        await settle(pilot)
        assert isinstance(app.screen, wizard.ApplyScreen)
        assert app.outcome is not None and app.outcome["state"] == "done", app.outcome
        bar = app.screen.query_one("#bar-0", ProgressBar)
        assert bar.progress == bar.total == planned
        assert len(app.screen.query_one("#log", RichLog).lines) >= planned
        await press(pilot, "#next")
        await pilot.pause()
        assert isinstance(app.screen, wizard.FinishScreen)
        finish = text(app, "#finish")
        assert "Installed." in finish and "no manager host" in finish
        log = next((tmp_path / "logs").glob("install-*.log"))
        assert f"Log of this run: {log}" in finish
        await pilot.press("ctrl+q")
    assert app.return_value == 0

    # again, stopped on request as soon as the first operation runs: it asks, then stops
    app = make(tmp_path, inventory=str(halfstack_inventory))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for _ in range(4):
            await press(pilot, "#next")
            await settle(pilot)
        assert isinstance(app.screen, wizard.PlanScreen)
        await press(pilot, "#apply")
        await pilot.pause()
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert isinstance(app.screen, wizard.ConfirmStop)
        await press(pilot, "#yes")
        await settle(pilot)
        assert isinstance(app.screen, wizard.ApplyScreen)
        assert app.outcome is not None and app.outcome["state"] == "stopped"
        assert app.tracker is not None and len(app.tracker.done) < planned
        await press(pilot, "#next")
        await pilot.pause()
        finish = text(app, "#finish")
        assert "Install stopped" in finish and "not done:" in finish
        await pilot.press("ctrl+q")
    assert app.return_value == 130


def test_without_a_terminal_prints_help_and_exits_2() -> None:
    r = subprocess.run([sys.executable, "-m", "installer.cli"], cwd=REPO, capture_output=True,
                       text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 2
    assert "preflight" in r.stdout and "install" in r.stdout and "no terminal" in r.stderr
    r = subprocess.run([sys.executable, "-m", "installer.cli", "wizard"], cwd=REPO, capture_output=True,
                       text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 2 and "the wizard needs a terminal" in r.stderr
