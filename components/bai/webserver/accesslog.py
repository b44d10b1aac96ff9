"""The access log (one line per request), written in batches.

Written a line at a time, each line was one write to stderr, which supervisord (it keeps
/var/log/bai/webserver.log) wakes up for and copies: bench/webserver.py measured supervisord
spending about 0.19 ms of CPU per relayed call for that line alone, on top of the webserver's
own ~0.5 ms (the manager writes no line per call, so direct calls never paid it). The lines
now go out together, at most every ``FLUSH_SECONDS`` or every ``MAX_LINES``: one write, one
wake-up for many calls.

The lines and their destinations are those logging gives them: the records are handed, when a
batch goes out, to the handlers the access logger propagates to (its ancestors' handlers, as
``Logger.callHandlers`` finds them), each with its own level, filters and format; a plain
``StreamHandler`` gets the batch as one write, any other handler (a file handler, a test's
capture) each record as usual. The price: a process killed outright loses at most the last
``FLUSH_SECONDS`` of access lines (a normal stop writes them all).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from bai.common.tasks import stop_tasks

#: Seconds a line waits at most before it is written.
FLUSH_SECONDS = 0.5
#: Lines gathered at most before they are written (bounds the memory a burst holds).
MAX_LINES = 512


class BatchingHandler(logging.Handler):
    """Installed on the access logger (which then no longer propagates) while a webserver runs."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self.logger = logger
        self.pending: list[logging.LogRecord] = []
        #: Webservers of this process using it (tests run more than one in a process).
        self.users = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.pending.append(record)
        if len(self.pending) >= MAX_LINES:
            self.flush()

    def flush(self) -> None:
        records, self.pending = self.pending, []
        if records:
            for handler in _propagated_handlers(self.logger):
                _hand_over(handler, records)


def _propagated_handlers(logger: logging.Logger) -> list[logging.Handler]:
    """The handlers a record of ``logger`` would reach through propagation (not its own)."""
    found: list[logging.Handler] = []
    current = logger.parent
    while current is not None:
        found.extend(current.handlers)
        if not current.propagate:
            break
        current = current.parent
    return found


def _hand_over(handler: logging.Handler, records: list[logging.LogRecord]) -> None:
    admitted = [r for r in records if r.levelno >= handler.level]
    if type(handler) is not logging.StreamHandler:  # exactly: a subclass may do more in emit
        for record in admitted:
            handler.handle(record)
        return
    text = "".join(handler.format(r) + handler.terminator for r in admitted if handler.filter(r))
    if not text:
        return
    with handler.lock or contextlib.nullcontext():
        try:
            handler.stream.write(text)
            handler.flush()
        except Exception:  # as StreamHandler.emit does: a log that cannot be written is reported, not raised
            handler.handleError(admitted[-1])


def _install(logger: logging.Logger) -> BatchingHandler:
    for existing in logger.handlers:
        if isinstance(existing, BatchingHandler):
            existing.users += 1
            return existing
    handler = BatchingHandler(logger)
    handler.users = 1
    logger.addHandler(handler)
    logger.propagate = False
    return handler


def _uninstall(handler: BatchingHandler) -> None:
    handler.flush()
    handler.users -= 1
    if handler.users == 0:
        handler.logger.removeHandler(handler)
        handler.logger.propagate = True


async def _flush_every(handler: BatchingHandler) -> None:
    while True:
        await asyncio.sleep(FLUSH_SECONDS)
        handler.flush()


@contextlib.asynccontextmanager
async def batched(logger: logging.Logger) -> AsyncIterator[None]:
    """``logger``'s lines written in batches for the duration of the block (all written at its end)."""
    handler = _install(logger)
    flusher = asyncio.create_task(_flush_every(handler), name="access-log")
    try:
        yield
    finally:
        await stop_tasks([flusher])
        _uninstall(handler)
