"""The log file every ``bai-install`` run keeps: ``<dir>/install-<UTC timestamp>.log``.

It gets, one timestamped line each and flushed as written (a killed run leaves everything up to
its last line): the command and inventory, the preflight results, every engine event (phase,
operation start/end with changed/failed and timing), pyinfra's own log (commands, noop reasons,
failures; colours stripped) and the summary. The CLI prints its path at the start and the end;
the wizard shows it on its finish screen.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Any

DEFAULT_DIR = "/var/log/bai"
#: Run logs kept per directory and kind (the oldest beyond this are removed when a run starts).
KEEP = 100
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _PyinfraHandler(logging.Handler):
    def __init__(self, log: RunLog) -> None:
        super().__init__(level=logging.DEBUG)
        self.run_log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.run_log.line("pyinfra", record.getMessage())
        except Exception:  # a log line must never break the run
            self.handleError(record)


class RunLog:
    """An open run log. Use as a context manager; :meth:`line` is thread-safe."""

    def __init__(self, directory: str | os.PathLike[str] = DEFAULT_DIR, kind: str = "install",
                 stamp: str | None = None) -> None:
        stamp = stamp or _now().strftime("%Y%m%dT%H%M%S.%fZ")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.path = d / f"{kind}-{stamp}.log"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._file: IO[str] | None = os.fdopen(fd, "w", encoding="utf-8")
        _prune(d, kind)
        self._lock = threading.Lock()
        self._handler = _PyinfraHandler(self)
        self._pyinfra = logging.getLogger("pyinfra")
        self._old_level = self._pyinfra.level

    def __enter__(self) -> RunLog:
        self._pyinfra.addHandler(self._handler)
        if self._pyinfra.level == logging.NOTSET or self._pyinfra.level > logging.INFO:
            self._pyinfra.setLevel(logging.INFO)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None:
            self.line("error", f"{exc_type.__name__ if exc_type else 'error'}: {exc}")
        self.close()

    def close(self) -> None:
        self._pyinfra.removeHandler(self._handler)
        self._pyinfra.setLevel(self._old_level)
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def line(self, source: str, text: str) -> None:
        """One line per text line: ``<UTC time> <source> <text>`` (ANSI colours removed)."""
        clean = _ANSI.sub("", text)
        stamp = _now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with self._lock:
            if self._file is None:
                return
            for part in clean.splitlines() or [""]:
                self._file.write(f"{stamp} {source:<9} {part}\n")
            self._file.flush()

    def data(self, source: str, doc: Any) -> None:
        """A JSON document on one line (the summary, preflight results)."""
        self.line(source, json.dumps(doc, default=str, sort_keys=True))

    def event(self, ev: Any) -> None:
        """An engine :class:`~installer.engine.Event`."""
        if ev.kind == "phase":
            self.line("phase", ev.phase)
            return
        op = ev.op
        if op is None:
            return
        pos = f"[{ev.index}/{ev.total}]"
        if ev.kind == "start":
            self.line("start", f"{pos} {op.host} {op.label}")
            return
        if op.ok is False:
            self.line("failed", f"{pos} {op.host} {op.label}")
            for err_line in (op.error or "").splitlines():
                self.line("failed", f"    | {err_line}")
            return
        state = "changed" if op.changed else "ok"
        secs = f" {op.seconds:.2f}s" if op.seconds is not None else ""
        self.line(state, f"{pos} {op.host} {op.label}{secs}")


def _prune(directory: Path, kind: str) -> None:
    logs = sorted(directory.glob(f"{kind}-*.log"))  # the timestamp sorts them by age
    for old in logs[:-KEEP]:
        old.unlink(missing_ok=True)


def open_log(directory: str | os.PathLike[str] | None, kind: str = "install") -> RunLog:
    """A run log in ``directory`` (default ``/var/log/bai``); where that cannot be written
    (no root), in ``$XDG_STATE_HOME/bai`` or ``~/.local/state/bai``."""
    try:
        return RunLog(directory or DEFAULT_DIR, kind)
    except PermissionError:
        if directory:
            raise
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return RunLog(Path(base) / "bai", kind)
