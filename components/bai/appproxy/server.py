"""The app-proxy process: start-up as ordered contexts, then the coordinator API served until
stopped. Each context opens one resource, yields while the proxy serves and closes it; they are
entered in ``START_UP`` order and left in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

from bai.common import etcd as etcd_mod
from bai.common.events import REDIS_DB_STREAM
from bai.common.redis import open_redis_target, redis_target_from_etcd
from bai.common.session_activity import PendingStamps
from bai.common.tasks import stop_tasks

from . import activity, http_forward, session_watch, tcp_forward
from .api import coordinator
from .circuits import CircuitRegistry, sweep_idle_forever
from .config import AppProxyConfig

log = logging.getLogger(__name__)


class StartUpError(Exception):
    """The proxy cannot serve (its port in use, etcd without the Redis address...)."""


@dataclass
class ProxyState:
    config: AppProxyConfig
    upstream: aiohttp.ClientSession | None = None
    circuits: CircuitRegistry | None = None
    #: Set once the session-event subscription is up (tests wait for it).
    watching: asyncio.Event = field(default_factory=asyncio.Event)
    #: The manager's Redis (stream DB), found through etcd; None with watch-sessions off.
    redis: aioredis.Redis | None = None
    #: Traffic through circuits, as the sessions' activity, until written to Redis.
    activity: PendingStamps = field(default_factory=PendingStamps)


StartUpContext = Callable[[ProxyState], AbstractAsyncContextManager[None]]


@contextlib.asynccontextmanager
async def upstream_ctx(state: ProxyState) -> AsyncIterator[None]:
    """The HTTP client towards the services: no pooling limit of its own (circuits bound their
    connections), connect and read deadlines, answers passed through undecoded."""
    cfg = state.config.app_proxy
    timeout = aiohttp.ClientTimeout(total=None, connect=cfg.connect_timeout, sock_read=cfg.read_timeout)
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                     cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=("User-Agent",)) as session:
        state.upstream = session
        yield


@contextlib.asynccontextmanager
async def circuits_ctx(state: ProxyState) -> AsyncIterator[None]:
    cfg = state.config.app_proxy
    assert state.upstream is not None
    circuits = state.circuits = CircuitRegistry(cfg, {
        "http": http_forward.listener_factory(cfg, state.upstream),
        "tcp": tcp_forward.listener_factory(cfg),  # type: ignore[dict-item]
    }, activity=state.activity if cfg.watch_sessions else None)
    sweeper = asyncio.create_task(sweep_idle_forever(circuits, cfg.circuit_idle_timeout), name="idle-circuits")
    try:
        yield
    finally:
        await stop_tasks([sweeper])
        await circuits.close_all("the proxy is stopping")


@contextlib.asynccontextmanager
async def session_watch_ctx(state: ProxyState) -> AsyncIterator[None]:
    """The manager's session events, through the Redis that etcd names (as every daemon finds it)."""
    cfg = state.config
    if not cfg.app_proxy.watch_sessions:
        log.warning("watch-sessions is off: circuits outlive their sessions until the proxy restarts")
        yield
        return
    assert state.circuits is not None
    try:
        async with etcd_mod.connect(cfg.etcd.addr, cfg.etcd.namespace) as etcd, asyncio.timeout(30):
            target = await redis_target_from_etcd(etcd)
    except (OSError, TimeoutError, etcd_mod.EtcdError, ValueError) as exc:
        raise StartUpError(f"cannot read the Redis address from etcd at {cfg.etcd.addr}: {exc!r}") from exc
    if target is None:
        raise StartUpError("etcd has no config/redis/addr (nor config/redis/sentinel); run the installer")
    redis = state.redis = open_redis_target(target, REDIS_DB_STREAM)
    task = asyncio.create_task(session_watch.watch(redis, state.circuits, state.watching), name="session-watch")
    try:
        yield
    finally:
        await stop_tasks([task])
        await redis.aclose()


@contextlib.asynccontextmanager
async def activity_ctx(state: ProxyState) -> AsyncIterator[None]:
    """Traffic through circuits written to the manager's Redis as session activity (the idle
    timeout), every ``activity-flush``; written once more on the way out."""
    if state.redis is None:
        yield
        return
    task = asyncio.create_task(activity.flush_forever(state.activity, state.redis,
                                                      state.config.app_proxy.activity_flush), name="activity-flush")
    try:
        yield
    finally:
        await stop_tasks([task], grace=activity.FINAL_FLUSH_TIMEOUT + 1.0)


@contextlib.asynccontextmanager
async def api_ctx(state: ProxyState) -> AsyncIterator[None]:
    cfg = state.config.app_proxy
    assert state.circuits is not None
    runner = web.AppRunner(coordinator.create_app(cfg, state.circuits), access_log=None, handle_signals=False,
                           shutdown_timeout=2.0)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, cfg.bind_host, cfg.bind_api_port, reuse_address=True).start()
        except OSError as exc:
            raise StartUpError(f"cannot listen on {cfg.bind_host}:{cfg.bind_api_port}: {exc.strerror}") from exc
        log.info("app proxy %s listening on %s:%d (circuits on %d-%d)", cfg.id, cfg.bind_host, cfg.bind_api_port,
                 *cfg.bind_proxy_port_range)
        yield
    finally:
        await runner.cleanup()


START_UP: tuple[StartUpContext, ...] = (upstream_ctx, circuits_ctx, session_watch_ctx, activity_ctx, api_ctx)


@contextlib.asynccontextmanager
async def running(config: AppProxyConfig) -> AsyncIterator[ProxyState]:
    """The proxy serving for the duration of the block (tests use it in-process)."""
    state = ProxyState(config)
    async with AsyncExitStack() as stack:
        for ctx in START_UP:
            await stack.enter_async_context(ctx(state))
        yield state


async def serve(config: AppProxyConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running(config):
        await stop.wait()
        log.info("app proxy stopping")
