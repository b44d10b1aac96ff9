"""Session activity stamps for the manager's idle timeout, as every writer keeps them: the
manager (API calls, terminals, tunnels) and the app proxy (traffic through its circuits).

A stamp costs its writer one dict update; the writer sends what gathered to the Redis sorted set
:data:`LAST_ACCESS_KEY` (stream DB; member = session id, score = Unix time) in one ``ZADD GT`` now
and then, so whichever writer saw the session last wins whatever the order of the writes. The idle
checker (:mod:`bai.manager.services.idle`) reads the set.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import redis.asyncio as aioredis

__all__ = ["LAST_ACCESS_KEY", "MAX_PENDING_STAMPS", "STAMP_EVERY", "PendingStamps", "Throttled"]

#: Redis (stream DB) sorted set of the sessions' last activity.
LAST_ACCESS_KEY = "bai.session.last-access"
#: Sessions whose stamps wait for a flush, at most (a writer cut off from Redis must not grow).
MAX_PENDING_STAMPS = 100_000
#: A stream (a tunnel, a circuit) stamps its session at most this often (seconds).
STAMP_EVERY = 1.0


class PendingStamps:
    """Stamps not written yet: the newest per session, for at most ``limit`` sessions (a stamp for
    a session beyond that is dropped until a flush makes room)."""

    def __init__(self, limit: int = MAX_PENDING_STAMPS) -> None:
        self.limit = limit
        self._stamps: dict[str, float] = {}
        #: Stamps written so far (for logs and tests).
        self.written = 0

    def __len__(self) -> int:
        return len(self._stamps)

    def touch(self, session_id: uuid.UUID | str, now: float | None = None) -> None:
        """The session is in use now (no I/O)."""
        sid = str(session_id)
        if sid in self._stamps or len(self._stamps) < self.limit:
            self._stamps[sid] = time.time() if now is None else now

    def pending(self) -> dict[str, float]:
        """A copy of the unwritten stamps (session id -> Unix time)."""
        return dict(self._stamps)

    async def flush(self, redis: aioredis.Redis) -> int:
        """Write the stamps (one ``ZADD GT``); on failure they stay for the next try (newest kept)
        and the error is raised. Answers how many were written."""
        if not self._stamps:
            return 0
        stamps, self._stamps = self._stamps, {}
        try:
            await redis.zadd(LAST_ACCESS_KEY, stamps, gt=True)
        except BaseException:
            for sid, ts in stamps.items():
                if sid in self._stamps or len(self._stamps) < self.limit:
                    self._stamps[sid] = max(ts, self._stamps.get(sid, 0.0))
            raise
        self.written += len(stamps)
        return len(stamps)


class Throttled:
    """``stamp`` called at most once per ``every`` seconds, however often this is called: cheap
    enough for every chunk or message of a long stream."""

    __slots__ = ("_next", "every", "stamp")

    def __init__(self, stamp: Callable[[], None], every: float = STAMP_EVERY) -> None:
        self.stamp = stamp
        self.every = every
        self._next = 0.0

    def __call__(self) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.every
            self.stamp()
