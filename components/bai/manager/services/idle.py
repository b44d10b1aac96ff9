"""Idle timeout and maximum lifetime: ending sessions their owner's keypair policy says have
been idle, or alive, for too long.

* ``idle_timeout`` (seconds; 0 or negative: never): a RUNNING session with no activity for that
  long ends with ``idle-timeout``, the original's ``network_timeout`` checker. Activity is an
  execute (any mode, REST or websocket), a terminal frame, and whatever else calls :func:`touch`
  (or writes the Redis key below). Batch sessions are never idle while they run: their command
  is the activity.
* ``max_session_lifetime`` (seconds; 0: unlimited): a RUNNING session that started preparing
  that long ago ends with ``idle-session-lifetime``, the original's ``session_lifetime``
  checker (it counts from kernel creation).

Activity costs the hot path one dict update: :func:`touch` stamps the session in memory, and a
loop writes the stamps of the last second to Redis in one ``ZADD GT`` (sorted set
:data:`LAST_ACCESS_KEY` in the stream DB: member = session id, score = Unix time; ``GT`` keeps
the newest stamp whatever manager writes last). One checker per tick runs on all managers, but
only the one that takes a PostgreSQL advisory lock decides: one query for the limited running
sessions, one ``ZMSCORE`` for their stamps. The ended sessions get the usual
``session_terminating``/``session_terminated`` events with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from bai.common.tasks import raise_if_cancelling
from bai.manager.store import session_lifetimes
from bai.manager.store import sessions as session_store
from bai.manager.store.db import try_advisory_xact_lock

from .context import ManagerContext
from .sessions import termination
from .sessions.activity import LAST_ACCESS_KEY, ActivityTracker, touch, tracker

__all__ = ["IDLE_TIMEOUT", "LAST_ACCESS_KEY", "LIFETIME_EXCEEDED", "LOCK_ID", "ActivityTracker",
           "check_once", "enforce_forever", "expired", "touch"]

log = logging.getLogger(__name__)

#: The original's lifecycle reasons (status_info and the events' ``reason``).
IDLE_TIMEOUT = "idle-timeout"
LIFETIME_EXCEEDED = "idle-session-lifetime"
LOCK_ID = 91_000_014
#: Stamps older than this are dropped from Redis (a session whose stamp is gone counts as idle
#: since no later than this long ago, never longer: nothing ends early for it).
ACCESS_KEEP_SECONDS = 30 * 86400
#: Terminations one tick runs at once.
TERMINATE_CONCURRENCY = 8


@dataclass(frozen=True)
class Limited:
    id: uuid.UUID
    session_type: str
    #: Unix times: when it last became RUNNING, when it started preparing
    running_since: float
    started: float
    idle_timeout: int
    max_lifetime: int


def _stamp(iso: str | None, fallback: datetime) -> float:
    if iso:
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(iso).timestamp()
    return fallback.timestamp()


def expired(sess: Limited, last_access: float | None, now: float) -> str | None:
    """Why ``sess`` must end now (the reason), or None."""
    if sess.max_lifetime > 0 and now - sess.started >= sess.max_lifetime:
        return LIFETIME_EXCEEDED
    if sess.idle_timeout > 0 and sess.session_type != "batch":
        # A stamp from before this RUNNING spell (e.g. before a restart) does not count against it;
        # a session without a stamp has been idle since it started running, or since the stamps kept.
        idle_since = max(last_access or 0.0, sess.running_since, now - ACCESS_KEEP_SECONDS)
        if now - idle_since >= sess.idle_timeout:
            return IDLE_TIMEOUT
    return None


async def check_once(ctx: ManagerContext) -> list[tuple[uuid.UUID, str]]:
    """One tick: the sessions that must end and why (ended before returning). Nothing when
    another manager is checking at the same moment."""
    await tracker(ctx).flush(ctx)
    now = time.time()
    async with ctx.db.begin() as conn:
        if not await try_advisory_xact_lock(conn, LOCK_ID):
            return []
        rows = await session_lifetimes.limited_running_sessions(conn)
    if not rows:
        return []
    sessions = [Limited(r.id, r.session_type, _stamp(r.running_since, r.created_at),
                        _stamp(r.preparing_since, r.created_at), int(r.idle_timeout), int(r.max_session_lifetime))
                for r in rows]
    redis = ctx.redis_stream
    await redis.zremrangebyscore(LAST_ACCESS_KEY, "-inf", now - ACCESS_KEEP_SECONDS)
    scores = await redis.zmscore(LAST_ACCESS_KEY, [str(s.id) for s in sessions])
    ending = [(s.id, why) for s, score in zip(sessions, scores, strict=True)
              if (why := expired(s, score, now)) is not None]
    if ending:
        gate = asyncio.Semaphore(TERMINATE_CONCURRENCY)

        async def end(sid: uuid.UUID, reason: str) -> None:
            async with gate:
                await _terminate(ctx, sid, reason)

        await asyncio.gather(*(end(sid, why) for sid, why in ending))
        await redis.zrem(LAST_ACCESS_KEY, *(str(sid) for sid, _ in ending))
    return ending


async def _terminate(ctx: ManagerContext, session_id: uuid.UUID, reason: str) -> None:
    try:
        async with ctx.db.connect() as conn:
            row = await session_store.get(conn, session_id)
            if row is None or row.status != "RUNNING":
                return  # it ended (or is restarting) meanwhile
            kernels = await session_store.kernels_of(conn, session_id)
        log.info("session %s (%s) ends: %s", row.name, session_id, reason)
        await termination.terminate(ctx, row, kernels, reason)
    except Exception:
        raise_if_cancelling()
        log.exception("ending session %s (%s) failed", session_id, reason)


async def enforce_forever(ctx: ManagerContext) -> None:
    """The background task (one per manager; the advisory lock makes one of them decide)."""
    interval = ctx.config.manager.idle_check_interval
    try:
        while True:
            await asyncio.sleep(interval)
            try:
                await check_once(ctx)
            except Exception as exc:
                raise_if_cancelling()
                log.warning("idle/lifetime check failed (next try in %.0f s): %r", interval, exc)
    finally:
        with contextlib.suppress(Exception):  # the last stamps, at shutdown
            async with asyncio.timeout(2.0):
                await tracker(ctx).flush(ctx)
