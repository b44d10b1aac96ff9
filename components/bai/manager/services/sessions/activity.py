"""Session activity stamps for the idle timeout (:mod:`bai.manager.services.idle`), kept off the
hot path: :func:`touch` is one dict update; the idle checker writes the stamps to Redis (sorted
set :data:`LAST_ACCESS_KEY` in the stream DB, member = session id, score = Unix time, ``ZADD GT``
so the newest stamp stays whichever manager writes last) at each of its ticks."""

from __future__ import annotations

import time
import uuid

from ..context import ManagerContext

__all__ = ["LAST_ACCESS_KEY", "ActivityTracker", "touch", "tracker"]

#: Redis (stream DB) sorted set of the sessions' last activity.
LAST_ACCESS_KEY = "bai.session.last-access"
#: Sessions whose stamps wait for a flush, at most (a manager cut off from Redis must not grow).
MAX_PENDING_STAMPS = 100_000
_KEY = "sessions.activity"


class ActivityTracker:
    """This manager's unwritten activity stamps."""

    def __init__(self) -> None:
        self._stamps: dict[str, float] = {}

    def touch(self, session_id: uuid.UUID) -> None:
        sid = str(session_id)
        if sid in self._stamps or len(self._stamps) < MAX_PENDING_STAMPS:
            self._stamps[sid] = time.time()

    async def flush(self, ctx: ManagerContext) -> None:
        if not self._stamps:
            return
        stamps, self._stamps = self._stamps, {}
        try:
            await ctx.redis_stream.zadd(LAST_ACCESS_KEY, stamps, gt=True)  # type: ignore[arg-type]
        except BaseException:
            for sid, ts in stamps.items():  # kept for the next attempt
                self._stamps[sid] = max(ts, self._stamps.get(sid, 0.0))
            raise


def tracker(ctx: ManagerContext) -> ActivityTracker:
    found = ctx.extra.get(_KEY)
    if found is None:
        found = ctx.extra[_KEY] = ActivityTracker()
    assert isinstance(found, ActivityTracker)
    return found


def touch(ctx: ManagerContext, session_id: uuid.UUID) -> None:
    """The session is in use now (no I/O: written to Redis within one idle-check tick)."""
    tracker(ctx).touch(session_id)
