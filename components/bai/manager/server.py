"""The manager's aiohttp application: resources as ordered cleanup contexts, then routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import redis.asyncio as aioredis
from aiohttp import web

from bai.common import etcd as etcd_mod
from bai.common.events import REDIS_DB_RATELIMIT, REDIS_DB_STREAM, EventProducer
from bai.common.tasks import stop_tasks
from bai.manager.api import auth, events, gql, root, session, stream
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
    watch_lost_agents,
)
from bai.manager.services.scheduler import Scheduler
from bai.manager.services.sessions import SessionService
from bai.manager.store.db import create_engine

log = logging.getLogger(__name__)


def _redis(addr: str, db: int, password: str | None) -> aioredis.Redis:
    host, port = etcd_mod.parse_addr(addr, 6379)
    return aioredis.Redis(host=host, port=port, db=db, password=password or None, decode_responses=False)


def build_app(config: ManagerConfig) -> web.Application:
    app = web.Application(
        middlewares=[problem_middleware, auth_middleware],
        client_max_size=config.manager.max_request_size,
    )
    app.on_response_prepare.append(on_prepare)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            etcd = await stack.enter_async_context(etcd_mod.connect(config.etcd.addr, config.etcd.namespace))
            redis_addr = await etcd.get("config/redis/addr")
            if not redis_addr:
                raise ServiceUnavailable("etcd has no config/redis/addr; run the installer or `bai-manager etcd put`")
            redis_password = await etcd.get("config/redis/password")
            rpc_secret = await etcd.get("config/agent/rpc-secret") or ""
            engine = create_engine(config.db)
            stack.push_async_callback(engine.dispose)
            r_stream = _redis(redis_addr, REDIS_DB_STREAM, redis_password)
            r_rate = _redis(redis_addr, REDIS_DB_RATELIMIT, redis_password)
            stack.push_async_callback(r_stream.aclose)
            stack.push_async_callback(r_rate.aclose)
            agents = AgentPool(rpc_secret)
            stack.push_async_callback(agents.close)
            ctx = ManagerContext(config=config, db=engine, redis_stream=r_stream, redis_ratelimit=r_rate,
                                 etcd=etcd, agents=agents, events=EventProducer(r_stream))
            sessions = SessionService(ctx)
            scheduler = Scheduler(ctx, sessions)
            handler = LifecycleHandler(ctx, sessions)
            app[CTX] = ctx
            app[SESSIONS] = sessions
            app[SCHEDULER] = scheduler
            # Join the consumer group before serving so no event sent after start-up is missed.
            from bai.common.events import EventConsumer
            await EventConsumer(r_stream, ctx.manager_id).ensure_group()
            tasks = [
                asyncio.create_task(consume_events(ctx, handler), name="events"),
                asyncio.create_task(relay_broadcasts(ctx), name="broadcasts"),
                asyncio.create_task(scheduler.run(), name="scheduler"),
                asyncio.create_task(watch_lost_agents(ctx), name="lost-agents"),
                asyncio.create_task(keep_in_sync_with_agents(ctx, handler), name="agent-sync"),
            ]
            lease = await etcd.lease(30)
            await etcd.put(f"nodes/manager/{ctx.manager_id}", "up", lease=lease)
            tasks.append(asyncio.create_task(_keep_lease(lease), name="etcd-lease"))
            ctx.request_schedule()
            try:
                yield
            finally:
                ctx.stopping.set()
                await stop_tasks(tasks)
                try:
                    await etcd.delete(f"nodes/manager/{ctx.manager_id}")
                    await lease.revoke()
                except Exception:
                    log.debug("could not deregister from etcd", exc_info=True)

    app.cleanup_ctx.append(resources)
    root.routes(app)
    auth.routes(app)
    session.routes(app)
    stream.routes(app)
    events.routes(app)
    gql.routes(app)
    return app


async def _keep_lease(lease: object) -> None:
    while True:
        await asyncio.sleep(10)
        try:
            await lease.refresh()  # type: ignore[attr-defined]
        except Exception:
            log.warning("etcd lease refresh failed", exc_info=True)


def run(config: ManagerConfig) -> None:
    host, port = config.service_host_port
    web.run_app(build_app(config), host=host, port=port, access_log=None, print=None,
                handle_signals=True, shutdown_timeout=5.0)
