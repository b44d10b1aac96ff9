"""The event bus: agents and managers publish lifecycle events on one Redis stream.

Each stream entry has the fields the original uses: ``name``, ``source`` and ``args`` (here a
JSON object rather than a msgpack tuple; only bai components read this stream). Managers read
it through the consumer group ``manager`` so each event is handled once; the manager that handled
it publishes the resulting session- and kernel-level changes on the pub/sub channel
``bai.session-events``, which every manager listens to (to wake requests waiting for a session to
start, and to feed ``GET /events/session``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis

STREAM_KEY = "events"
CONSUMER_GROUP = "manager"
BROADCAST_CHANNEL = "bai.session-events"
#: Redis logical DBs, as the original splits them.
REDIS_DB_STAT = 0
REDIS_DB_RATELIMIT = 1
REDIS_DB_IMAGE = 3
REDIS_DB_STREAM = 4
STREAM_MAXLEN = 100_000


@dataclass(frozen=True)
class Event:
    name: str
    source: str
    args: dict[str, Any] = field(default_factory=dict)
    id: str = ""


class EventProducer:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def produce(self, name: str, source: str, **args: Any) -> None:
        await self._redis.xadd(
            STREAM_KEY,
            {"name": name, "source": source, "args": json.dumps(args, default=str)},
            maxlen=STREAM_MAXLEN,
            approximate=True,
        )

    async def broadcast(self, name: str, source: str, **args: Any) -> None:
        payload = json.dumps({"name": name, "source": source, "args": args}, default=str)
        await self._redis.publish(BROADCAST_CHANNEL, payload)


class EventConsumer:
    """Reads the stream as one member of a consumer group; acknowledges after handling."""

    def __init__(self, redis: aioredis.Redis, consumer_id: str, group: str = CONSUMER_GROUP) -> None:
        self._redis = redis
        self._consumer = consumer_id
        self._group = group

    async def ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(STREAM_KEY, self._group, id="$", mkstream=True)
        except aioredis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, block_ms: int = 1000, count: int = 64) -> list[Event]:
        reply = await self._redis.xreadgroup(
            self._group, self._consumer, {STREAM_KEY: ">"}, count=count, block=block_ms
        )
        events: list[Event] = []
        for _stream, entries in cast(list[tuple[Any, list[tuple[Any, dict[Any, Any]]]]], reply or []):
            for entry_id, fields in entries:
                def _s(v: Any) -> str:
                    return v.decode() if isinstance(v, bytes) else str(v)
                raw = {_s(k): _s(v) for k, v in fields.items()}
                events.append(Event(raw["name"], raw.get("source", ""), json.loads(raw.get("args", "{}")), _s(entry_id)))
        return events

    async def ack(self, event: Event) -> None:
        await self._redis.xack(STREAM_KEY, self._group, event.id)
