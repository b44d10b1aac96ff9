"""SVG snapshots of every screen of the ``bai-install`` wizard (pytest-textual-snapshot; the
baselines are in __snapshots__/; ``pytest --snapshot-update`` rewrites them after a deliberate
change). Deterministic: a fixed terminal size, and a backend that answers with fixed readings of
the shapes the real one returns (this machine's numbers, check results, plan, events), so that
nothing varies between runs: no timestamps, durations or free-space figures of the moment. The
real backend drives the same screens in test_wizard.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Button

from installer import engine, preflight, runconfig
from installer import inventory as inventory_mod
from installer.preflight import CheckResult
from installer.runlog import RunLog
from installer.tui import app as wizard
from installer.tui.backend import Backend, MachineInfo

SIZE = (110, 34)
LOG_DIR = Path("/tmp/bai-wizard-snapshots")


class FixedBackend(Backend):
    """Fixed answers for everything that reads hosts; the inventory and settings are real."""

    def __init__(self, preflight_fails: bool = False) -> None:
        self.preflight_fails = preflight_fails

    def detect(self) -> MachineInfo:
        return MachineInfo(os="Debian GNU/Linux 12 (bookworm)", cpus=16, memory=64 * 2**30,
                           disk_free=412 * 2**30, docker="20.10.24+dfsg1",
                           gpus=["NVIDIA H100 80GB HBM3 (driver 580.159.04)"])

    def preflight(self, inv: inventory_mod.Inventory, limits: preflight.Thresholds
                  ) -> list[CheckResult]:
        results = [
            CheckResult("@local", "reach", "ok", "@local: connected"),
            CheckResult("@local", "os", "ok", "@local: Debian GNU/Linux 12 (bookworm)"),
            CheckResult("@local", "ports", "ok", "@local: 127.0.0.1:5432 (PostgreSQL, role postgresql) is free"),
            CheckResult("@local", "disk", "ok", "@local: 412.0 GiB free on / (13.0 GiB needed)"),
            CheckResult("@local", "memory", "ok", "@local: 64.0 GiB of memory, 16 CPUs"),
            CheckResult("@local", "clock", "warn", "@local: clock ahead of this machine's by 3.1s",
                        "enable time sync on both machines"),
        ]
        if self.preflight_fails:
            results.insert(3, CheckResult(
                "@local", "ports", "fail",
                "@local: port 127.0.0.1:8081 (manager API, role bai-manager) is in use by nginx (pid 4242) "
                "on 0.0.0.0:8081", "stop that program, or give this service another port in the inventory"))
        return results

    def plan(self, inv: inventory_mod.Inventory, on_event: engine.EventHandler) -> engine.RunResult:
        return engine.RunResult("plan", ops=[op for op, _ in OPS])

    def apply(self, inv: inventory_mod.Inventory, on_event: engine.EventHandler) -> engine.RunResult:
        result = engine.RunResult("apply")
        phase = ""
        for i, (op, changed) in enumerate(OPS):
            if op.phase != phase:
                phase = op.phase
                on_event(engine.Event("phase", phase))
            done = engine.OpRecord(op.phase, op.host, op.role, op.name, changed=changed, ok=True,
                                   seconds=0.5)
            on_event(engine.Event("start", phase, done, i + 1, len(OPS)))
            on_event(engine.Event("end", phase, done, i + 1, len(OPS)))
            result.ops.append(done)
        return result

    def summary(self, inv: inventory_mod.Inventory, result: engine.RunResult) -> dict[str, Any]:
        return {"endpoint": "http://127.0.0.1:8081", "access_key": "AKIAEXAMPLE0123456789",
                "secret_key": "sEcReTeXaMpLe/0123456789abcdefghijklmnop",
                "client_env": "/etc/backend.ai/client.env", "web": "http://127.0.0.1:8090",
                "web_user": "admin@lablup.com", "web_password": "wEbPaSsWoRdExAmPlE"}


def _op(phase: str, role: str, name: str, changed: bool, conditional: bool = False
        ) -> tuple[engine.OpRecord, bool]:
    return engine.OpRecord(phase, "@local", role, name, conditional=conditional, changed=changed,
                           ok=True), changed


OPS = [
    _op("halfstack", "base", "Install base packages", False),
    _op("halfstack", "base", "Write sysctl tuning", True),
    _op("halfstack", "postgresql", "Install postgresql", True),
    _op("halfstack", "postgresql", "Restart on changed config", True, conditional=True),
    _op("halfstack", "redis", "Install redis-server", False),
    _op("halfstack", "etcd", "Wait for etcd", False),
    _op("manager", "bai-manager", "Write manager.toml", True),
    _op("manager", "bai-manager", "Migrate the database", False),
    _op("agents", "bai-agent", "Write agent.toml", True),
    _op("storage", "storage-proxy", "Write storage-proxy.toml", False),
]


def make_app(preflight_fails: bool = False) -> wizard.InstallWizard:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    return wizard.InstallWizard(backend=FixedBackend(preflight_fails), config=runconfig.RunConfig(),
                                log_opener=lambda: RunLog(LOG_DIR, stamp="snapshot"))


async def settle(pilot: Pilot[Any]) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def to_step(pilot: Pilot[Any], step: int) -> None:
    """From the first screen to ``step`` (1-based), through the buttons a user presses."""
    await settle(pilot)
    buttons = {2: "#next", 3: "#next", 4: "#next", 5: "#next", 6: "#apply", 7: "#next"}
    for n in range(2, step + 1):
        pilot.app.screen.query_one(buttons[n], Button).press()
        await settle(pilot)
    await pilot.pause()


@pytest.mark.parametrize(("step", "name"), [(1, "machine"), (2, "mode"), (3, "settings"),
                                            (4, "preflight"), (5, "plan"), (6, "apply"), (7, "finish")])
def test_screen(snap_compare: Any, step: int, name: str) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await to_step(pilot, step)
        assert isinstance(pilot.app.screen, wizard.STEP_SCREENS[step - 1])
        if name == "finish":  # shown on the screen, never written to the run log
            text = (LOG_DIR / "install-snapshot.log").read_text()
            assert '"state": "done"' in text
            assert "sEcReTeXaMpLe" not in text and "wEbPaSsWoRdExAmPlE" not in text

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_preflight_failure_screen(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await to_step(pilot, 4)
        assert pilot.app.screen.query_one("#next").disabled

    assert snap_compare(make_app(preflight_fails=True), terminal_size=SIZE, run_before=run_before)
