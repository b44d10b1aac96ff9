"""Terminals: login shells on pseudo-terminals, driven by the agent (stdlib only).

Each terminal is a shell (``/bin/bash``, else ``/bin/sh``, as a login shell) forked on a fresh
pty in ``/home/work``, as the container's user (the runner's own), with the environment user
code gets and ``TERM=xterm-256color``. Up to :data:`MAX_TERMINALS` live at once per kernel.

Agent -> runner (``op``; ``tid`` is the agent's name for the terminal, <= 64 characters):

* ``{"op": "pty-open", "tid", "rows", "cols"}`` -- start one; answered ``pty-opened`` or ``pty-error``.
* ``{"op": "pty-in", "tid", "data": base64}`` -- keystrokes (at most :data:`INPUT_LIMIT` unwritten
  bytes are kept; more is dropped, as a terminal whose program does not read would block).
* ``{"op": "pty-resize", "tid", "rows", "cols"}`` -- TIOCSWINSZ; the kernel sends SIGWINCH.
* ``{"op": "pty-ack", "tid", "bytes"}`` -- that much output has been passed on.
* ``{"op": "pty-restart", "tid"}`` -- kill the shell and start a new one on the same terminal.
* ``{"op": "pty-close", "tid"}`` -- kill the shell and every process of its session.

Runner -> agent (``type``): ``{"type": "pty-opened", "tid"}``, ``{"type": "pty-out", "tid",
"data": base64}``, ``{"type": "pty-exit", "tid", "exitCode"}`` (the shell ended by itself; the
terminal is gone), ``{"type": "pty-error", "tid", "msg"}``.

Output is flow-controlled end to end: at most :data:`OUTPUT_WINDOW` bytes may be unacknowledged;
past it the pty is not read, so a shell whose client stops reading blocks on its writes instead
of filling memory. When the agent connection drops every terminal is closed (its client is
gone with it).
"""

from __future__ import annotations

import base64
import binascii
import errno
import fcntl
import os
import selectors
import signal
import struct
import termios
import time
from collections.abc import Callable
from typing import Any

from .protocol import encode_frame

__all__ = ["INPUT_LIMIT", "MAX_TERMINALS", "OUTPUT_WINDOW", "Terminals"]

MAX_TERMINALS = 4
#: Output bytes sent but not yet acknowledged by the agent, at most.
OUTPUT_WINDOW = 256 * 1024
#: Keystrokes the shell has not read yet, at most.
INPUT_LIMIT = 64 * 1024
_READ_CHUNK = 32 * 1024
_SHELLS = ("/bin/bash", "/bin/sh")
WORK_DIR = "/home/work"


def _winsize(rows: int, cols: int) -> bytes:
    return struct.pack("HHHH", max(1, min(rows, 1000)), max(1, min(cols, 1000)), 0, 0)


def _dimension(message: dict[str, Any], key: str, default: int) -> int:
    value = message.get(key, default)
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 1000 else default


def _session_members(sid: int) -> list[int]:
    """Pids of the processes whose session is ``sid`` (the shell's; what it started, background
    jobs included, unless they called setsid themselves)."""
    found: list[int] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp session ...": comm may hold anything, so split after it
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 3 and fields[3] == str(sid).encode():
            found.append(int(name))
    return found


class _Terminal:
    def __init__(self, owner: Terminals, tid: str, rows: int, cols: int) -> None:
        self.owner = owner
        self.tid = tid
        self.inbuf = bytearray()
        self.unacked = 0
        self.registered = 0
        self.rows, self.cols = rows, cols
        self.pid, self.fd = self._spawn(rows, cols)

    def _spawn(self, rows: int, cols: int) -> tuple[int, int]:
        shell = next((s for s in _SHELLS if os.access(s, os.X_OK)), "/bin/sh")
        env = dict(self.owner.env())
        env.setdefault("HOME", WORK_DIR)
        env["TERM"] = "xterm-256color"
        env["SHELL"] = shell
        pid, fd = os.forkpty()
        if pid == 0:  # the child: only async-signal-safe-ish work, then exec
            try:
                os.chdir(self.owner.work_dir if os.path.isdir(self.owner.work_dir) else "/")
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
                    signal.signal(sig, signal.SIG_DFL)  # the runner ignores SIGINT; a shell must not
                os.execve(shell, ["-" + os.path.basename(shell)], env)  # "-": a login shell
            finally:
                os._exit(127)
        # The size is set here, not in the child: a child slow to run (a loaded host) would set
        # it after a resize the client sent at once, and the shell would keep 24x80.
        fcntl.ioctl(fd, termios.TIOCSWINSZ, _winsize(rows, cols))
        os.set_blocking(fd, False)
        return pid, fd

    # --- selector bookkeeping ---------------------------------------------------------------

    def update(self) -> None:
        sel = self.owner.sel
        wanted = (selectors.EVENT_READ if self.unacked < OUTPUT_WINDOW else 0) | (
            selectors.EVENT_WRITE if self.inbuf else 0)
        if wanted == self.registered:
            return
        if not wanted:
            sel.unregister(self.fd)
        elif not self.registered:
            sel.register(self.fd, wanted, self.on_ready)
        else:
            sel.modify(self.fd, wanted, self.on_ready)
        self.registered = wanted

    def on_ready(self, key: selectors.SelectorKey) -> None:
        if key.events & selectors.EVENT_WRITE:
            self.flush_input()
        if self.fd >= 0 and key.events & selectors.EVENT_READ:
            self.read_output()

    def read_output(self) -> None:
        try:
            data = os.read(self.fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: every slave end is closed (the shell and its children are gone)
            data = b""
        if not data:
            self.owner.ended(self, self.kill())
            return
        self.unacked += len(data)
        self.owner.emit({"type": "pty-out", "tid": self.tid, "data": base64.b64encode(data).decode("ascii")})
        self.update()

    def write_input(self, data: bytes) -> None:
        room = INPUT_LIMIT - len(self.inbuf)
        self.inbuf += data[:max(room, 0)]
        self.flush_input()

    def flush_input(self) -> None:
        if self.inbuf:
            try:
                written = os.write(self.fd, self.inbuf)
            except BlockingIOError:
                written = 0
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                written = len(self.inbuf)  # the shell is gone: the read side reports it
            del self.inbuf[:written]
        self.update()

    def ack(self, nbytes: int) -> None:
        self.unacked = max(0, self.unacked - nbytes)
        self.update()

    def resize(self, rows: int, cols: int) -> None:
        self.rows, self.cols = rows, cols
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, _winsize(rows, cols))

    def kill(self) -> int:
        """Kill the shell and everything in its session, close the pty; the shell's exit status."""
        if self.registered:
            self.owner.sel.unregister(self.fd)
            self.registered = 0
        members = _session_members(self.pid)
        for pid in {self.pid, *members}:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        status = self._reap(self.pid)
        # Orphans of the shell belong to the container's PID 1 (the runner): reap them too.
        for pid in members:
            if pid != self.pid:
                self._reap(pid, wait=0.2)
        return status

    @staticmethod
    def _reap(pid: int, wait: float = 1.0) -> int:
        deadline = time.monotonic() + wait
        while True:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return -1
            if done:
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() > deadline:
                return -1
            time.sleep(0.005)  # a SIGKILLed process is gone within microseconds


class Terminals:
    """The kernel's terminals, on the runner's selector; records go out on its connection."""

    def __init__(self, runner: Any, env: Callable[[], dict[str, str]], work_dir: str = WORK_DIR) -> None:
        self.runner = runner
        self.env = env
        self.work_dir = work_dir
        self.live: dict[str, _Terminal] = {}

    @property
    def sel(self) -> selectors.BaseSelector:
        selector: selectors.BaseSelector = self.runner.sel
        return selector

    def emit(self, record: dict[str, Any]) -> None:
        """Send on the current connection (terminal records belong to no run)."""
        client = self.runner.client
        if client is None:
            return
        was_empty = not client.outbuf
        client.outbuf += encode_frame(record)
        if was_empty:
            self.runner._flush_client()

    def handle(self, message: dict[str, Any]) -> None:
        op, tid = message.get("op"), message.get("tid")
        if not isinstance(tid, str) or not 0 < len(tid) <= 64:
            return
        term = self.live.get(tid)
        if op == "pty-open":
            self._open(tid, message)
        elif term is None:
            if op != "pty-close":
                self.emit({"type": "pty-error", "tid": tid, "msg": "no such terminal"})
        elif op == "pty-in":
            try:
                data = base64.b64decode(str(message.get("data", "")), validate=True)
            except (binascii.Error, ValueError):
                self.emit({"type": "pty-error", "tid": tid, "msg": "stdin data is not base64"})
                return
            term.write_input(data)
        elif op == "pty-resize":
            term.resize(_dimension(message, "rows", 24), _dimension(message, "cols", 80))
        elif op == "pty-ack":
            nbytes = message.get("bytes")
            if isinstance(nbytes, int) and not isinstance(nbytes, bool):
                term.ack(nbytes)
        elif op == "pty-restart":
            term.kill()
            del self.live[tid]
            self._open(tid, {"rows": term.rows, "cols": term.cols}, banner=b"Restarting...\r\n")  # same size
        elif op == "pty-close":
            term.kill()
            del self.live[tid]

    def _open(self, tid: str, message: dict[str, Any], banner: bytes = b"") -> None:
        if tid in self.live:
            self.emit({"type": "pty-error", "tid": tid, "msg": "terminal exists"})
            return
        if len(self.live) >= MAX_TERMINALS:
            self.emit({"type": "pty-error", "tid": tid,
                       "msg": f"too many terminals: at most {MAX_TERMINALS} per session"})
            return
        try:
            term = _Terminal(self, tid, _dimension(message, "rows", 24), _dimension(message, "cols", 80))
        except OSError as exc:
            self.emit({"type": "pty-error", "tid": tid, "msg": f"cannot start a shell: {exc}"})
            return
        self.live[tid] = term
        self.emit({"type": "pty-opened", "tid": tid})
        if banner:
            term.unacked += len(banner)
            self.emit({"type": "pty-out", "tid": tid, "data": base64.b64encode(banner).decode("ascii")})
        term.update()

    def ended(self, term: _Terminal, status: int) -> None:
        if self.live.get(term.tid) is term:
            del self.live[term.tid]
        self.emit({"type": "pty-exit", "tid": term.tid, "exitCode": status})

    def close_all(self) -> None:
        for term in list(self.live.values()):
            term.kill()
        self.live.clear()
