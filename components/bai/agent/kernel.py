"""The agent's connection to one kernel runner, and query-mode run bookkeeping.

Protocol: :mod:`bai.kernel.protocol` (length-prefixed JSON frames over the unix socket in the
kernel's IPC directory). The runner executes code FIFO and ends every run with exactly one
``finished`` record, so runs here are a FIFO as well: records always belong to the oldest
unfinished run. Each ``execute`` call returns what its run produced since the previous call, as
soon as the run finishes or waits for input, or after ``flush_timeout`` with ``continued``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bai.common.agent_rpc import InvalidInput
from bai.kernel.protocol import HEADER_SIZE, decode_body, decode_header, encode_frame

log = logging.getLogger(__name__)

#: Each console record is cut at 10 MiB, as the original agent does.
MAX_RECORD = 10 * 2**20
#: Exit code reported for runs whose kernel went away (the manager uses the same for vanished kernels).
EXIT_CODE_KERNEL_GONE = 130
#: Finished runs nobody collected are kept this many at most (a client may never come back).
_MAX_UNCOLLECTED = 64
_CONSOLE_TYPES = frozenset({"stdout", "stderr", "media", "html", "log", "completion"})


class RunnerUnavailable(Exception):
    pass


class _Entry:
    """One console entry; stdout/stderr text is kept as chunks and joined once, when reported
    (appending to one growing string would be quadratic in the number of chunks)."""

    __slots__ = ("kind", "chunks", "size", "data")

    def __init__(self, kind: str, data: Any = None) -> None:
        self.kind = kind
        self.chunks: list[str] = []
        self.size = 0
        self.data = data

    def append(self, text: str) -> None:
        room = MAX_RECORD - self.size
        if room > 0:
            piece = text[:room]
            self.chunks.append(piece)
            self.size += len(piece)

    def to_json(self) -> list[Any]:
        return [self.kind, "".join(self.chunks) if self.data is None else self.data]


@dataclass
class _Run:
    run_id: str
    console: list[_Entry] = field(default_factory=list)
    #: ("finished", exit code) or ("waiting-input", options) until an execute call reports it.
    terminal: tuple[str, Any] | None = None
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    finished: bool = False

    def add(self, kind: str, data: Any) -> None:
        if kind in ("stdout", "stderr") and isinstance(data, str):
            if not self.console or self.console[-1].kind != kind or self.console[-1].data is not None:
                self.console.append(_Entry(kind))
            self.console[-1].append(data)
        else:
            self.console.append(_Entry(kind, data))

    def take(self) -> dict[str, Any]:
        console, self.console = self.console, []
        terminal, self.terminal = self.terminal, None
        self.wakeup.clear()
        status, exit_code, options = "continued", None, None
        if terminal is not None:
            status = terminal[0]
            if status == "finished":
                exit_code = terminal[1]
            else:
                options = terminal[1]
        return {"runId": self.run_id, "status": status, "console": [e.to_json() for e in console],
                "exitCode": exit_code, "options": options, "files": []}


class KernelRunner:
    """One connection to a kernel runner. Create with :meth:`connect` or :meth:`wait_ready`."""

    def __init__(self, kernel_id: str, socket_path: Path) -> None:
        self.kernel_id = kernel_id
        self.socket_path = socket_path
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        #: Unfinished runs in the order the runner will execute them.
        self._pending: collections.deque[_Run] = collections.deque()
        #: Every run an execute call may still ask about, by run ID.
        self._runs: dict[str, _Run] = {}
        self._pong: asyncio.Future[None] | None = None

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
        except OSError as exc:
            raise RunnerUnavailable(f"kernel runner socket {self.socket_path}: {exc}") from exc
        self._reader, self._writer = reader, writer
        self._reader_task = asyncio.create_task(self._read_loop(reader), name=f"runner-{self.kernel_id}")

    async def wait_ready(self, deadline: float, abort: asyncio.Future[Any] | None = None) -> None:
        """Connect as soon as the runner listens (polling with back-off) or raise at ``deadline``
        (a ``loop.time()`` value) or as soon as ``abort`` is done (the container died)."""
        loop = asyncio.get_running_loop()
        delay = 0.002
        while True:
            if abort is not None and abort.done():
                raise RunnerUnavailable(f"the container stopped before its runner came up: {abort.result()}")
            try:
                await self.connect()
                return
            except RunnerUnavailable:
                if loop.time() >= deadline:
                    raise
            # A refused connect on a missing socket is one cheap syscall, so poll often: the runner
            # usually comes up 50-150 ms after the container starts.
            wait = min(delay, max(deadline - loop.time(), 0))
            if abort is not None:
                await asyncio.wait([abort], timeout=wait)
            else:
                await asyncio.sleep(wait)
            delay = min(delay * 1.5, 0.01)

    async def close(self) -> None:
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
        self._fail_pending()

    async def _send(self, message: dict[str, Any]) -> None:
        if not self.connected:
            # The runner may have dropped us (e.g. a second agent connected); try once more.
            await self.connect()
        assert self._writer is not None
        self._writer.write(encode_frame(message))
        await self._writer.drain()

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header = await reader.readexactly(HEADER_SIZE)
                body = await reader.readexactly(decode_header(header))
                self._on_record(decode_body(body))
        except (asyncio.IncompleteReadError, ConnectionError):
            log.debug("kernel %s: runner connection closed", self.kernel_id)
        except Exception:
            log.exception("kernel %s: bad data from the runner", self.kernel_id)
        finally:
            if self._writer is not None:
                self._writer.close()
            self._fail_pending()

    def _on_record(self, record: dict[str, Any]) -> None:
        kind = record.get("type")
        if kind == "pong":
            if self._pong is not None and not self._pong.done():
                self._pong.set_result(None)
            return
        if not self._pending:
            return  # output of a run from before we connected: nobody can ask for it
        run = self._pending[0]
        if kind in _CONSOLE_TYPES:
            run.add(kind, record.get("data", ""))
        elif kind == "waiting-input":
            run.terminal = ("waiting-input", record.get("data") or {"is_password": False})
            run.wakeup.set()
        elif kind == "finished":
            exit_code = (record.get("data") or {}).get("exitCode")
            self._finish(run, exit_code)

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
        while self._pending:
            self._finish(self._pending[0], EXIT_CODE_KERNEL_GONE)

    async def ping(self) -> None:
        """Round trip to the runner (callers bound it with ``asyncio.timeout``)."""
        self._pong = asyncio.get_running_loop().create_future()
        await self._send({"op": "ping"})
        await self._pong

    async def execute(self, run_id: str | None, mode: str, code: str, flush_timeout: float) -> dict[str, Any]:
        if mode == "query":
            run_id = run_id or secrets.token_hex(8)
            if run_id in self._runs:
                raise InvalidInput(f"run {run_id} already exists")
            run = _Run(run_id)
            self._runs[run_id] = run
            self._pending.append(run)
            try:
                await self._send({"op": "code", "code": code})
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
        if run.terminal is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(flush_timeout):
                    await run.wakeup.wait()
        result = run.take()
        if run.finished and result["status"] == "finished":
            self._runs.pop(run.run_id, None)
        return result

    async def interrupt(self) -> None:
        await self._send({"op": "interrupt"})

    async def request_exit(self) -> None:
        with contextlib.suppress(OSError, RunnerUnavailable):
            await self._send({"op": "exit"})
