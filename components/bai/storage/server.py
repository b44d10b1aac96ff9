"""The storage-proxy process: start-up as ordered contexts, then both APIs served until stopped.

Each context opens one resource, yields while the proxy serves and closes it; they are entered in
``START_UP`` order and left in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path

from aiohttp import web

from .api import client as client_api
from .api import manager as manager_api
from .api.common import ProxyContext
from .config import StorageProxyConfig
from .uploads import UploadSessions
from .volume import VolumePool

log = logging.getLogger(__name__)


class StartUpError(Exception):
    """The proxy cannot serve (a volume path missing, an address in use...)."""


class _State:
    def __init__(self, config: StorageProxyConfig) -> None:
        self.config = config
        self.ctx: ProxyContext | None = None
        self.runners: list[web.AppRunner] = []


StartUpContext = Callable[[_State], AbstractAsyncContextManager[None]]


CAP_CHOWN = 0  # capability number (linux/capability.h)


def can_chown(status: str | None = None) -> bool:
    """Whether this process holds CAP_CHOWN in its effective set (``status``: the text of
    /proc/self/status, read when None)."""
    if status is None:
        try:
            status = Path("/proc/self/status").read_text()
        except OSError:
            return os.geteuid() == 0
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_CHOWN & 1)
    return os.geteuid() == 0


@contextlib.asynccontextmanager
async def volumes_ctx(state: _State) -> AsyncIterator[None]:
    """The volumes, each of which must be an existing writable directory (a missing mount must
    not turn into folders written on the root filesystem)."""
    cfg = state.config
    for name, vol in cfg.volume.items():
        # (effective ids: a proxy given CAP_DAC_OVERRIDE by its service may write where its
        # plain uid could not, and access() with the real ids would say no)
        if not vol.path.is_dir() or not os.access(vol.path, os.W_OK | os.X_OK, effective_ids=True):
            raise StartUpError(f"volume {name}: {vol.path} is not a writable directory")
    if not cfg.volume:
        log.warning("no [volume.*] configured: this proxy serves no folders")
    # Only a process with CAP_CHOWN (root, or the installed proxy's own account, given just that
    # and the file-permission capabilities) can give files away; a proxy running as the kernel's
    # uid owns them anyway.
    owner = (cfg.storage_proxy.kernel_uid, cfg.storage_proxy.kernel_gid) if can_chown() else None
    volumes = VolumePool(cfg.volume, cfg.storage_proxy.usage_cache_ttl, owner)
    uploads = UploadSessions(cfg.storage_proxy.session_expire, cfg.storage_proxy.max_upload_size)
    state.ctx = ProxyContext(config=cfg, volumes=volumes, uploads=uploads)
    yield


@contextlib.asynccontextmanager
async def apis_ctx(state: _State) -> AsyncIterator[None]:
    """Both listeners, the manager-facing one first (the manager waits on it)."""
    assert state.ctx is not None
    cfg = state.config
    apps = ((manager_api.create_app(state.ctx), cfg.api.manager.host_port),
            (client_api.create_app(state.ctx), cfg.api.client.host_port))
    try:
        for app, (host, port) in apps:
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            state.runners.append(runner)
            try:
                await web.TCPSite(runner, host, port, reuse_address=True).start()
            except OSError as exc:
                raise StartUpError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
            log.info("storage proxy %s listening on %s:%d", cfg.storage_proxy.node_id, host, port)
        yield
    finally:
        for runner in reversed(state.runners):
            await runner.cleanup()


START_UP: tuple[StartUpContext, ...] = (volumes_ctx, apis_ctx)


@contextlib.asynccontextmanager
async def running(config: StorageProxyConfig) -> AsyncIterator[ProxyContext]:
    """The proxy serving both APIs for the duration of the block (tests use it in-process)."""
    state = _State(config)
    async with AsyncExitStack() as stack:
        for ctx in START_UP:
            await stack.enter_async_context(ctx(state))
        assert state.ctx is not None
        yield state.ctx


async def serve(config: StorageProxyConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running(config):
        await stop.wait()
        log.info("storage proxy stopping")
