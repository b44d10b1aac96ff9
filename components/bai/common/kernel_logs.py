"""A terminated kernel's last container log, handed from the agent to the manager.

The agent reads the log right before it removes the container and leaves it in Redis under
``bai.kernel-log.<kernel id>`` (expiring after :data:`TTL` seconds) rather than in the
``kernel_terminated`` event itself: the event stream keeps up to 100,000 entries, and a megabyte in
each would make Redis hold gigabytes. The event carries the log's SHA-256 instead (``log_digest``),
and events are signed, so whoever can write to Redis cannot substitute another log: the manager
reads the key, keeps the text only if its digest matches, then deletes the key (after the text is
stored, so a handler retried after a database error still finds it).
"""

from __future__ import annotations

import hashlib

import redis.asyncio as aioredis

__all__ = ["TTL", "digest", "discard", "read", "stash"]

#: Seconds a handed-over log waits for a manager (one that is down this long loses it).
TTL = 3600


def _key(kernel_id: str) -> str:
    return f"bai.kernel-log.{kernel_id}"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def stash(redis: aioredis.Redis, kernel_id: str, text: str) -> str:
    """Leave ``text`` for the manager; returns the digest to put in the event."""
    data = text.encode("utf-8", "replace")
    await redis.set(_key(kernel_id), data, ex=TTL)
    return digest(data)


async def read(redis: aioredis.Redis, kernel_id: str, expected_digest: str) -> str | None:
    """The log the agent left for ``kernel_id``; None when it is gone or is not the one the
    (signed) event describes."""
    data = await redis.get(_key(kernel_id))
    if not isinstance(data, bytes) or digest(data) != expected_digest:
        return None
    return data.decode("utf-8", "replace")


async def discard(redis: aioredis.Redis, kernel_id: str) -> None:
    await redis.delete(_key(kernel_id))
