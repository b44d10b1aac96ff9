"""The stream consumer against a real Redis: it recreates a lost group, sets malformed and
forged entries aside without stopping, and takes over what a dead consumer left pending."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from bai.common.events import (
    DEAD_LETTER_KEY,
    STREAM_KEY,
    EventConsumer,
    EventProducer,
    event_signing_key,
)
from tests.fixtures.halfstack import dedicated_redis

KEY = event_signing_key("s3cret")


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    with dedicated_redis() as addr:
        host, _, port = addr.rpartition(":")
        r = aioredis.Redis(host=host, port=int(port), socket_timeout=5)
        try:
            yield r
        finally:
            await r.aclose()


async def drain(consumer: EventConsumer, rounds: int = 3) -> list[str]:
    names = []
    for _ in range(rounds):
        for ev in await consumer.read(block_ms=100):
            names.append(ev.name)
            await consumer.ack(ev)
    return names


async def test_bad_entries_are_set_aside_and_the_rest_flows(redis: aioredis.Redis) -> None:
    consumer = EventConsumer(redis, "m1", verify_key=KEY)
    await consumer.ensure_group()
    good = EventProducer(redis, signing_key=KEY)
    await good.produce("one", "i-a", x=1)
    await redis.xadd(STREAM_KEY, {"garbage": "entry"})
    await redis.xadd(STREAM_KEY, {"name": "agent_heartbeat", "source": "i-a", "args": "{\"addr\": \"evil\"}"})
    await EventProducer(redis, signing_key=event_signing_key("guessed")).produce("forged", "i-a")
    await redis.xadd(STREAM_KEY, {"name": "x", "source": "i-a", "args": "{broken"})
    await good.produce("two", "i-a", x=2)
    assert await drain(consumer) == ["one", "two"]
    assert consumer.dropped == 4
    dead = await redis.xrange(DEAD_LETTER_KEY)
    assert [d[1][b"error"].decode() for d in dead] == [
        "missing field(s) name, source, args", "unsigned", "invalid signature", "unsigned"]
    # nothing is left pending: bad entries were acknowledged too
    assert (await redis.xpending(STREAM_KEY, "manager"))["pending"] == 0


async def test_group_is_recreated_when_redis_loses_its_data(redis: aioredis.Redis) -> None:
    consumer = EventConsumer(redis, "m1", verify_key=KEY)
    await consumer.ensure_group()
    producer = EventProducer(redis, signing_key=KEY)
    await producer.produce("before", "i-a")
    assert await drain(consumer) == ["before"]
    await redis.flushall()  # what a restart without persistence looks like
    await producer.produce("after-restart", "i-a")  # an agent writes before the manager notices
    assert await consumer.read(block_ms=100) == []  # NOGROUP: recreated from the stream's start
    assert await drain(consumer) == ["after-restart"]


async def test_pending_entries_of_a_dead_consumer_are_claimed(redis: aioredis.Redis) -> None:
    dead = EventConsumer(redis, "m-dead", verify_key=KEY, claim_min_idle_ms=50)
    await dead.ensure_group()
    producer = EventProducer(redis, signing_key=KEY)
    for i in range(3):
        await producer.produce(f"e{i}", "i-a")
    assert [e.name for e in await dead.read(block_ms=100)] == ["e0", "e1", "e2"]  # then it dies
    alive = EventConsumer(redis, "m-alive", verify_key=KEY, claim_min_idle_ms=50)
    assert await alive.claim_stale() == []  # not idle long enough yet
    pending = await redis.xpending(STREAM_KEY, "manager")
    assert pending["pending"] == 3
    await asyncio.sleep(0.1)  # let them become idle: the condition under test is idleness itself
    claimed = await alive.claim_stale()
    assert [e.name for e in claimed] == ["e0", "e1", "e2"]
    for ev in claimed:
        await alive.ack(ev)
    assert (await redis.xpending(STREAM_KEY, "manager"))["pending"] == 0


async def test_own_unacknowledged_entries_come_back_after_a_restart(redis: aioredis.Redis) -> None:
    first = EventConsumer(redis, "m1", verify_key=KEY)
    await first.ensure_group()
    producer = EventProducer(redis, signing_key=KEY)
    await producer.produce("handled", "i-a")
    await producer.produce("in-flight", "i-a")
    got = await first.read(block_ms=100)
    await first.ack(got[0])  # killed before acknowledging the second
    restarted = EventConsumer(redis, "m1", verify_key=KEY)
    await producer.produce("new", "i-a")
    assert await drain(restarted) == ["in-flight", "new"]
