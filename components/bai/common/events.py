"""The event bus: agents and managers publish lifecycle events on one Redis stream.

Each stream entry has the fields the original uses: ``name``, ``source`` and ``args`` (here a
JSON object rather than a msgpack tuple; only bai components read this stream), plus ``ts`` (the
producer's clock, Unix seconds) and ``sig``: a hex HMAC-SHA256 over ``name``, ``source``, ``ts``
and ``args`` (see :func:`signature`), keyed with :func:`event_signing_key` of the agent RPC secret
held in etcd. Anyone who can write to Redis can add entries, but only holders of that secret can
sign them, and managers drop what they cannot verify, so a forged heartbeat can neither redirect
the manager's agent RPC (which carries the secret as a bearer token) nor fake a kernel's fate.

Managers read the stream through the consumer group ``manager`` so each event is handled once;
the manager that handled it publishes the resulting session- and kernel-level changes on the
pub/sub channel ``bai.session-events``, which every manager listens to (to wake requests waiting
for a session to start, and to feed ``GET /events/session``).

The consumer heals itself: a group lost with a Redis restart is recreated, malformed or unsigned
entries are acknowledged and set aside on the capped ``events.dead`` stream, and entries left
pending by a consumer that died are re-claimed (``XAUTOCLAIM``) by the others.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis

log = logging.getLogger(__name__)

STREAM_KEY = "events"
DEAD_LETTER_KEY = "events.dead"
CONSUMER_GROUP = "manager"
BROADCAST_CHANNEL = "bai.session-events"
#: Redis logical DBs, as the original splits them.
REDIS_DB_STAT = 0
REDIS_DB_RATELIMIT = 1
REDIS_DB_IMAGE = 3
REDIS_DB_STREAM = 4
STREAM_MAXLEN = 100_000
DEAD_LETTER_MAXLEN = 10_000
#: Fields an entry must have to be read as an event.
_REQUIRED = ("name", "source", "args")


def event_signing_key(rpc_secret: str) -> bytes:
    """The key events are signed with, derived from ``config/agent/rpc-secret`` (a separate key
    per purpose: a signature never doubles as the bearer token, nor the reverse)."""
    return hmac.new(rpc_secret.encode(), b"bai/event-signing/v1", hashlib.sha256).digest()


def signature(key: bytes, name: str, source: str, ts: str, args: str) -> str:
    # Length-prefixed so no shifting of characters between fields yields the same message.
    message = b"".join(f"{len(p.encode())}:".encode() + p.encode() for p in (name, source, ts, args))
    return hmac.new(key, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Event:
    name: str
    source: str
    args: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    #: The producer's clock when it sent the event (Unix seconds); 0 when unknown.
    ts: float = 0.0


class MalformedEvent(ValueError):
    """A stream entry that is not an event (missing fields, bad JSON, bad or missing signature)."""


def _s(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def parse_entry(fields: Mapping[Any, Any], verify_key: bytes | None) -> Event:
    """Turn the fields of one stream entry into an :class:`Event` (without its id).

    With ``verify_key`` the entry must carry a valid ``sig``. Raises :class:`MalformedEvent`."""
    raw = {_s(k): _s(v) for k, v in fields.items()}
    missing = [f for f in _REQUIRED if f not in raw]
    if missing:
        raise MalformedEvent(f"missing field(s) {', '.join(missing)}")
    ts_raw = raw.get("ts", "")
    if verify_key is not None:
        given = raw.get("sig", "")
        expected = signature(verify_key, raw["name"], raw["source"], ts_raw, raw["args"])
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise MalformedEvent("invalid signature" if given else "unsigned")
    try:
        args = json.loads(raw["args"])
        ts = float(ts_raw) if ts_raw else 0.0
    except ValueError as exc:
        raise MalformedEvent(f"undecodable field: {exc}") from None
    if not isinstance(args, dict) or not raw["name"]:
        raise MalformedEvent("args must be a JSON object and name non-empty")
    return Event(raw["name"], raw["source"], args, ts=ts)


class EventProducer:
    """Appends events to the stream, signed when given ``signing_key`` (agents and managers hold
    it; see :func:`event_signing_key`)."""

    def __init__(self, redis: aioredis.Redis, signing_key: bytes | None = None) -> None:
        self._redis = redis
        self._key = signing_key

    @property
    def signing_key(self) -> bytes | None:
        return self._key

    @property
    def redis(self) -> aioredis.Redis:
        """The connection events go through (for data an event only refers to: kernel_logs)."""
        return self._redis

    def entry(self, name: str, source: str, **args: Any) -> dict[str, str]:
        """The stream fields of one event (what :meth:`produce` appends)."""
        body = json.dumps(args, default=str)
        ts = f"{time.time():.6f}"
        fields = {"name": name, "source": source, "args": body, "ts": ts}
        if self._key is not None:
            fields["sig"] = signature(self._key, name, source, ts, body)
        return fields

    async def produce(self, name: str, source: str, **args: Any) -> None:
        await self._redis.xadd(
            STREAM_KEY, cast(Any, self.entry(name, source, **args)), maxlen=STREAM_MAXLEN, approximate=True,
        )

    async def broadcast(self, name: str, source: str, **args: Any) -> None:
        payload = json.dumps({"name": name, "source": source, "args": args}, default=str)
        await self._redis.publish(BROADCAST_CHANNEL, payload)


Reply = list[tuple[Any, list[tuple[Any, dict[Any, Any] | None]]]]


class EventConsumer:
    """Reads the stream as one member of a consumer group; acknowledges after handling.

    ``read`` returns only well-formed (and, with ``verify_key``, authentic) events: anything else
    is logged, acknowledged and copied to :data:`DEAD_LETTER_KEY`, so one bad entry never stops
    the flow. A group that vanished (Redis restarted without its data) is created again."""

    def __init__(self, redis: aioredis.Redis, consumer_id: str, group: str = CONSUMER_GROUP, *,
                 verify_key: bytes | None = None, claim_min_idle_ms: int = 60_000) -> None:
        self._redis = redis
        self._consumer = consumer_id
        self._group = group
        self._key = verify_key
        self._claim_min_idle_ms = claim_min_idle_ms
        self._claim_cursor = "0-0"
        #: Our own entries delivered before a restart and never acknowledged come first.
        self._own_backlog = True
        self.dropped = 0

    async def ensure_group(self, from_start: bool = False) -> None:
        """Create the group if missing: at the stream's end normally, or at its start when the
        stream was lost (every entry in a just-recreated stream is new)."""
        try:
            await self._redis.xgroup_create(STREAM_KEY, self._group, id="0" if from_start else "$", mkstream=True)
        except aioredis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        else:
            if from_start:
                log.warning("event consumer group %r was missing (Redis lost its data?): created it again",
                            self._group)

    async def read(self, block_ms: int = 1000, count: int = 64) -> list[Event]:
        try:
            if self._own_backlog:
                backlog = await self._read("0", count, None)
                if len(backlog) < count:
                    self._own_backlog = False  # drained: from now on, only new entries
                if backlog:
                    return await self._accept(backlog)
            return await self._accept(await self._read(">", count, block_ms))
        except aioredis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group(from_start=True)
            self._own_backlog = False
            return []

    async def _read(self, stream_id: str, count: int, block_ms: int | None) -> list[tuple[Any, dict[Any, Any] | None]]:
        reply = await self._redis.xreadgroup(self._group, self._consumer, {STREAM_KEY: stream_id},
                                             count=count, block=block_ms)
        return [e for _stream, es in cast(Reply, reply or []) for e in es]

    async def claim_stale(self, count: int = 64) -> list[Event]:
        """Take over entries another consumer (a manager that died) received but never
        acknowledged, once they have been idle ``claim_min_idle_ms``."""
        try:
            reply = await self._redis.xautoclaim(
                STREAM_KEY, self._group, self._consumer, self._claim_min_idle_ms,
                start_id=self._claim_cursor, count=count,
            )
        except aioredis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group(from_start=True)
            return []
        cursor, entries = _s(reply[0]), list(reply[1])
        self._claim_cursor = cursor
        if entries:
            log.warning("re-claimed %d pending event(s) of a consumer that stopped", len(entries))
        return await self._accept(entries)

    async def _accept(self, entries: list[tuple[Any, dict[Any, Any] | None]]) -> list[Event]:
        events: list[Event] = []
        for entry_id, fields in entries:
            eid = _s(entry_id)
            if fields is None:  # trimmed away while pending
                await self._redis.xack(STREAM_KEY, self._group, eid)
                continue
            try:
                ev = parse_entry(fields, self._key)
            except MalformedEvent as exc:
                self.dropped += 1
                log.warning("dropping stream entry %s: %s (source %r, name %r)", eid, exc,
                            _s(fields.get(b"source", fields.get("source", ""))),
                            _s(fields.get(b"name", fields.get("name", "")))[:64])
                await self.dead_letter(eid, fields, str(exc))
                continue
            events.append(Event(ev.name, ev.source, ev.args, eid, ev.ts))
        return events

    async def ack(self, event: Event) -> None:
        await self._redis.xack(STREAM_KEY, self._group, event.id)

    async def dead_letter(self, entry_id: str, fields: Mapping[Any, Any], error: str) -> None:
        """Keep a copy of an entry that could not be handled (capped), then acknowledge it."""
        copy = {_s(k): _s(v) for k, v in fields.items() if _s(k) in ("name", "source", "args", "ts")}
        copy.update({"entry_id": entry_id, "error": error[:500]})
        await self._redis.xadd(DEAD_LETTER_KEY, cast(Any, copy), maxlen=DEAD_LETTER_MAXLEN, approximate=True)
        await self._redis.xack(STREAM_KEY, self._group, entry_id)

    async def dead_letter_event(self, ev: Event, error: str) -> None:
        await self.dead_letter(ev.id, {"name": ev.name, "source": ev.source,
                                       "args": json.dumps(ev.args, default=str), "ts": str(ev.ts)}, error)
