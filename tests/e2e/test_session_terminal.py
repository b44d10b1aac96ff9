"""`backend.ai session terminal NAME` on the installed node, driven from a local pseudo-terminal as a
user's terminal would: commands run in the session's shell, the remote size follows the local
window, and the command ends when the remote shell exits. Piped input works too."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time

from .conftest import VENV_BIN, unique_name


def _read_until(fd: int, wanted: bytes, seen: bytearray, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while wanted not in seen:
        left = end - time.monotonic()
        assert left > 0, f"never saw {wanted!r}: {bytes(seen)[-2000:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child has gone
                chunk = b""
            assert chunk, f"the terminal ended before {wanted!r}: {bytes(seen)[-2000:]!r}"
            seen += chunk


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def test_interactive_terminal(bai, node_env) -> None:
    name = unique_name("term")
    bai("session", "create", "-t", name, "python")
    try:
        pid, fd = pty.fork()
        if pid == 0:  # the child: our CLI on the pty as its controlling terminal
            # the window has its size before the program starts, as a terminal emulator's does (set
            # from the parent it raced the CLI's first size read, which then saw 24x80)
            _set_size(0, 30, 100)
            os.execve(str(VENV_BIN / "backend.ai"), ["backend.ai", "session", "terminal", name], node_env)
        try:
            seen = bytearray()
            _read_until(fd, b"$ ", seen)  # the remote prompt
            os.write(fd, b"echo term-$((6*7)) $(id -un)\r")
            _read_until(fd, b"term-42 work", seen)
            os.write(fd, b"stty size\r")
            _read_until(fd, b"30 100", seen)
            _set_size(fd, 45, 150)  # the window changes: SIGWINCH, then a resize frame
            end = time.monotonic() + 30
            while b"45 150" not in seen:
                assert time.monotonic() < end, bytes(seen)[-1000:]
                os.write(fd, b"stty size\r")
                try:
                    _read_until(fd, b"45 150", seen, deadline=1.0)
                except AssertionError:
                    continue
            os.write(fd, b"exit\r")
            end = time.monotonic() + 30
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                assert time.monotonic() < end, "the CLI did not end with the shell"
                select.select([fd], [], [], 0.1)
                try:
                    os.read(fd, 65536)
                except OSError:
                    pass
            assert os.waitstatus_to_exitcode(status) == 0
        finally:
            os.close(fd)
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        proc = subprocess.run([str(VENV_BIN / "backend.ai"), "session", "terminal", name], env=node_env,
                              input="echo piped-$((2*21))\nexit\n", capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "piped-42" in proc.stdout, (proc.stdout, proc.stderr)
    finally:
        bai("session", "destroy", name, check=False)
    proc = bai("session", "terminal", name, check=False, timeout=60)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)  # no such session any more
