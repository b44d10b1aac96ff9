"""The manager's aiohttp application: resources as ordered cleanup contexts, then routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

from bai.common import etcd as etcd_mod
from bai.common.events import (
    REDIS_DB_RATELIMIT,
    REDIS_DB_STREAM,
    EventConsumer,
    EventProducer,
    event_signing_key,
)
from bai.common.tasks import raise_if_cancelling, stop_tasks
from bai.manager.api import auth, events, gql, openapi, root, session, stream
from bai.manager.api.keys import CTX, SCHEDULER, SESSIONS
from bai.manager.api.middlewares import auth_middleware, on_prepare, problem_middleware
from bai.manager.config import ManagerConfig
from bai.manager.errors import ServiceUnavailable
from bai.manager.services.agents import AgentPool
from bai.manager.services.context import ManagerContext
from bai.manager.services.lifecycle import (
    LifecycleHandler,
    consume_events,
    keep_in_sync_with_agents,
    relay_broadcasts,
    sweep_stuck_sessions_forever,
    watch_lost_agents,
)
from bai.manager.services.scheduler import Scheduler
from bai.manager.services.sessions import SessionService
from bai.manager.store.db import create_engine

log = logging.getLogger(__name__)


def _redis(addr: str, db: int, password: str | None, timeout: float = 10.0) -> aioredis.Redis:
    host, port = etcd_mod.parse_addr(addr, 6379)
    # Every command has a deadline (pub/sub listening is exempt: redis-py waits on it without
    # one); keep-alive and health checks notice a Redis that went away while idle.
    return aioredis.Redis(host=host, port=port, db=db, password=password or None, decode_responses=False,
                          socket_timeout=timeout, socket_connect_timeout=min(timeout, 5.0),
                          socket_keepalive=True, health_check_interval=15)


def build_app(config: ManagerConfig) -> web.Application:
    app = web.Application(
        middlewares=[problem_middleware, auth_middleware],
        client_max_size=config.manager.max_request_size,
    )
    app.on_response_prepare.append(on_prepare)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            mcfg = config.manager
            etcd = await stack.enter_async_context(etcd_mod.connect(config.etcd.addr, config.etcd.namespace))
            async with asyncio.timeout(mcfg.etcd_timeout * 3):
                redis_addr = await etcd.get("config/redis/addr")
                if not redis_addr:
                    raise ServiceUnavailable("etcd has no config/redis/addr; run the installer or `bai-manager etcd put`")
                redis_password = await etcd.get("config/redis/password")
                rpc_secret = await etcd.get("config/agent/rpc-secret") or ""
            if not rpc_secret:
                log.error("etcd has no config/agent/rpc-secret: no agent event can be verified")
            engine = create_engine(config.db)
            stack.push_async_callback(engine.dispose)
            r_stream = _redis(redis_addr, REDIS_DB_STREAM, redis_password, mcfg.redis_timeout)
            r_rate = _redis(redis_addr, REDIS_DB_RATELIMIT, redis_password, mcfg.redis_timeout)
            stack.push_async_callback(r_stream.aclose)
            stack.push_async_callback(r_rate.aclose)
            agents = AgentPool(rpc_secret, timeout=mcfg.agent_rpc_timeout,
                               connect_timeout=mcfg.agent_rpc_connect_timeout)
            stack.push_async_callback(agents.close)
            # Agents sign their events with a key derived from the RPC secret, which Redis
            # writers do not have; only events verified with it are handled.
            producer = EventProducer(r_stream, signing_key=event_signing_key(rpc_secret))
            ctx = ManagerContext(config=config, db=engine, redis_stream=r_stream, redis_ratelimit=r_rate,
                                 etcd=etcd, agents=agents, events=producer)
            sessions = SessionService(ctx)
            scheduler = Scheduler(ctx, sessions)
            handler = LifecycleHandler(ctx, sessions)
            app[CTX] = ctx
            app[SESSIONS] = sessions
            app[SCHEDULER] = scheduler
            # Join the consumer group before serving so no event sent after start-up is missed.
            consumer = EventConsumer(r_stream, ctx.manager_id, verify_key=producer.signing_key,
                                     claim_min_idle_ms=int(mcfg.event_claim_min_idle * 1000))
            await consumer.ensure_group()
            tasks = [
                asyncio.create_task(consume_events(ctx, handler, consumer), name="events"),
                asyncio.create_task(relay_broadcasts(ctx), name="broadcasts"),
                asyncio.create_task(scheduler.run(), name="scheduler"),
                asyncio.create_task(watch_lost_agents(ctx), name="lost-agents"),
                asyncio.create_task(keep_in_sync_with_agents(ctx, handler), name="agent-sync"),
                asyncio.create_task(sweep_stuck_sessions_forever(ctx, sessions), name="stuck-sweep"),
            ]
            registration = EtcdRegistration(etcd, f"nodes/manager/{ctx.manager_id}", mcfg.etcd_timeout)
            await registration.register()
            tasks.append(asyncio.create_task(registration.keep(), name="etcd-lease"))
            ctx.request_schedule()
            try:
                yield
            finally:
                ctx.stopping.set()
                await stop_tasks(tasks)
                await handler.stop()
                await registration.unregister()

    app.cleanup_ctx.append(resources)
    root.routes(app)
    auth.routes(app)
    session.routes(app)
    stream.routes(app)
    events.routes(app)
    gql.routes(app)
    openapi.routes(app)
    return app


class EtcdRegistration:
    """``nodes/manager/<id>`` under a lease, refreshed every 10 s and written again when etcd
    lost the lease (restarted, or we were cut off past its TTL). Every call has a deadline."""

    TTL = 30

    def __init__(self, etcd: etcd_mod.EtcdStore, key: str, timeout: float) -> None:
        self._etcd = etcd
        self._key = key
        self._timeout = timeout
        self._lease: Any = None

    async def register(self) -> None:
        async with asyncio.timeout(self._timeout):
            self._lease = await self._etcd.lease(self.TTL)
            await self._etcd.put(self._key, "up", lease=self._lease)

    async def keep(self) -> None:
        while True:
            await asyncio.sleep(10)
            try:
                async with asyncio.timeout(self._timeout):
                    reply = await self._lease.refresh()
                if getattr(reply, "TTL", 1) <= 0:
                    log.warning("etcd forgot our lease: registering again")
                    await self.register()
            except Exception:
                raise_if_cancelling()
                log.warning("etcd lease refresh failed", exc_info=True)
                with contextlib.suppress(Exception):
                    await self.register()

    async def unregister(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._etcd.delete(self._key)
                if self._lease is not None:
                    await self._lease.revoke()
        except Exception:
            log.debug("could not deregister from etcd", exc_info=True)


def run(config: ManagerConfig) -> None:
    host, port = config.service_host_port
    web.run_app(build_app(config), host=host, port=port, access_log=None, print=None,
                handle_signals=True, shutdown_timeout=5.0)
