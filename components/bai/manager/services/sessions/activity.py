"""Session activity stamps for the idle timeout (:mod:`bai.manager.services.idle`), kept off the
hot path: :func:`touch` is one dict update; the idle checker writes the stamps to Redis (sorted
set :data:`LAST_ACCESS_KEY` in the stream DB, member = session id, score = Unix time, ``ZADD GT``
so the newest stamp stays whichever writer, a manager or an app proxy, writes last) at each of its
ticks (see :mod:`bai.common.session_activity`)."""

from __future__ import annotations

import uuid

from bai.common.session_activity import LAST_ACCESS_KEY, MAX_PENDING_STAMPS, PendingStamps

from ..context import ManagerContext

__all__ = ["LAST_ACCESS_KEY", "MAX_PENDING_STAMPS", "ActivityTracker", "touch", "tracker"]

_KEY = "sessions.activity"


class ActivityTracker:
    """This manager's unwritten activity stamps (kept for the next attempt when a write fails)."""

    def __init__(self) -> None:
        self._stamps = PendingStamps()

    def touch(self, session_id: uuid.UUID) -> None:
        self._stamps.touch(session_id)

    async def flush(self, ctx: ManagerContext) -> None:
        await self._stamps.flush(ctx.redis_stream)


def tracker(ctx: ManagerContext) -> ActivityTracker:
    found = ctx.extra.get(_KEY)
    if found is None:
        found = ctx.extra[_KEY] = ActivityTracker()
    assert isinstance(found, ActivityTracker)
    return found


def touch(ctx: ManagerContext, session_id: uuid.UUID) -> None:
    """The session is in use now (no I/O: written to Redis within one idle-check tick)."""
    tracker(ctx).touch(session_id)
