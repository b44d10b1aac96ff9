"""The webserver process: start-up as ordered contexts (each opens one resource, yields while the
server serves and closes it; entered in ``START_UP`` order, left in reverse), then the site served
until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack

import aiohttp
from aiohttp import web
from redis.exceptions import RedisError

from bai.common.redis import open_redis_target
from bai.common.tasks import stop_tasks

from . import accesslog
from .api import func, login, ui
from .config import WebserverConfig
from .errors import Handler, problem_middleware
from .proxy import ManagerLink
from .security import security_headers
from .sessions import SessionStore
from .state import STATE, USER, WebState
from .static import StaticFiles, ensure_mimetypes

log = logging.getLogger(__name__)
access_log = logging.getLogger("bai.webserver.access")


class StartUpError(Exception):
    """The webserver cannot serve (its port in use, Redis unreachable...)."""


StartUpContext = Callable[[WebState], AbstractAsyncContextManager[None]]


@contextlib.asynccontextmanager
async def access_log_ctx(state: WebState) -> AsyncIterator[None]:
    """Access lines written in batches (see accesslog: a write per line cost supervisord more
    CPU per call than the relay's own signing and session lookup together)."""
    async with accesslog.batched(access_log):
        yield


@contextlib.asynccontextmanager
async def redis_ctx(state: WebState) -> AsyncIterator[None]:
    cfg = state.config.session
    redis = open_redis_target(cfg.redis.target, cfg.redis.db)
    follower: asyncio.Task[None] | None = None
    try:
        try:
            async with asyncio.timeout(15):
                await redis.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            raise StartUpError(f"cannot reach Redis at {cfg.redis.target.describe()} (db {cfg.redis.db}): {exc!r}") from exc
        store = state.store = SessionStore(redis, cfg)
        if cfg.flush_on_startup:
            log.info("flush_on_startup: %d logins ended", await store.flush())
        follower = asyncio.create_task(store.follow_ends(), name="ended-logins")
        yield
    finally:
        if follower is not None:
            await stop_tasks([follower])
        await redis.aclose()


@contextlib.asynccontextmanager
async def manager_link_ctx(state: WebState) -> AsyncIterator[None]:
    """The HTTP client towards the manager: pooled keep-alive connections, connect and read
    deadlines, answers passed through undecoded, no cookies of its own."""
    cfg = state.config.api
    timeout = aiohttp.ClientTimeout(total=None, connect=cfg.connect_timeout, sock_read=cfg.read_timeout)
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30.0, ssl=True if cfg.ssl_verify else False)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                     cookie_jar=aiohttp.DummyCookieJar(),
                                     skip_auto_headers=("User-Agent", "Accept-Encoding")) as session:
        link = state.link = ManagerLink(state.config, session)
        try:
            yield
        finally:
            link.close()


@contextlib.asynccontextmanager
async def static_ctx(state: WebState) -> AsyncIterator[None]:
    ensure_mimetypes()
    svc = state.config.service
    state.ui = StaticFiles(svc.static_path)
    state.xterm = StaticFiles(svc.xterm_path)
    if not (svc.static_path / "index.html").is_file():
        log.warning("no web UI at %s (index.html missing): / answers 404", svc.static_path)
    yield


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in request.app[STATE].headers.items():
        response.headers.setdefault(name, value)
    response.headers.popall("Server", None)


def _quoted(path: str) -> str:
    # one token per field, whatever the path holds (spaces, quotes, control characters)
    return path if path.isprintable() and " " not in path and '"' not in path else repr(path)


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One ``key=value`` line per request: method, path (never the query: it may carry tokens),
    status, milliseconds, user, peer. A request whose client vanished is logged as 499."""
    started = time.monotonic()
    status = 499
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    finally:
        access_log.info("method=%s path=%s status=%d ms=%.1f user=%s peer=%s", request.method,
                        _quoted(request.path), status, (time.monotonic() - started) * 1000, request.get(USER, "-"),
                        request.remote)


def build_app(state: WebState) -> web.Application:
    app = web.Application(middlewares=[access_middleware, problem_middleware],
                          client_max_size=state.config.service.max_body_size)
    app[STATE] = state
    app.on_response_prepare.append(_add_headers)
    login.routes(app)
    func.routes(app)
    ui.routes(app)
    return app


def _ssl_context(state: WebState) -> ssl.SSLContext | None:
    svc = state.config.service
    if not svc.ssl_enabled:
        return None
    assert svc.ssl_cert is not None and svc.ssl_privkey is not None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(svc.ssl_cert, svc.ssl_privkey)
    return ctx


@contextlib.asynccontextmanager
async def site_ctx(state: WebState) -> AsyncIterator[None]:
    svc = state.config.service
    runner = web.AppRunner(build_app(state), access_log=None, handle_signals=False, handler_cancellation=True,
                           shutdown_timeout=2.0)
    await runner.setup()
    try:
        try:
            ssl_ctx = _ssl_context(state)
        except (OSError, ssl.SSLError) as exc:
            raise StartUpError(f"cannot load the TLS certificate: {exc}") from exc
        try:
            await web.TCPSite(runner, svc.ip, svc.port, ssl_context=ssl_ctx, reuse_address=True).start()
        except OSError as exc:
            raise StartUpError(f"cannot listen on {svc.ip}:{svc.port}: {exc.strerror}") from exc
        log.info("webserver listening on %s://%s:%d (manager %s)", svc.scheme, svc.ip, svc.port,
                 state.config.api.endpoint)
        yield
    finally:
        await runner.cleanup()


START_UP: tuple[StartUpContext, ...] = (access_log_ctx, redis_ctx, manager_link_ctx, static_ctx, site_ctx)


def new_state(config: WebserverConfig) -> WebState:
    return WebState(config, logins=asyncio.Semaphore(config.session.max_concurrent_logins),
                    headers=security_headers(config))


@contextlib.asynccontextmanager
async def running(config: WebserverConfig) -> AsyncIterator[WebState]:
    """The webserver serving for the duration of the block (tests use it in-process)."""
    state = new_state(config)
    async with AsyncExitStack() as stack:
        for ctx in START_UP:
            await stack.enter_async_context(ctx(state))
        yield state


async def serve(config: WebserverConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running(config):
        await stop.wait()
        log.info("webserver stopping")
