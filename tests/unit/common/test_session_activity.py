"""Session activity stamps as their writers (the manager, the app proxy) keep them: bounded, the
newest per session, kept across a failed write; a stream's stamps throttled."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from bai.appproxy.activity import flush_forever
from bai.common.session_activity import PendingStamps, Throttled
from tests.fixtures.halfstack import free_port


def dead_redis() -> aioredis.Redis:
    """A real client towards a port nothing listens on (connection refused at once)."""
    return aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1,
                          retry=Retry(NoBackoff(), 0))  # one attempt (the default retries for seconds)


def test_stamps_are_bounded_and_keep_the_newest() -> None:
    stamps = PendingStamps(limit=3)
    ids = [uuid.uuid4() for _ in range(5)]
    for i, sid in enumerate(ids):
        stamps.touch(sid, now=100.0 + i)
    assert len(stamps) == 3  # the two beyond the bound are dropped, not queued
    stamps.touch(ids[0], now=200.0)  # a session already pending is still updated when full
    assert stamps.pending() == {str(ids[0]): 200.0, str(ids[1]): 101.0, str(ids[2]): 102.0}


async def test_a_failed_flush_keeps_the_stamps_for_the_next_try() -> None:
    stamps = PendingStamps(limit=2)
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    stamps.touch(a, now=10.0)
    stamps.touch(b, now=11.0)
    redis = dead_redis()
    try:
        with pytest.raises(Exception):  # noqa: B017,PT011  # the client's own connection error
            await stamps.flush(redis)
        assert stamps.pending() == {str(a): 10.0, str(b): 11.0}
        stamps.touch(a, now=12.0)  # newer than the kept one: the newest stays
        stamps.touch(c, now=13.0)  # still bounded while Redis is away
        assert stamps.pending() == {str(a): 12.0, str(b): 11.0}
    finally:
        await redis.aclose()


async def test_flush_forever_keeps_trying_and_stops_promptly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "bai.appproxy.activity")
    stamps = PendingStamps()
    stamps.touch(uuid.uuid4())
    redis = dead_redis()
    task = asyncio.create_task(flush_forever(stamps, redis, 0.01))
    try:
        deadline = time.monotonic() + 10
        while sum("activity stamps failed" in r.getMessage() for r in caplog.records) < 3:
            assert time.monotonic() < deadline and not task.done(), caplog.text
            await asyncio.sleep(0.01)
        assert not task.done() and len(stamps) == 1
    finally:
        started = time.monotonic()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await redis.aclose()
    assert task.cancelled() and time.monotonic() - started < 3.0  # the last flush attempt is bounded
    assert len(stamps) == 1


async def test_throttled_stamps_at_most_once_per_period() -> None:
    calls: list[float] = []
    stamp = Throttled(lambda: calls.append(time.monotonic()), every=0.05)
    for _ in range(10_000):
        stamp()
    assert len(calls) == 1  # a burst of traffic is one stamp
    deadline = time.monotonic() + 5
    while len(calls) < 2:
        assert time.monotonic() < deadline, "no second stamp after the period"
        stamp()
        await asyncio.sleep(0.005)
    assert calls[1] - calls[0] >= 0.05


def test_throttled_costs_little() -> None:
    stamps = PendingStamps()
    stamp = Throttled(lambda: stamps.touch("s"))
    started = time.perf_counter()
    for _ in range(100_000):
        stamp()
    per_call = (time.perf_counter() - started) / 100_000
    assert per_call < 5e-6, per_call  # far below a forwarded chunk's cost (measured ~0.2 us)
