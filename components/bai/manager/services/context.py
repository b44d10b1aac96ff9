"""What every service needs: database, Redis, etcd, the agent RPC client and the event bus."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from bai.common.agent_pool import AgentPool
from bai.common.etcd import EtcdStore
from bai.common.events import EventProducer
from bai.manager.config import ManagerConfig
from bai.manager.store import keypairs as keypair_store
from bai.manager.store.keypairs import Requester


class SessionWaiters:
    """In-process futures for requests waiting on a session to leave its transient states."""

    def __init__(self) -> None:
        self._waiters: dict[uuid.UUID, list[asyncio.Future[str]]] = {}

    def add(self, session_id: uuid.UUID) -> asyncio.Future[str]:
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(session_id, []).append(fut)
        return fut

    def discard(self, session_id: uuid.UUID, fut: asyncio.Future[str]) -> None:
        futs = self._waiters.get(session_id)
        if futs and fut in futs:
            futs.remove(fut)
            if not futs:
                del self._waiters[session_id]

    def notify(self, session_id: uuid.UUID, status: str) -> None:
        for fut in self._waiters.pop(session_id, []):
            if not fut.done():
                fut.set_result(status)


class RequesterCache:
    """Authenticated keypairs, kept for a few seconds so each signed request does not cost a
    database round trip. A deactivated key or changed policy takes effect within ``ttl``."""

    def __init__(self, db: AsyncEngine, ttl: float = 5.0, max_entries: int = 10_000) -> None:
        self._db = db
        self._ttl = ttl
        self._max = max_entries
        self._entries: dict[str, tuple[float, Requester | None]] = {}

    async def get(self, access_key: str) -> Requester | None:
        now = time.monotonic()
        hit = self._entries.get(access_key)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        async with self._db.connect() as conn:
            found = await keypair_store.get_requester(conn, access_key)
        if len(self._entries) >= self._max:
            self._entries.clear()
        if found is not None:  # unknown keys are not cached: a new key works at once
            self._entries[access_key] = (now, found)
        return found

    def invalidate(self, access_key: str | None = None) -> None:
        if access_key is None:
            self._entries.clear()
        else:
            self._entries.pop(access_key, None)


@dataclass
class ManagerContext:
    config: ManagerConfig
    db: AsyncEngine
    redis_stream: aioredis.Redis
    redis_ratelimit: aioredis.Redis
    etcd: EtcdStore
    agents: AgentPool
    events: EventProducer
    waiters: SessionWaiters = field(default_factory=SessionWaiters)
    schedule_requested: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set at shutdown, before background tasks are cancelled.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    #: The cluster is frozen for maintenance (etcd ``manager/status``; services.manager_admin).
    frozen: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    requesters: RequesterCache = field(init=False)

    def __post_init__(self) -> None:
        self.requesters = RequesterCache(self.db)

    @property
    def manager_id(self) -> str:
        return self.config.manager.id

    def request_schedule(self) -> None:
        self.schedule_requested.set()
