"""The manager's aiohttp application: resources as an ordered list of small start-up contexts,
then routes.

Each context opens one resource, sets its app keys, yields while the manager serves, and closes
it; aiohttp enters them in list order and leaves them in reverse, so a resource may use what the
ones before it set. Adding a resource is one function here and one line in ``START_UP``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from bai.common import etcd as etcd_mod
from bai.common.agent_pool import AgentPool
from bai.common.events import (
    REDIS_DB_RATELIMIT,
    REDIS_DB_STREAM,
    EventConsumer,
    EventProducer,
    event_signing_key,
)
from bai.common.redis import RedisTarget, open_redis_target, redis_target_from_etcd
from bai.common.tasks import raise_if_cancelling, stop_tasks
from bai.manager.api import (
    auth,
    bgtask,
    dotfiles,
    events,
    folder_mounts,
    folder_sharing,
    folders,
    gql,
    manager,
    openapi,
    pty,
    resource,
    root,
    scaling_groups,
    session,
    session_dependencies,
    session_templates,
    stream,
    usage_stats,
)
from bai.manager.api.audit import audit_middleware
from bai.manager.api.keys import CTX, SCHEDULER, SESSIONS
from bai.manager.api.middlewares import auth_middleware, on_prepare, problem_middleware
from bai.manager.config import ManagerConfig
from bai.manager.errors import ServiceUnavailable
from bai.manager.services import audit, idle, manager_admin
from bai.manager.services.auth import retire_rotated_keypairs_forever
from bai.manager.services.context import ManagerContext
from bai.manager.services.db_timelines import EtcdTimelineRecord
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
from bai.manager.services.sessions.queries import flush_forever as flush_query_counts_forever
from bai.manager.services.vfolders import proxies as storage_proxies
from bai.manager.store.db import create_engine, following_timelines

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SharedSettings:
    """What the manager reads from etcd at start-up (the installer writes it)."""

    redis: RedisTarget
    rpc_secret: str

    @property
    def redis_addr(self) -> str:
        return self.redis.addr


@dataclass(frozen=True)
class RedisClients:
    stream: aioredis.Redis
    ratelimit: aioredis.Redis


# What the start-up contexts hand to each other (the api's keys are in api/keys.py).
CONFIG = web.AppKey("config", ManagerConfig)
ETCD = web.AppKey("etcd", etcd_mod.EtcdStore)
SETTINGS = web.AppKey("settings", SharedSettings)
DB = web.AppKey("db", AsyncEngine)
REDIS = web.AppKey("redis", RedisClients)
AGENTS = web.AppKey("agents", AgentPool)
LIFECYCLE = web.AppKey("lifecycle", LifecycleHandler)

StartUpContext = Callable[[web.Application], AsyncIterator[None]]


async def etcd_ctx(app: web.Application) -> AsyncIterator[None]:
    """etcd, and the shared settings read from it (every read under a deadline)."""
    config = app[CONFIG]
    async with etcd_mod.connect(config.etcd.addr, config.etcd.namespace) as etcd:
        async with asyncio.timeout(config.manager.etcd_timeout * 3):
            redis = await redis_target_from_etcd(etcd)
            if redis is None:
                raise ServiceUnavailable("etcd has no config/redis/addr (nor config/redis/sentinel); "
                                         "run the installer or `bai-manager etcd put`")
            rpc_secret = await etcd.get("config/agent/rpc-secret") or ""
        if not rpc_secret:
            log.error("etcd has no config/agent/rpc-secret: no agent event can be verified")
        app[ETCD] = etcd
        app[SETTINGS] = SharedSettings(redis, rpc_secret)
        yield


async def db_ctx(app: web.Application) -> AsyncIterator[None]:
    engine = app[DB] = create_engine(app[CONFIG].db, timelines=EtcdTimelineRecord(app[ETCD]))
    try:
        async with following_timelines(engine):
            yield
    finally:
        await engine.dispose()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, timeout = app[SETTINGS], app[CONFIG].manager.redis_timeout
    clients = app[REDIS] = RedisClients(
        stream=open_redis_target(settings.redis, REDIS_DB_STREAM, timeout),
        ratelimit=open_redis_target(settings.redis, REDIS_DB_RATELIMIT, timeout))
    try:
        yield
    finally:
        await clients.ratelimit.aclose()
        await clients.stream.aclose()


async def agent_pool_ctx(app: web.Application) -> AsyncIterator[None]:
    mcfg = app[CONFIG].manager
    agents = app[AGENTS] = AgentPool(app[SETTINGS].rpc_secret, timeout=mcfg.agent_rpc_timeout,
                                     connect_timeout=mcfg.agent_rpc_connect_timeout)
    try:
        yield
    finally:
        await agents.close()


async def services_ctx(app: web.Application) -> AsyncIterator[None]:
    """The services the api and the background tasks use: sessions, the scheduler, the
    lifecycle handler, over one ManagerContext."""
    redis = app[REDIS]
    # Agents sign their events with a key derived from the RPC secret, which Redis writers do
    # not have; only events verified with it are handled.
    producer = EventProducer(redis.stream, signing_key=event_signing_key(app[SETTINGS].rpc_secret))
    ctx = app[CTX] = ManagerContext(config=app[CONFIG], db=app[DB], redis_stream=redis.stream,
                                    redis_ratelimit=redis.ratelimit, etcd=app[ETCD], agents=app[AGENTS],
                                    events=producer)
    app[SESSIONS] = SessionService(ctx)
    app[SCHEDULER] = Scheduler(ctx)
    handler = app[LIFECYCLE] = LifecycleHandler(ctx)
    try:
        yield
    finally:
        await handler.stop()


async def storage_proxies_ctx(app: web.Application) -> AsyncIterator[None]:
    """The storage proxies' client (made on first use) is closed at shutdown."""
    try:
        yield
    finally:
        await storage_proxies.close(app[CTX])


async def audit_ctx(app: web.Application) -> AsyncIterator[None]:
    """The audit log's queue and writer: up before requests are served, drained after."""
    async with audit.running(app[CTX]):
        yield


async def background_tasks_ctx(app: web.Application) -> AsyncIterator[None]:
    """Event consumption, broadcast relay, scheduling, lost agents, agent sync, stuck sessions."""
    ctx, handler = app[CTX], app[LIFECYCLE]
    # Join the consumer group before serving so no event sent after start-up is missed.
    consumer = EventConsumer(ctx.redis_stream, ctx.manager_id, verify_key=ctx.events.signing_key,
                             claim_min_idle_ms=int(ctx.config.manager.event_claim_min_idle * 1000))
    await consumer.ensure_group()
    await manager_admin.load_status(ctx)  # frozen or not, before the first request
    tasks = [
        asyncio.create_task(consume_events(ctx, handler, consumer), name="events"),
        asyncio.create_task(relay_broadcasts(ctx), name="broadcasts"),
        asyncio.create_task(app[SCHEDULER].run(), name="scheduler"),
        asyncio.create_task(watch_lost_agents(ctx), name="lost-agents"),
        asyncio.create_task(keep_in_sync_with_agents(ctx, handler), name="agent-sync"),
        asyncio.create_task(sweep_stuck_sessions_forever(ctx), name="stuck-sweep"),
        asyncio.create_task(audit.purge_expired_forever(ctx), name="audit-purge"),
        asyncio.create_task(manager_admin.refresh_status_forever(ctx), name="manager-status"),
        asyncio.create_task(retire_rotated_keypairs_forever(ctx), name="keypair-retire"),
        asyncio.create_task(flush_query_counts_forever(ctx), name="query-counts"),
        asyncio.create_task(idle.enforce_forever(ctx), name="idle-lifetime"),
    ]
    ctx.request_schedule()
    try:
        yield
    finally:
        ctx.stopping.set()  # before the cancel: loops whose reads swallow a cancellation end on it
        await stop_tasks(tasks)


async def registration_ctx(app: web.Application) -> AsyncIterator[None]:
    """``nodes/manager/<id>`` in etcd under a lease kept alive while the manager serves."""
    ctx = app[CTX]
    registration = EtcdRegistration(app[ETCD], f"nodes/manager/{ctx.manager_id}", ctx.config.manager.etcd_timeout)
    await registration.register()
    keep = asyncio.create_task(registration.keep(), name="etcd-lease")
    try:
        yield
    finally:
        ctx.stopping.set()
        await stop_tasks([keep])
        await registration.unregister()


#: Entered in this order, left in the reverse one.
START_UP: tuple[StartUpContext, ...] = (
    etcd_ctx,
    db_ctx,
    redis_ctx,
    agent_pool_ctx,
    services_ctx,
    storage_proxies_ctx,
    audit_ctx,
    background_tasks_ctx,
    registration_ctx,
)


def build_app(config: ManagerConfig) -> web.Application:
    app = web.Application(
        middlewares=[problem_middleware, audit_middleware, auth_middleware],
        client_max_size=config.manager.max_request_size,
    )
    app.on_response_prepare.append(on_prepare)
    app[CONFIG] = config
    app.cleanup_ctx.extend(START_UP)
    root.routes(app)
    auth.routes(app)
    session.routes(app)
    stream.routes(app)
    pty.routes(app)
    session_dependencies.routes(app)
    session_templates.routes(app)
    events.routes(app)
    bgtask.routes(app)
    gql.routes(app)
    resource.routes(app)
    usage_stats.routes(app)
    scaling_groups.routes(app)
    manager.routes(app)
    folders.routes(app)
    folder_mounts.routes(app)
    folder_sharing.routes(app)
    dotfiles.routes(app)
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
        self._lease: etcd_mod.Lease | None = None

    async def register(self) -> None:
        async with asyncio.timeout(self._timeout):
            self._lease = await self._etcd.lease(self.TTL)
            await self._etcd.put(self._key, "up", lease=self._lease)

    async def keep(self) -> None:
        while True:
            await asyncio.sleep(10)
            try:
                async with asyncio.timeout(self._timeout):
                    ttl = await self._lease.refresh() if self._lease is not None else 0
                if ttl <= 0:
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
