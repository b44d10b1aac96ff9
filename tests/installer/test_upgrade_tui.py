"""The ``bai-install upgrade`` screen (installer/tui/upgrade.py), driven with Textual's pilot, and
SVG snapshots of it (pytest-textual-snapshot; baselines in __snapshots__/, ``--snapshot-update``
rewrites them after a deliberate change).

The path rules are the real ones (installer/upgrade/paths.py) over a fixed manifest; what reads
or changes hosts is a backend that answers with fixed readings of the shapes the playbook gives
(its Check, its record lines, the engine's events), so the screens are the same on every run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Button, DataTable, Select, Static

from installer import engine
from installer.tui import upgrade as ui
from installer.upgrade import paths as paths_mod
from installer.upgrade import playbook
from installer.upgrade.releases import Manifest, Release, Version

SIZE = (120, 64)
pytestmark = pytest.mark.timeout(60)

MANIFEST = Manifest(tuple(
    Release(Version.parse(v), commit=None if v == "26.12.2" else f"{i:040x}", migration_head=head, config_version=c)
    for i, (v, head, c) in enumerate([("26.11.0", "0002", 1), ("26.11.1", "0002", 1), ("26.12.0", "0014d", 2),
                                      ("26.12.1", "0014d", 3), ("26.12.2", "0015", 3)])))
HOSTS = [playbook.HostRelease("mgr1", ["manager", "storage-proxy"], "26.12.0", "record", "0014d"),
         playbook.HostRelease("agent1", ["agent"], "26.12.0", "record"),
         playbook.HostRelease("agent2", ["agent"], "26.12.0", "derived from migration head 0014d")]
BACKUP = "/var/lib/bai/upgrades/backups/run1-26.12.0-26.12.1"
OPS = [("mgr1", "bai-manager", "Install the manager"), ("mgr1", "bai-manager", "Migrate the database"),
       ("mgr1", "storage-proxy", "Start the storage proxy"), ("agent1", "bai-agent", "Start the agent"),
       ("agent2", "bai-agent", "Start the agent")]


class FixedBackend(ui.UpgradeBackend):
    def __init__(self, fail_in: str | None = None, last: dict[str, Any] | None = None) -> None:
        super().__init__(manifest=MANIFEST)
        self.fail_in = fail_in
        self.last = last
        self.calls: list[tuple[str, str | None]] = []

    def check(self, to: str | None) -> playbook.Check:
        target = to or str(MANIFEST.current.version)
        return playbook.Check(hosts=HOSTS, installed="26.12.0", target=target,
                              path=paths_mod.plan(MANIFEST, "26.12.0", target), problems=[])

    def last_step(self) -> dict[str, Any] | None:
        return self.last

    def upgrade(self, to: str, emit: ui.Emit, on_event: engine.EventHandler) -> dict[str, Any]:
        self.calls.append(("upgrade", to))
        path = paths_mod.plan(MANIFEST, "26.12.0", to)
        emit({"phase": "upgrade", "status": "start", **path.as_dict()})
        for step in path.steps:
            info = {"from": str(step.source), "to": str(step.target)}
            emit({"phase": "preflight", "status": "start", **step.as_dict()})
            emit({"phase": "preflight", "status": "done", "health": {"ok": True},
                  "sessions": [{"id": "s1", "name": "notebook", "status": "RUNNING"},
                               {"id": "s2", "name": None, "status": "RUNNING"}]})
            emit({"phase": "prepare", "status": "done", "seconds": 41.5})
            emit({"phase": "backup", "status": "done", "seconds": 3.2, "backup_dir": BACKUP,
                  "venvs": {"mgr1": "/opt/bai/releases/26.12.0/venv"}, **info})
            emit({"phase": "stop", "status": "done", "seconds": 2.0})
            emit({"phase": "switch", "status": "done", "venvs": {}})
            on_event(engine.Event("phase", "converge"))
            for i, (host, role, name) in enumerate(OPS, 1):
                failing = self.fail_in == "converge" and i == 2
                op = engine.OpRecord("converge", host, role, name, changed=True, ok=not failing, seconds=0.5,
                                     error="alembic: relation exists" if failing else None)
                on_event(engine.Event("start", "converge", engine.OpRecord("converge", host, role, name), i, len(OPS)))
                on_event(engine.Event("end", "converge", op, i, len(OPS)))
                if failing:
                    emit({"phase": "step", "status": "failed", "error": "converge failed: mgr1: alembic", **info})
                    emit({"phase": "rollback", "status": "start", "backup_dir": BACKUP, **info})
                    emit({"phase": "rollback", "status": "done", "seconds": 38.0, "backup_dir": BACKUP, **info})
                    raise playbook.StepFailed("converge failed: mgr1: alembic; rolled back to 26.12.0",
                                              rolled_back=True)
            emit({"phase": "converge", "status": "done", "seconds": 25.4})
            emit({"phase": "verify", "status": "done", "seconds": 6.1})
            emit({"phase": "step", "status": "done", "backup_dir": BACKUP, **info})
        emit({"phase": "upgrade", "status": "done"})
        return {"run": "run1", "record": "/var/lib/bai/upgrades/run1.jsonl", "from": "26.12.0", "to": to}

    def rollback(self, emit: ui.Emit, on_event: engine.EventHandler) -> dict[str, Any]:
        self.calls.append(("rollback", None))
        info = {"from": "26.11.1", "to": "26.12.0", "backup_dir": BACKUP}
        emit({"phase": "rollback", "status": "start", **info})
        emit({"phase": "rollback", "status": "done", "seconds": 40.2, **info})
        return {"run": "run2", "record": "/var/lib/bai/upgrades/run2.jsonl", "from": "26.12.0", "to": "26.11.1"}


async def settled(pilot: Pilot[None]) -> None:
    """Until the workers are done and what they handed back is on the screen (the log scrolled)."""
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


def screen_of(pilot: Pilot[None]) -> ui.UpgradeScreen:
    screen = pilot.app.screen
    assert isinstance(screen, ui.UpgradeScreen)
    return screen


def cells(table: DataTable[Any]) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def text(screen: ui.UpgradeScreen, selector: str) -> str:
    return str(screen.query_one(selector, Static).content)


async def upgrade_to(pilot: Pilot[None], target: str | None = None) -> ui.UpgradeScreen:
    await settled(pilot)
    screen = screen_of(pilot)
    if target is not None:
        screen.query_one("#target", Select).value = target
        await pilot.pause()
    await pilot.click("#upgrade")
    await pilot.pause()
    assert isinstance(pilot.app.screen, ui.Confirm)
    await pilot.click("#yes")
    await settled(pilot)
    return screen


async def test_cluster_targets_and_path() -> None:
    app = ui.UpgradeApp(FixedBackend())
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot)
        screen = screen_of(pilot)
        assert cells(screen.query_one("#cluster", DataTable)) == [
            ["mgr1", "manager", "26.12.0", "record"], ["mgr1", "storage-proxy", "26.12.0", "record"],
            ["agent1", "agent", "26.12.0", "record"], ["agent2", "agent", "26.12.0", "derived from migration head 0014d"]]
        target = screen.query_one("#target", Select)
        # only what an allowed path reaches: no downgrade to 26.11.x, nothing that is installed
        assert [o[1] for o in target._options if isinstance(o[1], str)] == ["26.12.1", "26.12.2"]
        assert target.value == "26.12.2"
        assert "1. 26.12.0 -> 26.12.1  (patch: running sessions keep running)" in text(screen, "#path")
        assert "2. 26.12.1 -> 26.12.2" in text(screen, "#path")
        target.value = "26.12.1"
        await pilot.pause()
        assert "2. " not in text(screen, "#path")
        assert not screen.query_one("#upgrade", Button).disabled
        assert screen.query_one("#rollback", Button).disabled  # nothing to roll back yet


async def test_upgrade_shows_live_progress_preflight_backup_and_verification() -> None:
    backend = FixedBackend()
    app = ui.UpgradeApp(backend)
    async with app.run_test(size=SIZE) as pilot:
        screen = await upgrade_to(pilot, "26.12.1")
        assert backend.calls == [("upgrade", "26.12.1")]
        phases = cells(screen.query_one("#phases", DataTable))
        assert [row[:2] for row in phases] == [[name, "done"] for name, _ in ui.PHASES]
        assert phases[1][2] == "41.5"
        assert cells(screen.query_one("#hosts", DataTable)) == [
            ["mgr1", "bai-manager", "2/5", "changed", "Migrate the database"],
            ["mgr1", "storage-proxy", "3/5", "changed", "Start the storage proxy"],
            ["agent1", "bai-agent", "4/5", "changed", "Start the agent"],
            ["agent2", "bai-agent", "5/5", "changed", "Start the agent"]]
        assert text(screen, "#step") == "Step 1 of 1: 26.12.0 -> 26.12.1 (patch)"
        assert "healthy" in text(screen, "#preflight") and "2 running session(s): notebook, s2" in text(
            screen, "#preflight")
        assert BACKUP in text(screen, "#backup") and "previous venv kept on 1 host" in text(screen, "#backup")
        assert "Verified" in text(screen, "#verify")
        assert "Upgraded" in text(screen, "#outcome") and "26.12.0 -> 26.12.1" in text(screen, "#outcome")
        assert not screen.busy and not screen.query_one("#quit", Button).disabled


async def test_a_two_step_path_shows_each_step() -> None:
    app = ui.UpgradeApp(FixedBackend())
    async with app.run_test(size=SIZE) as pilot:
        screen = await upgrade_to(pilot)
        assert text(screen, "#step") == "Step 2 of 2: 26.12.1 -> 26.12.2 (patch)"
        assert all(row[1] == "done" for row in cells(screen.query_one("#phases", DataTable)))


async def test_a_failed_step_is_shown_rolled_back() -> None:
    app = ui.UpgradeApp(FixedBackend(fail_in="converge"))
    async with app.run_test(size=SIZE) as pilot:
        screen = await upgrade_to(pilot, "26.12.1")
        status = {row[0]: row[1] for row in cells(screen.query_one("#phases", DataTable))}
        assert status == {"preflight": "done", "prepare": "done", "backup": "done", "stop": "done", "switch": "done",
                          "converge": "failed", "verify": "pending", "rollback": "done"}
        assert ["mgr1", "bai-manager", "2/5", "failed", "Migrate the database"] in cells(
            screen.query_one("#hosts", DataTable))
        assert "Failed" in text(screen, "#outcome") and "the step was rolled back" in text(screen, "#outcome")


async def test_rollback_asks_then_restores_the_last_step() -> None:
    last = {"from": "26.11.1", "to": "26.12.0", "backup_dir": BACKUP, "step_run": "run0", "venvs": {}}
    backend = FixedBackend(last=last)
    app = ui.UpgradeApp(backend)
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot)
        screen = screen_of(pilot)
        button = screen.query_one("#rollback", Button)
        assert not button.disabled and str(button.label) == "Rollback 26.12.0 -> 26.11.1"
        await pilot.click("#rollback")
        await pilot.pause()
        await pilot.click("#no")  # asked first: cancelling changes nothing
        await settled(pilot)
        assert backend.calls == []
        await pilot.click("#rollback")
        await pilot.pause()
        await pilot.click("#yes")
        await settled(pilot)
        assert backend.calls == [("rollback", None)]
        assert "Rolled back" in text(screen, "#outcome") and "26.12.0 -> 26.11.1" in text(screen, "#outcome")
        assert ["rollback", "done", "40.2", ""] in cells(screen.query_one("#phases", DataTable))


def _snap(snap_compare: Callable[..., bool], app: ui.UpgradeApp,
          run_before: Callable[[Pilot[None]], Any]) -> None:
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_check(snap_compare: Callable[..., bool]) -> None:
    _snap(snap_compare, ui.UpgradeApp(FixedBackend()), settled)


def test_snapshot_upgraded(snap_compare: Callable[..., bool]) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await upgrade_to(pilot, "26.12.1")
    _snap(snap_compare, ui.UpgradeApp(FixedBackend()), run_before)


def test_snapshot_failed_and_rolled_back(snap_compare: Callable[..., bool]) -> None:
    async def run_before(pilot: Pilot[None]) -> None:
        await upgrade_to(pilot, "26.12.1")
    _snap(snap_compare, ui.UpgradeApp(FixedBackend(fail_in="converge")), run_before)
