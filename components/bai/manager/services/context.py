"""What every service needs: database, Redis, etcd, the agent RPC client and the event bus."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from bai.common.etcd import EtcdStore
from bai.common.events import EventProducer
from bai.manager.config import ManagerConfig

from .agents import AgentPool


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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def manager_id(self) -> str:
        return self.config.manager.id

    def request_schedule(self) -> None:
        self.schedule_requested.set()
