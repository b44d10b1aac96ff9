"""The hand-over of a terminated kernel's last log through a real Redis (bai.common.kernel_logs)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from bai.common import kernel_logs
from tests.fixtures.halfstack import dedicated_redis


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    with dedicated_redis() as addr:
        host, port = addr.rsplit(":", 1)
        r = aioredis.Redis(host=host, port=int(port), socket_timeout=5)
        try:
            yield r
        finally:
            await r.aclose()


async def test_log_is_read_once_stored_then_discarded(redis: aioredis.Redis) -> None:
    text = "out\nerr ünicode\n" * 100
    digest = await kernel_logs.stash(redis, "k1", text)
    assert 0 < await redis.ttl("bai.kernel-log.k1") <= kernel_logs.TTL  # never left forever
    assert await kernel_logs.read(redis, "k1", digest) == text
    assert await kernel_logs.read(redis, "k1", digest) == text  # a retried handler still finds it
    await kernel_logs.discard(redis, "k1")
    assert await kernel_logs.read(redis, "k1", digest) is None


async def test_a_substituted_log_is_refused(redis: aioredis.Redis) -> None:
    digest = await kernel_logs.stash(redis, "k2", "the real log\n")
    # Someone who can write to Redis (but cannot sign events) replaces it.
    await redis.set("bai.kernel-log.k2", b"a forged log\n")
    assert await kernel_logs.read(redis, "k2", digest) is None
    assert await kernel_logs.read(redis, "k3", digest) is None  # nothing there at all
