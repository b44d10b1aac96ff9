"""Counting executes (``numQueriesExecuted``) off the hot path.

An execute only bumps an in-memory counter (a dict update, no I/O); a background loop adds the
counts to the database every :data:`FLUSH_INTERVAL` seconds in one statement, and once more at
shutdown. Several managers each add their own counts. What a manager has counted but not written
yet is added to the session's info it answers, so a client reads its own executes at once; GraphQL
(``num_queries``) reads the database and so lags by at most one interval. Counts of a manager that
dies without its shutdown flush (at most one interval's worth) are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from bai.common.tasks import raise_if_cancelling
from bai.manager.store import sessions as store

from ..context import ManagerContext

__all__ = ["FLUSH_INTERVAL", "QueryCounter", "flush_forever", "query_counter"]

log = logging.getLogger(__name__)

#: Seconds between two writes of the counts.
FLUSH_INTERVAL = 1.0
#: Sessions whose counts wait at most; past it, more sessions are dropped from counting until a
#: flush (a manager cut off from PostgreSQL must not grow without bound).
MAX_PENDING_SESSIONS = 100_000
_KEY = "sessions.query_counter"


class QueryCounter:
    def __init__(self) -> None:
        self._pending: dict[uuid.UUID, int] = {}
        #: Taken by a flush that has not committed yet (still counted in :meth:`unwritten`).
        self._writing: dict[uuid.UUID, int] = {}
        self._lock = asyncio.Lock()

    def note(self, session_id: uuid.UUID) -> None:
        if session_id in self._pending or len(self._pending) < MAX_PENDING_SESSIONS:
            self._pending[session_id] = self._pending.get(session_id, 0) + 1

    def unwritten(self, session_id: uuid.UUID) -> int:
        return self._pending.get(session_id, 0) + self._writing.get(session_id, 0)

    async def flush(self, ctx: ManagerContext) -> None:
        async with self._lock:
            if not self._pending:
                return
            self._writing, self._pending = self._pending, {}
            try:
                async with ctx.db.begin() as conn:
                    await store.add_query_counts(conn, self._writing)
            except BaseException:
                for sid, n in self._writing.items():  # kept for the next attempt
                    self._pending[sid] = self._pending.get(sid, 0) + n
                raise
            finally:
                self._writing = {}


def query_counter(ctx: ManagerContext) -> QueryCounter:
    """This manager's counter (one per ManagerContext)."""
    counter = ctx.extra.get(_KEY)
    if counter is None:
        counter = ctx.extra[_KEY] = QueryCounter()
    assert isinstance(counter, QueryCounter)
    return counter


async def flush_forever(ctx: ManagerContext, interval: float = FLUSH_INTERVAL) -> None:
    counter = query_counter(ctx)
    try:
        while True:
            await asyncio.sleep(interval)
            try:
                await counter.flush(ctx)
            except Exception as exc:
                raise_if_cancelling()
                log.warning("writing query counts failed (kept for the next attempt): %r", exc)
    finally:
        # The last counts, at shutdown (the database is closed after the background tasks).
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5.0):
                await counter.flush(ctx)
