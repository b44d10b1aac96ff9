"""pyinfra behind one module: the engine talks to this, never to pyinfra itself.

Only pyinfra's public API is used (pinned ``pyinfra>=3.10,<3.11`` in pyproject.toml): ``State``
with ``Config`` and ``Inventory``, ``connect_all``/``disconnect_all``, ``add_deploy``,
``get_fact``, ``run_host_op`` with a ``BaseStateCallback`` handler for the start of each
operation on each host, and each operation's ``OperationMeta`` (``will_change``,
``did_change``, ``did_succeed``, ``stdout_lines``/``stderr_lines``) for its end.

A :class:`Session` connects to some targets, adds deploys for each host (preparing them: with
change detection in a plan), then either reports what would change or executes: every host runs
its own operations in order, hosts in parallel and independent of each other (a slow host does
not hold the others at every step); a host stops at its first failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import gevent
from pyinfra.api.config import Config
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.facts import get_fact
from pyinfra.api.host import Host
from pyinfra.api.inventory import Inventory
from pyinfra.api.operations import run_host_op
from pyinfra.api.state import BaseStateCallback, State, StateStage
from pyinfra.context import ctx_host, ctx_state

Target = tuple[str, dict[str, Any]]  # (pyinfra host name, host data)

_log = logging.getLogger("pyinfra")
_log.addHandler(logging.NullHandler())
_log.propagate = False

#: Lines of a failed operation's output kept for its error.
ERROR_LINES = 40


def verbose_logging() -> None:
    """Send pyinfra's own log (commands, noop reasons, failures) to stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("pyinfra: %(message)s"))
    _log.addHandler(handler)
    _log.setLevel(logging.INFO)


@dataclass(frozen=True)
class PlannedOp:
    """One operation added for one host."""

    host: str
    op_id: str  # pyinfra's operation hash
    name: str
    conditional: bool  # has an ``_if``: runs only if an earlier op of this run changed


@dataclass(frozen=True)
class OpOutcome:
    ok: bool
    changed: bool
    seconds: float
    error: str | None


OpStart = Callable[[str, str], None]  # (host, op id)
OpEnd = Callable[[str, str, OpOutcome], None]


class _Events(BaseStateCallback):
    """pyinfra's per-host operation callbacks -> our start calls. (pyinfra calls its success and
    error callbacks before the operation's meta is complete, so the end of an operation is
    reported by :meth:`Session.execute` once ``run_host_op`` returned.)"""

    def __init__(self, session: Session, on_start: OpStart | None) -> None:
        self.session = session
        self.on_start = on_start
        self.started: dict[tuple[str, str], float] = {}

    def operation_host_start(self, state: State, host: Host, op_hash: Any) -> None:  # type: ignore[override]
        if not self.session.has_op(host.name, op_hash):
            return  # another host's operation (pyinfra calls this before skipping it)
        self.started[(host.name, op_hash)] = time.monotonic()
        if self.on_start:
            self.on_start(host.name, op_hash)


class Session:
    """Connected targets and the operations added for them (see the module docstring)."""

    def __init__(self, targets: Sequence[Target], check_for_changes: bool,
                 groups: dict[str, list[str]] | None = None) -> None:
        # groups: pyinfra's inventory groups ({name: host names}), seen by deploys as host.groups
        inventory = Inventory((list(targets), {}), **{g: (names, {}) for g, names in (groups or {}).items()})
        self.state = State(inventory=inventory, config=Config(), check_for_changes=check_for_changes)
        self._ops: dict[str, list[PlannedOp]] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    def connect(self) -> None:
        self.state.set_stage(StateStage.Connect)
        connect_all(self.state)
        missing = [h.name for h in self.state.inventory if not h.connected]
        if missing:
            raise RuntimeError(f"could not connect to {', '.join(missing)}")
        self.state.set_stage(StateStage.Prepare)

    def close(self) -> None:
        self.state.set_stage(StateStage.Disconnect)
        disconnect_all(self.state)

    # -- facts and operations -------------------------------------------------------------------

    def _host(self, name: str) -> Host:
        host = self.state.inventory.get_host(name)
        if host is None:
            raise KeyError(f"no host {name!r} in this session")
        return host

    @property
    def host_names(self) -> list[str]:
        return [h.name for h in self.state.inventory]

    def fact(self, host: str, fact: Any, **kwargs: Any) -> Any:
        """One fact of one host (read now, cached for this session)."""
        return get_fact(self.state, self._host(host), fact, kwargs=kwargs)

    def add(self, host: str, deploy_fn: Callable[..., Any], *args: Any) -> list[PlannedOp]:
        """Prepare ``deploy_fn(*args)`` for ``host``; return the operations it added, in order."""
        h = self._host(host)
        before = len(h.op_hash_order)
        add_deploy(self.state, deploy_fn, *args, host=h)
        added = []
        for op_hash in h.op_hash_order[before:]:
            data = self.state.get_op_data_for_host(h, op_hash)
            args_ = data.global_arguments
            added.append(PlannedOp(host=host, op_id=op_hash, name=args_.get("name") or "operation",
                                   conditional=bool(args_.get("_if"))))
        self._ops.setdefault(host, []).extend(added)
        return added

    def has_op(self, host: str, op_id: str) -> bool:
        return any(op.op_id == op_id for op in self._ops.get(host, []))

    def op_order(self) -> list[str]:
        """Every added operation id, in the order pyinfra runs them."""
        return list(self.state.get_op_order())

    def will_change(self, host: str, op_id: str) -> bool:
        """Whether the operation would change something (a plan: computed while preparing)."""
        h = self._host(host)
        meta = self.state.get_op_data_for_host(h, op_id).operation_meta
        with ctx_state.use(self.state), ctx_host.use(h):
            return bool(meta.will_change)

    def outcome(self, host: str, op_id: str, seconds: float) -> OpOutcome:
        meta = self.state.get_op_data_for_host(self._host(host), op_id).operation_meta
        ok = meta.did_succeed()
        error = None
        if not ok:
            lines = [*meta.stdout_lines, *meta.stderr_lines]
            error = "\n".join(lines[-ERROR_LINES:]) or "failed (no output)"
        return OpOutcome(ok=ok, changed=meta.did_change(), seconds=round(seconds, 3), error=error)

    def execute(self, on_start: OpStart | None = None, on_end: OpEnd | None = None) -> None:
        """Run every host's operations in order, hosts in parallel; a host stops at its first
        failure. ``on_start``/``on_end`` are called for each operation of each host."""
        self.state.set_stage(StateStage.Execute)
        events = _Events(self, on_start)
        self.state.add_callback_handler(events)
        order = self.op_order()

        def run_host(host: Host) -> None:
            mine = {op.op_id for op in self._ops.get(host.name, [])}
            for op_hash in order:
                if op_hash not in mine:
                    continue
                t0 = time.monotonic()
                with ctx_host.use(host):
                    ok = run_host_op(self.state, host, op_hash)
                t0 = events.started.pop((host.name, op_hash), t0)
                if on_end:
                    on_end(host.name, op_hash, self.outcome(host.name, op_hash, time.monotonic() - t0))
                if not ok:
                    return

        self.state.is_executing = True
        with ctx_state.use(self.state):
            greenlets = [self.state.pool.spawn(run_host, host) for host in self.state.inventory]
            gevent.joinall(greenlets)
        for g in greenlets:
            if g.exception is not None:
                raise g.exception


@contextmanager
def session(targets: Sequence[Target], check_for_changes: bool = False,
            groups: dict[str, list[str]] | None = None) -> Iterator[Session]:
    """A connected :class:`Session`, disconnected at the end."""
    s = Session(targets, check_for_changes, groups)
    try:
        s.connect()
        yield s
    finally:
        s.close()


def read_facts(targets: Sequence[Target], fact: Any, **kwargs: Any) -> dict[str, Any]:
    """Read one fact from every target (no operations): {host name: value}."""
    with session(targets) as s:
        return {name: s.fact(name, fact, **kwargs) for name in s.host_names}
