"""The user-code process: runs query-mode code in one persistent ``__main__`` namespace.

The runner starts this in a fresh interpreter (see ``runner._BOOTSTRAP``) with fd 0 on
/dev/null, fd 1 and fd 2 on two pipes the runner reads, and a control socket whose fd number is
passed in argv. Running user code here rather than in the runner means a crash, ``os._exit`` or
an interrupt cannot take the runner down, and anything written to fd 1/2 (``os.system``, C
extensions) is captured like ``print``.

Control messages are newline-delimited JSON.
Runner -> child: ``{"op": "code", "code"}``, ``{"op": "input", "seq", "data"}``,
``{"op": "synced", "seq"}``.
Child -> runner: ``{"op": "sync", "seq", "fd"}``, ``{"op": "waiting-input", "seq", "is_password"}``,
``{"op": "finished", "exitCode"}``.
The runner drains both output pipes before it acts on any child message, so everything written
before a message is emitted before that message's record. ``sync`` uses that to keep stdout and
stderr in order: each time Python-level output switches stream, the child waits until the
runner has drained the other pipe. (Output of subprocesses bypasses all this: its order across
the two streams is only as good as the runner's reading.) Replies carry the request's ``seq`` so that each goes to
the thread that asked, and a reply orphaned by an interrupt is never mistaken for a new one.
"""

from __future__ import annotations

import ast
import builtins
import collections
import io
import json
import os
import signal
import socket
import sys
import threading
import traceback
import types
from collections.abc import Callable
from typing import Any

from . import batchmode, completion, display


class _Control:
    """Blocking control channel to the runner, shared by every thread of user code.

    Any thread may wait for a message (the main loop for ``code``, a writer for ``synced``, an
    ``input()`` for ``input``). Whichever waiter finds no reader active reads the next message
    and files it in an inbox that all waiters check, so a reply never goes to the wrong thread.
    """

    def __init__(self, fd: int) -> None:
        self._sock = socket.socket(fileno=fd)
        # Our subprocesses (os.system, subprocess) must not inherit the control channel.
        self._sock.set_inheritable(False)
        self._rfile = self._sock.makefile("rb")
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        #: Messages read but not yet claimed; bounded, because replies orphaned by an
        #: interrupt are never claimed.
        self._inbox: collections.deque[dict[str, Any]] = collections.deque(maxlen=64)
        self._reading = False
        self._seq = 0
        #: Held across "switch stream + write", so output order is the order of writes even
        #: when several threads print.
        self.write_lock = threading.RLock()
        self._last_fd = 1
        #: True while user code runs: SIGINT raises KeyboardInterrupt right away. Outside it the
        #: interrupt is remembered and raised after the protocol exchange in progress, so a
        #: message is never cut in half. (Signals are only ever handled in the main thread.)
        self.interruptible = False
        self.in_run = False
        self.pending_interrupt = False
        #: Set in processes forked from user code (multiprocessing, os.fork): the channel belongs
        #: to the parent, so a fork writes straight to the pipes and never talks to the runner.
        self.forked = False
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self.forked = True
        # Locks may have been held by threads that do not exist in the fork.
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self.write_lock = threading.RLock()
        self.interruptible = self.in_run = self.pending_interrupt = False
        try:
            # Our copy only: the parent's channel stays open, and the runner still sees EOF
            # as soon as the parent dies.
            self._rfile.close()
            self._sock.close()
        except OSError:
            pass

    def send(self, message: dict[str, Any]) -> None:
        if self.forked:
            return
        data = json.dumps(message).encode() + b"\n"
        with self._send_lock:
            self._sock.sendall(data)

    def wait_for(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        while True:
            with self._cond:
                while True:
                    for message in self._inbox:
                        if match(message):
                            self._inbox.remove(message)
                            return message
                    if not self._reading:
                        self._reading = True
                        break
                    self._cond.wait()
            received: dict[str, Any] | None = None
            try:
                line = self._rfile.readline()
                if not line:
                    # The runner is gone, and with it anyone to report to.
                    os._exit(0)
                received = json.loads(line)
            finally:
                with self._cond:
                    self._reading = False
                    if received is not None:
                        self._inbox.append(received)
                    self._cond.notify_all()

    def _reply(self, op: str, seq: int) -> dict[str, Any]:
        return self.wait_for(lambda m: m.get("op") == op and m.get("seq") == seq)

    def _next_seq(self) -> int:
        with self._send_lock:
            self._seq += 1
            return self._seq

    def _critical_begin(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False
        was = self.interruptible
        self.interruptible = False
        return was

    def _critical_end(self, was: bool) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self.interruptible = was
        if was and self.pending_interrupt:
            self.pending_interrupt = False
            raise KeyboardInterrupt

    def switch_stream(self, fd: int) -> None:
        """Called (under ``write_lock``) before each Python-level write; syncs only when the
        stream changes."""
        if fd == self._last_fd or self.forked:
            return
        was = self._critical_begin()
        try:
            seq = self._next_seq()
            self.send({"op": "sync", "seq": seq, "fd": fd})
            self._reply("synced", seq)
            self._last_fd = fd
        finally:
            self._critical_end(was)

    def request_input(self, prompt: str, is_password: bool) -> str:
        if self.forked:
            raise EOFError("input() is only available in the kernel's main process")
        if prompt:
            sys.stdout.write(prompt)
        was = self._critical_begin()
        try:
            seq = self._next_seq()
            self.send({"op": "waiting-input", "seq": seq, "is_password": is_password})
        finally:
            self._critical_end(was)
        # Waiting for the user must stay interruptible; a reply orphaned by an interrupt stays
        # unclaimed because its seq no longer matches anything.
        reply = self._reply("input", seq)
        data = str(reply.get("data", ""))
        return data[:-1] if data.endswith("\n") else data

    def on_sigint(self, signum: int, frame: types.FrameType | None) -> None:
        if self.interruptible:
            raise KeyboardInterrupt
        if self.in_run:
            self.pending_interrupt = True


class _BinaryOut(io.RawIOBase):
    """``sys.stdout.buffer``: unbuffered writes straight to the pipe."""

    def __init__(self, fd: int, control: _Control) -> None:
        super().__init__()
        self._fd = fd
        self._control = control

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        total = len(view)
        with self._control.write_lock:
            self._control.switch_stream(self._fd)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        return total


class _TextOut(io.TextIOBase):
    """``sys.stdout``/``sys.stderr``: write-through, so output order is the order of writes."""

    def __init__(self, fd: int, name: str, control: _Control) -> None:
        super().__init__()
        self._fd = fd
        self._name = name
        self._binary = _BinaryOut(fd, control)

    @property
    def buffer(self) -> _BinaryOut:  # type: ignore[override]
        return self._binary

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "backslashreplace"

    @property
    def name(self) -> str:
        return self._name

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if s:
            self._binary.write(s.encode("utf-8", "backslashreplace"))
        return len(s)

    def flush(self) -> None:
        pass


class _Stdin(io.TextIOBase):
    """``sys.stdin`` reads turn into ``waiting-input`` requests, as ``input()`` does."""

    def __init__(self, control: _Control) -> None:
        super().__init__()
        self._control = control

    def readable(self) -> bool:
        return True

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        return self._control.request_input("", False) + "\n"

    def read(self, size: int | None = -1) -> str:
        return self.readline()


def _print_exception(exc: BaseException) -> None:
    tb = exc.__traceback__
    # Hide our own frames (and ast.parse's, for syntax errors in the cell): the user should see
    # a traceback that starts in their code.
    while tb is not None and tb.tb_frame.f_code.co_filename in (__file__, ast.__file__):
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb, file=sys.stderr)


def _run(source: str, namespace: dict[str, Any], control: _Control) -> int:
    """Run one cell. Returns the exit code: 0, or 1 when an exception escaped."""
    try:
        control.interruptible = True
        tree = ast.parse(source, "<input>", "exec")
        last: ast.Expression | None = None
        if tree.body and isinstance(tail := tree.body[-1], ast.Expr):
            tree.body.pop()
            last = ast.Expression(tail.value)
        exec(compile(tree, "<input>", "exec"), namespace)
        if last is not None:
            value = eval(compile(last, "<input>", "eval"), namespace)
            if value is not None:
                # Like the original: the repr goes out without a trailing newline.
                sys.stdout.write(repr(value))
        return 0
    except SystemExit as exc:
        # sys.exit() ends the cell, not the kernel: the namespace must survive it.
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException as exc:  # noqa: BLE001 - user code may raise anything
        control.interruptible = False
        try:
            _print_exception(exc)
        except KeyboardInterrupt:
            pass
        return 1
    finally:
        control.interruptible = False


def _install_display(control: _Control) -> None:
    """``import bai_display`` gives user code the rich-output helpers (see :mod:`.display`);
    its items travel over the control channel, in order with stdout/stderr."""

    def emit(kind: str, data: Any) -> None:
        if control.forked:
            return
        # As a stream switch: wait until the runner has passed on everything written before.
        with control.write_lock:
            was = control._critical_begin()
            try:
                seq = control._next_seq()
                control.send({"op": "console", "seq": seq, "type": kind, "data": data})
                control._reply("synced", seq)
            finally:
                control._critical_end(was)

    display._install(emit)
    sys.modules["bai_display"] = display


def _complete(message: dict[str, Any], namespace: dict[str, Any], control: _Control) -> None:
    options = message.get("options")
    try:
        found = completion.complete(namespace, str(message.get("code", "")),
                                    options if isinstance(options, dict) else {})
    except Exception:  # noqa: BLE001 - completion must never take the kernel down
        found = []
    control.send({"op": "completion", "id": message.get("id"), "result": found})


def _run_batch(message: dict[str, Any], control: _Control) -> int:
    """A batch-mode run (see :mod:`.batchmode`); interruptible like query-mode code."""

    def report(status: str, exit_code: int) -> None:
        # Never cut a message in half: an interrupt meanwhile only reaches the step's shell. The
        # next step starts once the runner has passed this status on (its output comes after).
        was, control.interruptible = control.interruptible, False
        try:
            seq = control._next_seq()
            control.send({"op": "step", "seq": seq, "type": status, "exitCode": exit_code})
            control._reply("synced", seq)
        finally:
            control.interruptible = was

    options = message.get("options")
    try:
        control.interruptible = True
        return batchmode.run(options if isinstance(options, dict) else {},
                             str(message.get("work_dir") or os.getcwd()), report)
    finally:
        control.interruptible = False


def main(control_fd: int) -> None:
    control = _Control(control_fd)
    signal.signal(signal.SIGINT, control.on_sigint)
    sys.stdout = _TextOut(1, "<stdout>", control)
    sys.stderr = _TextOut(2, "<stderr>", control)
    sys.stdin = _Stdin(control)
    builtins.input = lambda prompt="": control.request_input(str(prompt), False)
    import getpass

    getpass.getpass = lambda prompt="Password: ", stream=None: control.request_input(str(prompt), True)
    # User code gets a clean __main__ of its own (so pickling classes defined there works).
    main_module = types.ModuleType("__main__")
    main_module.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main_module
    sys.argv = [""]
    namespace = main_module.__dict__
    _install_display(control)
    while True:
        try:
            message = control.wait_for(lambda m: m.get("op") in ("code", "batch", "complete"))
        except KeyboardInterrupt:
            continue
        if message.get("op") == "complete":
            _complete(message, namespace, control)
            continue
        control.in_run = True
        control.pending_interrupt = False
        if message.get("op") == "batch":
            code = _run_batch(message, control)
        else:
            code = _run(str(message.get("code", "")), namespace, control)
        if control.forked:
            # A raw os.fork() in the cell returned here in the fork: it must not report or loop.
            os._exit(code)
        control.in_run = False
        control.pending_interrupt = False
        control.send({"op": "finished", "exitCode": code})
