"""What the CLI and the wizard share around an engine run (no UI code): a :class:`Tracker` that
sees every event (it logs it, forwards it, remembers what was done, and stops the run cleanly
between operations when asked), the account of what was and was not done, and the client
summary (endpoint, keypair, client env file) read back from the first manager."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import engine
from . import inventory as inventory_mod
from .runlog import RunLog


class Cancelled(Exception):
    """Raised (from the event callback, before an operation starts) to stop a run cleanly: the
    running operations finish, nothing new starts."""


@dataclass
class Tracker:
    """The ``on_event`` callback of a run. Thread-safe: the engine calls it from its greenlets
    (or from a worker thread under the wizard) while a UI calls :meth:`cancel`."""

    log: RunLog | None = None
    forward: Callable[[engine.Event], None] | None = None
    done: list[engine.OpRecord] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)
    started: set[tuple[str, str, str]] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self._stop.set()

    @property
    def cancelled(self) -> bool:
        return self._stop.is_set()

    def __call__(self, ev: engine.Event) -> None:
        if ev.kind == "start" and self._stop.is_set():
            if self.log:
                self.log.line("stop", f"not starting {ev.op.host} {ev.op.label}" if ev.op else "")
            raise Cancelled("stopped on request")
        if ev.kind == "phase":
            self.phases.append(ev.phase)
        elif ev.kind == "end" and ev.op is not None:
            self.done.append(ev.op)
        if self.log:
            self.log.event(ev)
        if self.forward:
            self.forward(ev)


@dataclass
class Account:
    """What a stopped or failed run did and did not do."""

    changed: list[str]
    unchanged: int
    failed: list[str]
    phases_not_started: list[str]

    def lines(self) -> list[str]:
        out = [f"done: {len(self.changed)} operation(s) changed something, {self.unchanged} were "
               "already in place"]
        out += [f"  changed  {label}" for label in self.changed[-15:]]
        if len(self.changed) > 15:
            out.insert(1, f"  ... {len(self.changed) - 15} earlier change(s) in the log")
        out += [f"  FAILED   {label}" for label in self.failed]
        if self.phases_not_started:
            out.append(f"not done: the phase(s) {', '.join(self.phases_not_started)} never "
                       "started, and the rest of the stopped phase")
        else:
            out.append("not done: the rest of the stopped phase")
        out.append("a re-run with the same inventory completes the install (it is idempotent)")
        return out


def account(inv: inventory_mod.Inventory, tracker: Tracker) -> Account:
    planned = [p.name for p in engine.phases_for(inv)]
    return Account(
        changed=[f"{op.host}: {op.label}" for op in tracker.done if op.changed and op.ok],
        unchanged=sum(1 for op in tracker.done if op.ok and not op.changed),
        failed=[f"{op.host}: {op.label}" for op in tracker.done if op.ok is False],
        phases_not_started=[p for p in planned if p not in tracker.phases],
    )


def client_summary(inv: inventory_mod.Inventory, result: engine.RunResult) -> dict[str, Any]:
    """Endpoint, admin keypair and web login, read back from the client env file on the first manager."""
    from roles._facts import KeyValueFile

    managers = inv.groups.get("manager") or []
    if not managers:
        return {}
    host = managers[0]
    settings = result.settings[host]
    env = engine.read_facts([(host, inv.data[host])], KeyValueFile,
                            path=settings.client_env)[host]
    return {
        "endpoint": env.get("BACKEND_ENDPOINT", settings.endpoint),
        "access_key": env.get("BACKEND_ACCESS_KEY"),
        "secret_key": env.get("BACKEND_SECRET_KEY"),
        "client_env": settings.client_env if env else None,
        # the web UI and the admin's login there (roles/webserver.py writes them)
        "web": env.get("BAI_WEB_ENDPOINT"),
        "web_user": env.get("BACKEND_USER_ID"),
        "web_password": env.get("BACKEND_PASSWORD"),
    }
