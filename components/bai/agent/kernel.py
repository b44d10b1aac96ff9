"""The agent's end of one kernel runner connection, and query-mode run bookkeeping.

Protocol: :mod:`bai.kernel.protocol` (length-prefixed JSON frames over a unix socket). The agent
LISTENS, on ``<ipc dir>/agent.sock``: the IPC directory is the agent's own, root-owned, and
mounted read-only into the container, where the runner connects (and reconnects after a drop
or an agent restart). So the container writes no host path and the agent opens none it planted.

Everything read from the container is bounded: frames by :data:`MAX_RECORD_FRAME` (a longer
header drops the connection before anything is allocated), each run's unread output by
``output_limit`` bytes (the oldest output goes first and a marker entry says how much), and the
finished-but-uncollected runs by :data:`_MAX_UNCOLLECTED`.

The runner executes code FIFO and ends every run with exactly one ``finished`` record, so runs
here are a FIFO as well: records always belong to the oldest unfinished run. Each ``execute``
call returns what its run produced since the previous call, as soon as the run finishes or waits
for input, or after ``flush_timeout`` with ``continued``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import secrets
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bai.common.agent_rpc import InvalidInput
from bai.kernel.protocol import (
    HEADER_SIZE,
    MAX_RECORD_FRAME,
    ProtocolError,
    decode_body,
    decode_header,
    encode_frame,
)

from .files import RunnerFiles
from .terminal import TerminalHub

log = logging.getLogger(__name__)

#: Unread output a run may hold, by default (``[container] output-buffer-size``).
DEFAULT_OUTPUT_LIMIT = 4 * 2**20
#: Exit code reported for runs whose kernel went away (the manager uses the same for vanished kernels).
EXIT_CODE_KERNEL_GONE = 130
#: Finished runs nobody collected are kept this many at most (a client may never come back).
_MAX_UNCOLLECTED = 64
_CONSOLE_TYPES = frozenset({"stdout", "stderr", "media", "html", "log", "completion"})
#: How long the agent stops reading a runner whose run's unread output nobody takes (see _hold_back).
BACKPRESSURE_WAIT = 5.0
#: How long a call waits for a runner that is (re)connecting: its back-off is at most 0.25 s.
RECONNECT_WAIT = 5.0
#: How long a write to the runner may block (a runner that stops reading is dropped).
SEND_TIMEOUT = 10.0
#: Minimum gap between two accepted connections of one kernel: code in the container could
#: otherwise make the agent accept (and drop) connections in a tight loop.
_ACCEPT_GAP = 0.05
SOCKET_NAME = "agent.sock"


class RunnerUnavailable(Exception):
    pass


def _text_size(text: str) -> int:
    # isascii() is O(1) on CPython strings; only non-ASCII text is encoded to be measured.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _data_size(data: Any) -> int:
    if isinstance(data, str):
        return _text_size(data)
    return len(json.dumps(data, default=str))


class _Entry:
    """One console entry; stdout/stderr text is kept as chunks and joined once, when reported
    (appending to one growing string would be quadratic in the number of chunks)."""

    __slots__ = ("kind", "chunks", "size", "data")

    def __init__(self, kind: str, data: Any = None) -> None:
        self.kind = kind
        self.chunks: collections.deque[str] = collections.deque()
        self.size = 0 if data is None else _data_size(data)
        self.data = data

    def append(self, text: str) -> int:
        size = _text_size(text)
        self.chunks.append(text)
        self.size += size
        return size

    def drop_front(self, nbytes: int) -> int:
        """Drop at least ``nbytes`` bytes of the oldest text (fewer only if there is less);
        returns how many were dropped."""
        dropped = 0
        while self.chunks and dropped < nbytes:
            chunk = self.chunks[0]
            size = _text_size(chunk)
            if size <= nbytes - dropped:
                self.chunks.popleft()
                dropped += size
                continue
            cut = nbytes - dropped
            if chunk.isascii():
                rest = chunk[cut:]
            else:
                rest = chunk.encode("utf-8", "surrogatepass")[cut:].decode("utf-8", "ignore")
            self.chunks[0] = rest
            dropped += size - _text_size(rest)
        self.size -= dropped
        return dropped

    def to_json(self) -> list[Any]:
        return [self.kind, "".join(self.chunks) if self.data is None else self.data]


@dataclass
class _Run:
    run_id: str
    #: Unread output kept at most, in bytes; the oldest goes first.
    limit: int = DEFAULT_OUTPUT_LIMIT
    console: collections.deque[_Entry] = field(default_factory=collections.deque)
    size: int = 0
    #: Bytes dropped since the last read, reported by a marker entry in front of the console.
    dropped: int = 0
    #: ("finished", exit code) or ("waiting-input", options) until an execute call reports it.
    terminal: tuple[str, Any] | None = None
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    finished: bool = False
    #: Batch mode: results closed by clean-finished/build-finished, not yet reported; each
    #: holds the output of its own step.
    closed: collections.deque[dict[str, Any]] = field(default_factory=collections.deque)
    #: Set whenever a client takes the output (see KernelRunner._hold_back).
    taken: asyncio.Event = field(default_factory=asyncio.Event)
    #: Nobody took the output within BACKPRESSURE_WAIT: its oldest output is dropped instead.
    abandoned: bool = False

    def close_step(self, status: str, exit_code: int) -> None:
        """A batch step ended: what it printed is reported with its status, apart from later output."""
        self.terminal = (status, exit_code)
        self.closed.append(self._take())
        self.wakeup.set()

    def add(self, kind: str, data: Any) -> None:
        if kind in ("stdout", "stderr") and isinstance(data, str):
            if not self.console or self.console[-1].kind != kind or self.console[-1].data is not None:
                self.console.append(_Entry(kind))
            self.size += self.console[-1].append(data)
        else:
            entry = _Entry(kind, data)
            self.console.append(entry)
            self.size += entry.size
        if self.size > self.limit:
            self._drop_oldest(self.size - self.limit)
        if self.size >= self.limit // 2:
            self.wakeup.set()  # a waiting execute call returns ("continued") rather than let it pile up

    def _drop_oldest(self, excess: int) -> None:
        while excess > 0 and self.console:
            first = self.console[0]
            if first.data is not None or first.size <= excess:
                self.console.popleft()
                dropped = first.size
            else:
                dropped = first.drop_front(excess)
            self.size -= dropped
            self.dropped += dropped
            excess -= dropped

    def take(self) -> dict[str, Any]:
        if self.closed:
            result = self.closed.popleft()
            if not self.closed and self.terminal is None:
                self.wakeup.clear()
            return result
        return self._take()

    def _take(self) -> dict[str, Any]:
        self.taken.set()
        self.abandoned = False
        console, self.console, self.size = self.console, collections.deque(), 0
        terminal, self.terminal = self.terminal, None
        self.wakeup.clear()
        entries = [e.to_json() for e in console]
        if self.dropped:
            entries.insert(0, ["stderr", f"[bai: {self.dropped} bytes of earlier output were dropped; "
                                         f"a run keeps at most {self.limit} bytes of unread output]\n"])
            self.dropped = 0
        status, exit_code, options = "continued", None, None
        if terminal is not None:
            status = terminal[0]
            if status in ("finished", "clean-finished", "build-finished"):
                exit_code = terminal[1]
            else:
                options = terminal[1]
        return {"runId": self.run_id, "status": status, "console": entries,
                "exitCode": exit_code, "options": options, "files": []}


def console_item(kind: str, data: Any) -> Any:
    """The data of a console record as the API shows it, or None when its shape is wrong (the
    container is not trusted): media ``[mime, str]``, html ``str``, log four strings."""
    if kind in ("stdout", "stderr", "html", "completion"):
        return "" if data is None else data if isinstance(data, str) or kind == "completion" else None
    if kind == "media":
        ok = isinstance(data, list) and len(data) == 2 and all(isinstance(x, str) for x in data)
        return data if ok else None
    if kind == "log":
        ok = isinstance(data, list) and len(data) == 4 and all(isinstance(x, str) for x in data)
        return data if ok else None
    return None


class KernelRunner:
    """The agent's listening socket for one kernel and the runner's current connection.

    :meth:`listen` first, then the container may start; :meth:`wait_ready` waits for the
    runner's first connection. A new connection replaces the old one (the runner reconnects
    only after losing its connection)."""

    def __init__(self, kernel_id: str, socket_path: Path, *, owner: tuple[int, int] | None = None,
                 output_limit: int = DEFAULT_OUTPUT_LIMIT) -> None:
        self.kernel_id = kernel_id
        self.socket_path = socket_path
        #: uid/gid the socket is handed to: the container's user must be able to connect.
        self.owner = owner
        self.output_limit = output_limit
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._connected = asyncio.Event()
        #: Unfinished runs in the order the runner will execute them.
        self._pending: collections.deque[_Run] = collections.deque()
        #: Every run an execute call may still ask about, by run ID.
        self._runs: dict[str, _Run] = {}
        self._pong: asyncio.Future[None] | None = None
        self._restarted: asyncio.Future[None] | None = None
        #: Called with the exit code when a batch session's startup command ends (see
        #: :mod:`bai.kernel.batch`); it acknowledges with :meth:`ack_batch` once passed on.
        self.on_batch_finished: Callable[[int], Coroutine[Any, Any, None]] | None = None
        #: the runner saw its user-code process killed by the cgroup's OOM killer
        self.on_oom_killed: Callable[[], Coroutine[Any, Any, None]] | None = None
        self._batch_reports: set[asyncio.Task[None]] = set()
        #: Terminals (login shells on ptys) relayed to the manager's websockets.
        self.terminals = TerminalHub(self)
        #: start-service requests waiting for their service-result, by request id.
        self._service_replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        #: Files in and out of the kernel (bai.agent.files), and completion requests by id.
        self.files = RunnerFiles(self._send)
        self._completions: dict[str, asyncio.Future[list[str]]] = {}

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def listen(self) -> None:
        """Bind ``socket_path`` (replacing a socket a previous agent left there) and accept."""
        with contextlib.suppress(FileNotFoundError):
            # Our own directory, which the container cannot write: whatever is here is ours.
            os.unlink(self.socket_path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.socket_path))
            if self.owner is not None:
                os.chown(self.socket_path, *self.owner)
            os.chmod(self.socket_path, 0o600)
            sock.listen(4)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._listener = sock
        self._accept_task = asyncio.create_task(self._accept_loop(sock), name=f"runner-accept-{self.kernel_id}")

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
                await self._drop_connection()
                reader, writer = await asyncio.open_unix_connection(sock=conn)
            except OSError as exc:  # e.g. out of file descriptors: keep listening
                log.warning("kernel %s: accepting the runner's connection failed: %s", self.kernel_id, exc)
            else:
                self._writer = writer
                self._reader_task = asyncio.create_task(self._read_loop(reader, writer),
                                                        name=f"runner-{self.kernel_id}")
                self._connected.set()
                log.debug("kernel %s: runner connected", self.kernel_id)
            await asyncio.sleep(_ACCEPT_GAP)

    async def _drop_connection(self) -> None:
        """Close the current connection; the runs sent over it fail (the runner will not report
        them on another connection)."""
        self._connected.clear()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
            self._reader_task = None
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None

    async def wait_ready(self, deadline: float, abort: asyncio.Future[Any] | None = None) -> None:
        """Return once the runner has connected, or raise at ``deadline`` (a ``loop.time()``
        value) or as soon as ``abort`` is done (the container died)."""
        loop = asyncio.get_running_loop()
        if self._accept_task is None:
            raise RunnerUnavailable(f"kernel {self.kernel_id}: not listening")
        waiter = asyncio.ensure_future(self._connected.wait())
        try:
            wanted: list[asyncio.Future[Any]] = [waiter] + ([abort] if abort is not None else [])
            await asyncio.wait(wanted, timeout=max(deadline - loop.time(), 0),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if self._connected.is_set():
            return
        if abort is not None and abort.done():
            raise RunnerUnavailable(f"the container stopped before its runner came up: {abort.result()}")
        raise RunnerUnavailable(f"kernel {self.kernel_id}: the runner did not connect in time")

    async def close(self) -> None:
        """Stop listening, drop the connection and remove the socket."""
        if self._accept_task is not None:
            self._accept_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept_task
            self._accept_task = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with contextlib.suppress(OSError):
                os.unlink(self.socket_path)
        await self._drop_connection()
        self._fail_pending()

    async def _send(self, message: dict[str, Any] | bytes, before_write: Callable[[], None] | None = None) -> None:
        """Send one frame, waiting a little for a runner that is reconnecting. ``before_write``
        runs right before the write, with no await in between: a run becomes pending only
        once it is certain to go out on the connection whose loss would fail it."""
        if not self.connected:
            # The runner reconnects within its back-off (e.g. right after an agent restart).
            if self._accept_task is None:
                raise RunnerUnavailable(f"kernel {self.kernel_id}: not listening")
            try:
                async with asyncio.timeout(RECONNECT_WAIT):
                    await self._connected.wait()
            except TimeoutError:
                raise RunnerUnavailable(f"kernel {self.kernel_id}: the runner is not connected") from None
        writer = self._writer
        assert writer is not None
        if before_write is not None:
            before_write()
        writer.write(message if isinstance(message, bytes) else encode_frame(message))
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await writer.drain()
        except TimeoutError:
            log.warning("kernel %s: the runner stopped reading; dropping its connection", self.kernel_id)
            writer.close()
            raise RunnerUnavailable(f"kernel {self.kernel_id}: the runner does not read") from None
        except (OSError, ConnectionError) as exc:
            raise RunnerUnavailable(f"kernel {self.kernel_id}: {exc}") from exc

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(HEADER_SIZE)
                # Checked before the body is read: a hostile length allocates nothing.
                body = await reader.readexactly(decode_header(header, MAX_RECORD_FRAME))
                record = decode_body(body)
                if str(record.get("type")).startswith("file-"):
                    await self.files.on_record(record)  # waits while a download's queue is full
                else:
                    self._on_record(record)
                    if self._pending and (run := self._pending[0]).size >= run.limit * 3 // 4:
                        await self._hold_back(run)
        except (asyncio.IncompleteReadError, ConnectionError):
            log.debug("kernel %s: runner connection closed", self.kernel_id)
        except (ProtocolError, ValueError) as exc:
            log.warning("kernel %s: dropping the runner connection: %s", self.kernel_id, exc)
        except Exception:
            log.exception("kernel %s: bad data from the runner", self.kernel_id)
        finally:
            writer.close()
            if self._writer is writer:
                self._writer = None
                self._connected.clear()
            self._fail_pending()
            self.terminals.connection_lost()

    def _on_record(self, record: dict[str, Any]) -> None:
        kind = record.get("type")
        if isinstance(kind, str) and kind.startswith("pty-"):
            self.terminals.on_record(record)  # bai.agent.terminal
            return
        if kind == "pong":
            if self._pong is not None and not self._pong.done():
                self._pong.set_result(None)
            return
        if kind == "restarted":
            if self._restarted is not None and not self._restarted.done():
                self._restarted.set_result(None)
            return
        if kind == "completion-result":
            waiter = self._completions.get(str(record.get("id")))
            found = record.get("data")
            if waiter is not None and not waiter.done():
                waiter.set_result([c for c in found if isinstance(c, str)][:1000] if isinstance(found, list) else [])
            return
        if kind == "service-result":
            reply = self._service_replies.get(str(record.get("req")))
            data = record.get("data")
            if reply is not None and not reply.done() and isinstance(data, dict):
                reply.set_result(data)
            return
        if kind == "oom-killed":
            if self.on_oom_killed is not None:
                task = asyncio.create_task(self.on_oom_killed(), name=f"oom-{self.kernel_id}")
                self._batch_reports.add(task)
                task.add_done_callback(self._batch_reports.discard)
            return
        if kind == "batch-finished":
            data = record.get("data")
            code = data.get("exitCode") if isinstance(data, dict) else None
            batch_exit = code if isinstance(code, int) and not isinstance(code, bool) else 1
            if self.on_batch_finished is not None:
                task = asyncio.create_task(self.on_batch_finished(batch_exit), name=f"batch-{self.kernel_id}")
                self._batch_reports.add(task)
                task.add_done_callback(self._batch_reports.discard)
            return
        if not self._pending:
            return  # output of a run from before we connected: nobody can ask for it
        run = self._pending[0]
        data = record.get("data")
        if kind in _CONSOLE_TYPES:
            item = console_item(kind, data)
            if item is not None:
                run.add(kind, item)
        elif kind in ("clean-finished", "build-finished"):
            step_exit = data.get("exitCode") if isinstance(data, dict) else None
            run.close_step(kind, step_exit if isinstance(step_exit, int) and not isinstance(step_exit, bool) else 1)
        elif kind == "waiting-input":
            # Only what the protocol defines is passed on.
            is_password = bool(data.get("is_password")) if isinstance(data, dict) else False
            run.terminal = ("waiting-input", {"is_password": is_password})
            run.wakeup.set()
        elif kind == "finished":
            exit_code = data.get("exitCode") if isinstance(data, dict) else None
            self._finish(run, exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool) else 1)

    async def _hold_back(self, run: _Run) -> None:
        """Back-pressure: stop reading from the runner (which then stops reading user code's
        output, so the code blocks on its writes) while this run's unread output is large and a
        client keeps taking it. Nobody taking any for BACKPRESSURE_WAIT: the run's oldest output
        is dropped from then on, so an abandoned run never stalls the kernel."""
        if run.abandoned:
            return
        try:
            async with asyncio.timeout(BACKPRESSURE_WAIT):
                while run.size >= run.limit * 3 // 4 and not run.finished:
                    run.taken.clear()
                    await run.taken.wait()
        except TimeoutError:
            run.abandoned = True

    def _finish(self, run: _Run, exit_code: int | None) -> None:
        if run in self._pending:
            self._pending.remove(run)
        run.terminal = ("finished", exit_code)
        run.finished = True
        run.wakeup.set()
        uncollected = [r for r in self._runs.values() if r.finished]
        for stale in uncollected[:-_MAX_UNCOLLECTED]:
            self._runs.pop(stale.run_id, None)

    def _fail_pending(self) -> None:
        for reply in self._service_replies.values():
            if not reply.done():
                reply.set_exception(RunnerUnavailable(f"kernel {self.kernel_id}: the runner connection was lost"))
        self.files.fail_all()
        for waiter in self._completions.values():
            if not waiter.done():
                waiter.set_result([])
        while self._pending:
            self._finish(self._pending[0], EXIT_CODE_KERNEL_GONE)

    async def ping(self) -> None:
        """Round trip to the runner (callers bound it with ``asyncio.timeout``)."""
        self._pong = asyncio.get_running_loop().create_future()
        await self._send({"op": "ping"})
        await self._pong

    async def execute(self, run_id: str | None, mode: str, code: str, flush_timeout: float,
                      opts: dict[str, Any] | None = None) -> dict[str, Any]:
        if mode in ("query", "batch"):
            run_id = run_id or secrets.token_hex(8)
            if run_id in self._runs:
                raise InvalidInput(f"run {run_id} already exists")
            run = _Run(run_id, self.output_limit)
            self._runs[run_id] = run
            try:
                op = {"op": "code", "code": code} if mode == "query" else {"op": "batch-exec", "options": {
                    k: v for k, v in (opts or {}).items() if k in ("clean", "build", "exec") and isinstance(v, str)}}
                await self._send(op, before_write=lambda: self._pending.append(run))
            except (OSError, RunnerUnavailable):
                self._finish(run, EXIT_CODE_KERNEL_GONE)
        else:
            if run_id is None or (found := self._runs.get(run_id)) is None:
                raise InvalidInput(f"no such run: {run_id}")
            run = found
            if mode == "input":
                if run.finished or not self._pending or self._pending[0] is not run:
                    raise InvalidInput(f"run {run_id} is not waiting for input")
                await self._send({"op": "input", "data": code})
        return await self._collect(run, flush_timeout)

    async def _collect(self, run: _Run, flush_timeout: float) -> dict[str, Any]:
        if run.terminal is None and not run.closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(flush_timeout):
                    await run.wakeup.wait()
        result = run.take()
        if run.finished and result["status"] == "finished":
            self._runs.pop(run.run_id, None)
        return result

    async def complete(self, code: str, options: dict[str, Any], within: float = 5.0) -> list[str]:
        """Completion candidates from the kernel's namespace ([] while code runs, or too slow)."""
        cid = secrets.token_hex(8)
        waiter: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._completions[cid] = waiter
        try:
            await self._send({"op": "complete", "id": cid, "code": code, "options": options})
            async with asyncio.timeout(within):
                return await waiter
        except TimeoutError:
            return []
        finally:
            self._completions.pop(cid, None)

    async def interrupt(self) -> None:
        await self._send({"op": "interrupt"})

    async def start_batch(self, command: str) -> None:
        """Have the runner run a batch session's startup command (once)."""
        await self._send({"op": "batch", "command": command})

    async def ack_batch(self) -> None:
        with contextlib.suppress(OSError, RunnerUnavailable):
            await self._send({"op": "batch-ack"})

    async def restart(self) -> None:
        """A fresh user-code process (callers bound it with ``asyncio.timeout``); the runs in
        progress finish as the old process dies."""
        self._restarted = asyncio.get_running_loop().create_future()
        await self._send({"op": "restart"})
        await self._restarted

    async def start_service(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a ``start-service`` op (see :mod:`bai.kernel.services`) and return the runner's
        result (callers bound it with ``asyncio.timeout``); a lost connection fails it."""
        req = secrets.token_hex(8)
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._service_replies[req] = reply
        try:
            await self._send({**message, "req": req})
            return await reply
        finally:
            self._service_replies.pop(req, None)

    async def shutdown_service(self, name: str) -> dict[str, Any]:
        """Send a ``shutdown-service`` op and return the runner's result (``{"status": "stopped" |
        "not-running"}``; callers bound it with ``asyncio.timeout``)."""
        return await self.start_service({"op": "shutdown-service", "name": name})  # same request/reply

    async def request_exit(self) -> None:
        with contextlib.suppress(OSError, RunnerUnavailable):
            await self._send({"op": "exit"})
