"""Traffic through circuits as the sessions' activity, so that the manager's idle timeout spares a
session used only through its apps (JupyterLab, the web terminal, a TCP service), as the original
counts app traffic.

Each circuit stamps its session in memory (:meth:`.circuits.Circuit.note_traffic`: at most once a
second per circuit, a time comparison otherwise) on every HTTP request, websocket message and TCP
chunk, either way; :func:`flush_forever` writes the stamps every ``activity-flush`` to the Redis
sorted set the manager reads (:mod:`bai.common.session_activity`, ``ZADD GT``: the newest writer
wins). While Redis is away the stamps wait, bounded, and forwarding goes on; at shutdown they are
written once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis

from bai.common.session_activity import PendingStamps
from bai.common.tasks import raise_if_cancelling

__all__ = ["FINAL_FLUSH_TIMEOUT", "flush_forever"]

log = logging.getLogger(__name__)

#: The last write at shutdown gives up after this long (seconds).
FINAL_FLUSH_TIMEOUT = 2.0


async def flush_forever(stamps: PendingStamps, redis: aioredis.Redis, period: float) -> None:
    """Runs for the life of the proxy: the stamps written every ``period`` seconds (kept for the
    next try when Redis fails), and once more when cancelled."""
    try:
        while True:
            await asyncio.sleep(period)
            try:
                await stamps.flush(redis)
            except Exception as exc:
                raise_if_cancelling()
                log.warning("writing %d session activity stamps failed (next try in %g s): %r",
                            len(stamps), period, exc)
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(FINAL_FLUSH_TIMEOUT):
                await stamps.flush(redis)
