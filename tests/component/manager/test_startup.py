"""The manager's start-up list against real PostgreSQL, Redis and etcd: every resource is up and
the manager registered while it serves; leaving unregisters it and ends every background task;
a start-up that cannot find its settings fails clearly and opens nothing after etcd."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from aiohttp.test_utils import TestServer

from bai.common import etcd as etcd_mod
from bai.manager.api.keys import CTX, SCHEDULER, SESSIONS
from bai.manager.config import ManagerConfig
from bai.manager.errors import ServiceUnavailable
from bai.manager.server import AGENTS, DB, ETCD, LIFECYCLE, REDIS, SETTINGS, START_UP, build_app
from tests.fixtures.halfstack import HalfStack
from tests.fixtures.node_parts import node_parts

BACKGROUND = {"events", "broadcasts", "scheduler", "lost-agents", "agent-sync", "stuck-sweep", "etcd-lease",
              "audit-writer", "audit-purge", "keypair-retire", "manager-status"}


def _background_tasks() -> set[str]:
    return {t.get_name() for t in asyncio.all_tasks() if not t.done()} & BACKGROUND


async def test_serving_manager_has_every_resource_and_leaves_nothing_behind(halfstack: HalfStack) -> None:
    async with node_parts(halfstack, "startup") as parts:
        app = build_app(parts.manager_config)
        assert list(app.cleanup_ctx)[: len(START_UP)] == list(START_UP)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            ctx = app[CTX]
            assert (ctx.db, ctx.etcd, ctx.agents) == (app[DB], app[ETCD], app[AGENTS])
            assert (ctx.redis_stream, ctx.redis_ratelimit) == (app[REDIS].stream, app[REDIS].ratelimit)
            assert app[SETTINGS].redis_addr == parts.redis_addr
            assert app[SESSIONS].ctx is ctx and app[SCHEDULER].ctx is ctx and app[LIFECYCLE].ctx is ctx
            assert await app[REDIS].stream.ping() and await app[REDIS].ratelimit.ping()
            assert _background_tasks() == BACKGROUND
            registered = await app[ETCD].get(f"nodes/manager/{ctx.manager_id}")
            assert registered == "up"
        finally:
            await server.close()
        assert ctx.stopping.is_set()
        assert _background_tasks() == set()
        cfg = parts.manager_config.etcd
        async with etcd_mod.connect(cfg.addr, cfg.namespace) as etcd:
            assert await etcd.get(f"nodes/manager/{ctx.manager_id}") is None


async def test_start_up_without_redis_settings_fails_clearly_and_opens_nothing_more(halfstack: HalfStack) -> None:
    config = ManagerConfig.model_validate({
        "etcd": {"namespace": f"startup-empty-{secrets.token_hex(4)}", "addr": halfstack.etcd_addr},
        "manager": {"service-addr": "127.0.0.1:0"},
    })
    app = build_app(config)
    server = TestServer(app, host="127.0.0.1")
    with pytest.raises(ServiceUnavailable, match="config/redis/addr"):
        await server.start_server()
    await server.close()
    assert DB not in app and REDIS not in app and CTX not in app
    assert _background_tasks() == set()
