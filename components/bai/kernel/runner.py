"""The kernel runner: talks to the agent over a unix socket and drives the user-code child process.

Runs inside the kernel container on the image's own python3 (stdlib only)::

    PYTHONPATH=/opt/bai/kernel python3 -s -m bai_kernel [--socket PATH]

The agent protocol (length-prefixed JSON frames) is described in :mod:`.protocol`; the
runner <-> child protocol in :mod:`.child`. The runner CONNECTS to the agent's socket (the
agent owns it, in a directory mounted read-only here) and reconnects with back-off whenever the
connection drops, so a restarted agent gets its kernels back. One ``selectors`` loop multiplexes
the agent connection, the child's control socket and its stdout/stderr pipes. It is
deliberately not asyncio: importing asyncio costs tens of milliseconds, and the runner's
start-up time is most of a kernel's create-to-started time.

The child is a fresh interpreter started without the runner's ``PYTHONPATH``, so user code sees
a clean environment. Code is queued FIFO and handed to the child one run at a time. When the
child dies (crash, ``os._exit``, OOM kill) the current run ends with a non-zero exit code and a
new child is started; its namespace is lost, as with a restarted notebook kernel. The child
makes itself the OOM killer's first choice, so a memory hog takes itself down, not the runner; a
kill by the OOM killer is told apart (the cgroup's ``oom_kill`` counter) and explained to the user.
"""

from __future__ import annotations

import codecs
import collections
import json
import os
import selectors
import signal
import socket
import sys
import time
from typing import Any

from .batch import WORK_DIR, BatchTask
from .files import FileOps
from .protocol import DEFAULT_SOCKET_PATH, FrameDecoder, ProtocolError, encode_frame
from .services import POLL_INTERVAL, Services
from .terminal import Terminals

_READ_CHUNK = 65536
#: Reads from the agent connection: file uploads arrive as frames of ~700 KiB.
_AGENT_READ_CHUNK = 2**20
#: Reconnection back-off: the first retry is immediate, then doubling up to this many seconds.
_RECONNECT_MAX_DELAY = 0.25
#: Output waiting to go to the agent beyond which the child's pipes (and its control channel, to
#: keep records in order) are no longer read, so user code blocks on its next write instead of
#: the runner's memory growing: the agent stops reading while a client is behind. Reading
#: resumes once the backlog is below the low mark.
_BACKLOG_HIGH = 4 * 2**20
_BACKLOG_LOW = 2**20
#: cgroup v2, then v1: where the container's OOM-kill counter and memory limit are.
_OOM_COUNTERS = (("/sys/fs/cgroup/memory.events", "oom_kill"),
                 ("/sys/fs/cgroup/memory/memory.oom_control", "oom_kill"))
_MEMORY_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
#: Environment variables meant for the runner only, never for user code.
_RUNNER_ONLY_ENV = ("PYTHONPATH", "BAI_ORIG_PYTHONPATH")

# ``python3 -s -c`` this: import the child module from our package, then take the package's
# parent back out of sys.path so that user imports are not affected by it.
_BOOTSTRAP = (
    "import sys, importlib\n"
    "_p, _m, _fd = sys.argv[1:4]\n"
    # User code is the OOM killer's first victim, never the runner (raising needs no privilege).
    "try:\n"
    "    with open('/proc/self/oom_score_adj', 'w') as _f: _f.write('1000')\n"
    "except OSError:\n"
    "    pass\n"
    "sys.path.insert(0, _p)\n"
    "try:\n"
    "    _c = importlib.import_module(_m + '.child')\n"
    "finally:\n"
    "    sys.path.remove(_p)\n"
    "_c.main(int(_fd))\n"
)


def _log(msg: str) -> None:
    # The runner's own stderr ends up in the container log (`get_logs`).
    sys.stderr.write(f"bai-kernel: {msg}\n")
    sys.stderr.flush()


def _oom_kills() -> int:
    """How many processes the container's memory cgroup has OOM-killed so far (0 if unknown)."""
    for path, key in _OOM_COUNTERS:
        try:
            with open(path) as f:
                for line in f:
                    name, _, value = line.partition(" ")
                    if name == key:
                        return int(value)
        except (OSError, ValueError):
            continue
    return 0


def _memory_limit() -> str:
    for path in _MEMORY_LIMITS:
        try:
            with open(path) as f:
                raw = f.read().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 2**60:
            return f"{int(raw) / 2**20:.0f} MiB"
    return "unknown"


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _RUNNER_ONLY_ENV}
    # The agent moves a PYTHONPATH the user asked for aside, so that it reaches user code only.
    if orig := os.environ.get("BAI_ORIG_PYTHONPATH"):
        env["PYTHONPATH"] = orig
    return env


class _Child:
    """One user-code process and its three channels."""

    def __init__(self) -> None:
        import subprocess  # here, not at module level: keeps it off the runner's start-up path

        parent_sock, child_sock = socket.socketpair()
        package_dir = os.path.dirname(os.path.abspath(__file__))
        package = __package__ or "bai_kernel"
        # The package's parent directory on sys.path lets ``<package>.child`` be imported.
        parent_dir = os.path.dirname(package_dir)
        for _ in range(package.count(".")):
            parent_dir = os.path.dirname(parent_dir)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-s", "-c", _BOOTSTRAP, parent_dir, package, str(child_sock.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(child_sock.fileno(),),
                env=_child_env(),
                # Own process group: an interrupt reaches the code's subprocesses too, as ^C would.
                start_new_session=True,
            )
        finally:
            child_sock.close()
        self.ctrl = parent_sock
        self.ctrl.setblocking(False)
        self.ctrl_buf = bytearray()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.out_fd, self.err_fd = self.proc.stdout.fileno(), self.proc.stderr.fileno()
        self.pipes = {self.out_fd: "stdout", self.err_fd: "stderr"}
        self.decoders = {fd: codecs.getincrementaldecoder("utf-8")("replace") for fd in self.pipes}
        for fd in self.pipes:
            os.set_blocking(fd, False)
        self.runs = 0
        #: The pipe Python-level output last switched to: when both pipes have data at once,
        #: that one is read first (its data most likely came first).
        self.current_fd = self.out_fd

    def signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.proc.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def reap(self) -> int:
        """Wait for the exited child; returns a shell-style exit status."""
        import subprocess

        try:
            rc = self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            self.signal_group(signal.SIGKILL)
            rc = self.proc.wait()
        return 128 - rc if rc < 0 else rc

    def close(self) -> None:
        self.ctrl.close()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


class _Client:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = FrameDecoder()
        self.outbuf = bytearray()


class Runner:
    def __init__(self, socket_path: str, work_dir: str = WORK_DIR) -> None:
        self.socket_path = socket_path
        self.work_dir = work_dir
        #: Files in and out of /home/work (:mod:`.files`).
        self.files = FileOps(work_dir, self._send_oob, self._backlog)
        self.sel = selectors.DefaultSelector()
        self.client: _Client | None = None
        self.child: _Child | None = None
        #: Queued runs (the child's ``code`` or ``batch`` message) with the generation of the
        #: connection they came over.
        self.queue: collections.deque[tuple[int, dict[str, Any]]] = collections.deque()
        self.busy = False
        #: Connections are numbered; a run's records go out only on the connection that sent it
        #: (the agent fails the runs of a lost connection, so a later one must not see them).
        self.conn_gen = 0
        self.run_gen = 0
        #: seq of the child's pending input request, None when nothing waits for input.
        self.input_seq: int | None = None
        self.running = True
        #: When to try connecting to the agent next (monotonic) and the current back-off.
        self.next_connect = 0.0
        self.connect_delay = 0.0
        self.connected_at = 0.0
        self.oom_kills = _oom_kills()
        #: A batch session's startup command, once the agent has asked for it.
        self.batch: BatchTask | None = None
        #: While output is held back: the child's selector keys taken out (see _BACKLOG_HIGH).
        self.paused: list[selectors.SelectorKey] = []
        #: Login shells on ptys, for the agent's terminal streams.
        self.terminals = Terminals(self, _child_env)
        #: Service ports started on demand (start-service).
        self.services = Services(self._send, _child_env)

    # --- agent connection -------------------------------------------------------------------

    def connect(self) -> bool:
        """One non-blocking connection attempt; on failure the next one is scheduled."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(self.socket_path)
        except OSError:
            # Not listening (yet, or any more), socket missing, or its backlog full (EAGAIN).
            sock.close()
            now = time.monotonic()
            self.next_connect = now + self.connect_delay
            self.connect_delay = min(max(self.connect_delay * 2, 0.01), _RECONNECT_MAX_DELAY)
            return False
        self.client = _Client(sock)
        self.connected_at = time.monotonic()
        self.sel.register(sock, selectors.EVENT_READ, self._on_client)
        self.conn_gen += 1
        self.queue.clear()  # sent over an older connection: the agent has failed them
        self.files.reset()
        if self.busy and self.input_seq is not None and self.child is not None:
            # Nobody can answer the old run's input() any more; free the FIFO.
            self.input_seq = None
            self.child.signal_group(signal.SIGINT)
        if self.batch is not None and self.batch.exit_code is not None and self.batch.unreported:
            self._send(self.batch.result_record())
        return True

    def spawn_child(self) -> None:
        child = _Child()
        self.child = child
        self.sel.register(child.ctrl, selectors.EVENT_READ, self._on_ctrl)
        for fd in child.pipes:
            self.sel.register(fd, selectors.EVENT_READ, self._on_pipe)

    def _drop_client(self) -> None:
        if self.client is None:
            return
        self._resume_child_output()  # what it writes now is dropped anyway
        self.sel.unregister(self.client.sock)
        self.client.sock.close()
        self.client = None
        self.terminals.close_all()  # their clients went with the connection
        now = time.monotonic()
        # Reconnect at once after a connection that lived a while (agent restarted); keep
        # backing off when connections keep dying young (an agent that refuses us).
        if now - self.connected_at > 1.0:
            self.connect_delay = 0.0
        self.next_connect = now + self.connect_delay

    def _on_client(self, key: selectors.SelectorKey) -> None:
        client = self.client
        if client is None:
            return
        if key.events & selectors.EVENT_WRITE and client.outbuf:
            self._flush_client()
            if self.client is None:
                return
        try:
            data = client.sock.recv(_AGENT_READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop_client()
            return
        try:
            messages = client.decoder.feed(data)
        except (ProtocolError, ValueError) as exc:
            _log(f"dropping agent connection: {exc}")
            self._drop_client()
            return
        for message in messages:
            self._handle_op(message)

    @property
    def stale_run(self) -> bool:
        return self.busy and self.run_gen != self.conn_gen

    def _send(self, record: dict[str, Any]) -> None:
        client = self.client
        if client is None or (self.stale_run and record.get("type") not in ("pong", "service-result")):
            return  # nobody listens, or the run's connection is gone: its output is not kept
        was_empty = not client.outbuf
        client.outbuf += encode_frame(record)
        if was_empty:
            self._flush_client()

    def _send_oob(self, record: dict[str, Any] | bytes) -> None:
        """Send a record (or a ready-made frame) that belongs to no run (file transfers,
        completions), even while a run of an older connection is still going."""
        client = self.client
        if client is None:
            return
        was_empty = not client.outbuf
        client.outbuf += record if isinstance(record, bytes) else encode_frame(record)
        if was_empty:
            self._flush_client()

    def _backlog(self) -> int | None:
        return None if self.client is None else len(self.client.outbuf)

    def _flush_client(self) -> None:
        client = self.client
        if client is None:
            return
        try:
            sent = client.sock.send(client.outbuf)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._drop_client()
            return
        del client.outbuf[:sent]
        if self.paused and len(client.outbuf) < _BACKLOG_LOW:
            self._resume_child_output()
        if len(client.outbuf) < _READ_CHUNK:
            self.files.pump()  # downloads send more as the backlog drains
            if self.client is not client:
                return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.outbuf else 0)
        self.sel.modify(client.sock, events, self._on_client)

    def _handle_op(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if isinstance(op, str) and op.startswith("pty-"):
            self.terminals.handle(message)  # :mod:`.terminal`
            return
        if op == "code":
            self.queue.append((self.conn_gen, {"op": "code", "code": str(message.get("code", ""))}))
            self._dispatch()
        elif op == "batch-exec":  # mode=batch: clean/build/exec (:mod:`.batchmode`), queued like code
            options = message.get("options")
            self.queue.append((self.conn_gen, {"op": "batch", "work_dir": self.work_dir,
                                               "options": options if isinstance(options, dict) else {}}))
            self._dispatch()
        elif op == "complete":
            if self.busy or self.child is None:  # the namespace is in use: nothing to offer now
                self._send_oob({"type": "completion-result", "id": message.get("id"), "data": []})
            else:
                self._ctrl_send({"op": "complete", "id": message.get("id"), "code": str(message.get("code", "")),
                                 "options": message.get("options")})
        elif isinstance(op, str) and op.startswith("file-"):
            self.files.handle(message)
        elif op == "input":
            if self.input_seq is not None and self.child is not None:
                self._ctrl_send({"op": "input", "seq": self.input_seq, "data": str(message.get("data", ""))})
                self.input_seq = None
        elif op == "interrupt":
            if self.busy and self.child is not None:
                self.input_seq = None
                self.child.signal_group(signal.SIGINT)
        elif op == "ping":
            self._send({"type": "pong"})
        elif op == "exit":
            self.running = False
        elif op == "batch":
            self._start_batch(str(message.get("command", "")))
        elif op == "batch-ack":
            if self.batch is not None and self.batch.exit_code is not None:
                self.batch.unreported = False
        elif op == "restart":
            self._restart_child()
            self._send({"type": "restarted"})
        elif op == "start-service":
            self.services.start(message)
        elif op == "shutdown-service":
            self.services.stop(message)

    # --- batch startup command and restart ---------------------------------------------------

    def _start_batch(self, command: str) -> None:
        if self.batch is not None:
            return  # once per kernel, whatever the agent sends again
        try:
            self.batch = BatchTask(command, _child_env())
        except OSError as exc:
            _log(f"cannot start the batch command: {exc}")
            self._send({"type": "batch-finished", "data": {"exitCode": 127}})
            return
        if self.batch.pidfd is not None:
            self.sel.register(self.batch.pidfd, selectors.EVENT_READ, self._on_batch_exit)

    def _on_batch_exit(self, key: selectors.SelectorKey) -> None:
        batch = self.batch
        if batch is None:
            return
        if batch.pidfd is not None and batch.pidfd == key.fd:
            self.sel.unregister(key.fd)
        if batch.poll():
            _log(f"batch command exited with status {batch.exit_code}")
            self._send(batch.result_record())

    def _restart_child(self) -> None:
        """A fresh user-code process: the old one (and its process group) is killed, a run it
        was on finishes with its exit status, code queued behind it runs in the new one."""
        child = self.child
        if child is not None:
            child.signal_group(signal.SIGKILL)
            self._on_child_exit(child)
        if self.child is None:
            self.spawn_child()

    # --- child ------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        if self.busy or not self.queue:
            return
        if self.child is None:
            self.spawn_child()
        assert self.child is not None
        self.busy = True
        self.child.runs += 1
        self.run_gen, run = self.queue.popleft()
        self._ctrl_send(run)

    def _ctrl_send(self, message: dict[str, Any]) -> None:
        assert self.child is not None
        data = json.dumps(message).encode() + b"\n"
        # Control messages are small and the child is either reading or about to; a blocking
        # send keeps this simple (the socket buffer holds far more than one message).
        self.child.ctrl.setblocking(True)
        try:
            self.child.ctrl.sendall(data)
        except OSError:
            pass  # the child is dead; _on_ctrl sees EOF and recovers
        finally:
            self.child.ctrl.setblocking(False)

    def _on_pipe(self, key: selectors.SelectorKey) -> None:
        child = self.child
        if child is None or key.fd not in child.pipes:
            return
        self._read_pipe(child, key.fd, once=True)
        if self.client is not None and len(self.client.outbuf) >= _BACKLOG_HIGH and not self.paused:
            self._pause_child_output(child)

    def _pause_child_output(self, child: _Child) -> None:
        registered = self.sel.get_map()
        for fd in (*child.pipes, child.ctrl.fileno()):
            if fd in registered:
                self.paused.append(self.sel.unregister(fd))

    def _resume_child_output(self) -> None:
        paused, self.paused = self.paused, []
        for key in paused:
            try:
                self.sel.register(key.fileobj, key.events, key.data)
            except (ValueError, KeyError, OSError):
                pass  # closed meanwhile

    def _read_pipe(self, child: _Child, fd: int, once: bool = False) -> None:
        kind = child.pipes[fd]
        while True:
            try:
                data = os.read(fd, _READ_CHUNK)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                # EOF: the child (and every process that shared the pipe) has closed it.
                self.sel.unregister(fd)
                tail = child.decoders[fd].decode(b"", final=True)
                if tail:
                    self._send({"type": kind, "data": tail})
                return
            text = child.decoders[fd].decode(data)
            if text:
                self._send({"type": kind, "data": text})
            if once:
                return

    def _drain_pipes(self, child: _Child) -> None:
        for fd in child.pipes:
            if fd in self.sel.get_map():
                self._read_pipe(child, fd)

    def _on_ctrl(self, key: selectors.SelectorKey) -> None:
        child = self.child
        if child is None:
            return
        try:
            data = child.ctrl.recv(_READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._on_child_exit(child)
            return
        child.ctrl_buf += data
        # Whatever the child wrote before this message must be emitted before acting on it.
        self._drain_pipes(child)
        while (nl := child.ctrl_buf.find(b"\n")) >= 0:
            line = bytes(child.ctrl_buf[:nl])
            del child.ctrl_buf[: nl + 1]
            try:
                message = json.loads(line)
            except ValueError:
                continue
            self._handle_child_message(message)

    def _handle_child_message(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "sync":
            if self.child is not None:
                self.child.current_fd = self.child.err_fd if message.get("fd") == 2 else self.child.out_fd
            self._ctrl_send({"op": "synced", "seq": message.get("seq")})
        elif op == "waiting-input":
            if self.stale_run and self.child is not None:
                self.child.signal_group(signal.SIGINT)  # nobody could ever answer it
                return
            self.input_seq = message.get("seq")
            self._send({"type": "waiting-input", "data": {"is_password": bool(message.get("is_password"))}})
        elif op == "finished":
            self._finish(int(message.get("exitCode", 0)))
        elif op == "console" and message.get("type") in ("media", "html", "log"):
            self._send({"type": message["type"], "data": message.get("data")})  # bai_display items
            self._ctrl_send({"op": "synced", "seq": message.get("seq")})
        elif op == "step" and message.get("type") in ("clean-finished", "build-finished"):
            self._send({"type": message["type"], "data": {"exitCode": int(message.get("exitCode", 1))}})
            self._ctrl_send({"op": "synced", "seq": message.get("seq")})
        elif op == "completion":
            found = message.get("result")
            self._send_oob({"type": "completion-result", "id": message.get("id"),
                            "data": found if isinstance(found, list) else []})

    def _finish(self, exit_code: int) -> None:
        self._send({"type": "finished", "data": {"exitCode": exit_code}})
        self.busy = False
        self.input_seq = None
        self._dispatch()

    def _on_child_exit(self, child: _Child) -> None:
        self._resume_child_output()
        self._drain_pipes(child)
        self.sel.unregister(child.ctrl)
        for fd in child.pipes:
            if fd in self.sel.get_map():
                self.sel.unregister(fd)
        rc = child.reap()
        child.close()
        self.child = None
        oom_kills = _oom_kills()
        oom_killed = rc == 128 + signal.SIGKILL and oom_kills > self.oom_kills
        self.oom_kills = oom_kills
        _log(f"user-code process exited with status {rc}" + (" (OOM-killed)" if oom_killed else ""))
        if oom_killed:
            self._send({"type": "oom-killed"})  # the agent reports it (Docker's event may not come)
        if self.busy:
            if oom_killed:
                why = (f"\nThe kernel process was killed for exceeding the memory limit ({_memory_limit()}); "
                       "its variables are lost.\n")
            else:
                why = f"\nThe kernel process exited (status {rc}); its variables are lost.\n"
            self._send({"type": "stderr", "data": why})
            # The run did not finish normally, whatever status the process left with.
            self._finish(rc if rc != 0 else 1)
        # Start the next child right away so the next run does not pay for it, unless this one
        # never ran anything (a child that dies at start-up would otherwise respawn forever).
        if child.runs and self.child is None:
            self.spawn_child()

    # --- main loop --------------------------------------------------------------------------

    def serve(self) -> None:
        while self.running:
            timeout = None
            if self.batch is not None and self.batch.pidfd is None and self.batch.exit_code is None:
                self._on_batch_exit_polled()
                timeout = 0.2  # no pidfd on this kernel: poll the batch command
            if self.services.starting:
                self.services.poll()
                timeout = min(POLL_INTERVAL, timeout if timeout is not None else 1e9)
            if self.client is None:
                timeout = min(self.next_connect - time.monotonic(), timeout if timeout is not None else 1e9)
                if self.next_connect <= time.monotonic():
                    self.connect()
                    continue
            ready = self.sel.select(timeout)
            if len(ready) > 1 and self.child is not None:
                # Control messages first (they drain the pipes themselves), then the pipe most
                # recently written by Python code.
                first = self.child.current_fd
                ctrl = self.child.ctrl.fileno()
                ready.sort(key=lambda item: 0 if item[0].fd == ctrl else 1 if item[0].fd == first else 2)
            for key, _events in ready:
                try:
                    key.data(key)
                except Exception as exc:  # a bug here must not take the kernel down
                    _log(f"internal error: {exc!r}")
                    import traceback

                    traceback.print_exc()
                if not self.running:
                    break
        # Let the agent see what is already queued for it, then leave.
        if self.client is not None and self.client.outbuf:
            self.client.sock.setblocking(True)
            try:
                self.client.sock.sendall(self.client.outbuf)
            except OSError:
                pass

    def _on_batch_exit_polled(self) -> None:
        batch = self.batch
        if batch is not None and batch.exit_code is None and batch.poll():
            _log(f"batch command exited with status {batch.exit_code}")
            self._send(batch.result_record())

    def shutdown(self) -> None:
        self.terminals.close_all()
        self.services.shutdown()
        if self.child is not None:
            self.child.signal_group(signal.SIGKILL)
        if self.batch is not None and self.batch.exit_code is None:
            try:
                os.killpg(self.batch.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    socket_path = DEFAULT_SOCKET_PATH
    work_dir = WORK_DIR
    while len(args) >= 2 and args[0] in ("--socket", "--work-dir"):
        if args[0] == "--socket":
            socket_path = args[1]
        else:
            work_dir = args[1]
        del args[:2]
    signal.signal(signal.SIGTERM, _on_sigterm)
    # SIGINT is for the user code, never for the runner itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    runner = Runner(socket_path, work_dir)
    # Connect before starting the child: the agent counts the kernel as started on our
    # connection, and the child's start-up then overlaps with the agent's bookkeeping.
    runner.connect()
    try:
        runner.spawn_child()
        runner.serve()
    except SystemExit:
        pass
    finally:
        runner.shutdown()
    return 0
