"""Redis through Sentinel, as every daemon opens it from etcd's ``config/redis/sentinel``: a
primary killed with kill -9 is replaced by its replica, after which the same clients' commands,
the manager's broadcast subscription (subscribed before the failover) and the event stream's
consumer group all work on the new primary without being opened again."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bai.common import etcd as etcd_mod
from bai.common.events import REDIS_DB_STREAM, EventConsumer, EventProducer
from bai.common.redis import RedisTarget, open_redis_target, redis_target_from_etcd
from bai.manager.api.events import EventHub
from bai.webserver import config as webserver_config
from bai.webserver.server import redis_ctx
from bai.webserver.sessions import KEY_PREFIX
from bai.webserver.state import WebState
from tests.fixtures.ha_halfstack import SentinelRedis
from tests.fixtures.halfstack import HalfStack

FAILOVER_DEADLINE = 30.0


async def _target_from_etcd(halfstack: HalfStack, redis: SentinelRedis) -> RedisTarget:
    """Publish the Sentinel settings the way the installer does, and read them the daemons' way."""
    async with etcd_mod.connect(halfstack.etcd_addr, f"ha-redis-{secrets.token_hex(3)}") as etcd:
        await etcd.put("config/redis/sentinel", redis.sentinels)
        await etcd.put("config/redis/service_name", redis.service_name)
        await etcd.put("config/redis/password", redis.password)
        target = await redis_target_from_etcd(etcd)
    assert target is not None and target.sentinel == tuple(redis.sentinels.split(","))
    return target


async def _until(what: str, op: Any, accept: Any = lambda _: True, deadline: float = FAILOVER_DEADLINE) -> Any:
    """``await op()`` until it neither fails with a Redis connection error (the failover's gap)
    nor gives a result ``accept`` refuses; its result."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        try:
            result = await op()
            if accept(result):
                return result
        except (aioredis.ConnectionError, aioredis.TimeoutError, OSError):
            pass
        if loop.time() > end:
            raise TimeoutError(f"{what}: not done {deadline} s after the primary was killed")
        await asyncio.sleep(0.1)


async def test_clients_subscribers_and_stream_consumers_survive_a_failover(
        halfstack: HalfStack, sentinel_redis: SentinelRedis) -> None:
    target = await _target_from_etcd(halfstack, sentinel_redis)
    redis = open_redis_target(target, REDIS_DB_STREAM, timeout=5)
    publisher = open_redis_target(target, REDIS_DB_STREAM, timeout=5)
    hub = EventHub(redis, owners=None)  # type: ignore[arg-type]  # only stream handlers use owners
    hub_task = asyncio.create_task(hub.run())
    try:
        producer, consumer = EventProducer(publisher), EventConsumer(redis, "ha-consumer")
        await consumer.ensure_group()
        queue = hub.attach()
        await asyncio.wait_for(hub.subscribed.wait(), 10)
        await redis.set("before", "1")
        await producer.produce("probe", "test", n=1)
        [first] = await consumer.read(block_ms=100)
        assert first.args == {"n": 1}
        await consumer.ack(first)
        await producer.broadcast("probe", "test", when="before")
        assert (await asyncio.wait_for(queue.get(), 10))["args"] == {"when": "before"}
        # what the primary holds is on the replica before it goes (replication is asynchronous)
        assert await redis.execute_command("WAIT", 1, 5000) == 1

        old = sentinel_redis.primary_per_sentinels()
        assert old == sentinel_redis.primary_port
        sentinel_redis.kill(old)

        # the same clients' commands succeed once the sentinels have promoted the replica
        assert await _until("GET", lambda: redis.get("before")) == b"1"
        await _until("SET", lambda: redis.set("after", "2"))
        assert sentinel_redis.primary_per_sentinels() == sentinel_redis.replica_port
        assert sentinel_redis.cli(sentinel_redis.replica_port, "-n", str(REDIS_DB_STREAM), "get", "after") == "2"

        # the subscription made before the failover hears what is broadcast after it (it
        # subscribes again once its connection breaks; until then broadcasts reach nobody)
        async def heard_after() -> bool:
            await producer.broadcast("probe", "test", when="after")
            with contextlib.suppress(TimeoutError):
                while True:
                    payload = await asyncio.wait_for(queue.get(), 0.3)
                    if payload and payload["args"] == {"when": "after"}:
                        return True
            return False

        await _until("a broadcast after the failover heard", heard_after, accept=bool)

        # the stream's consumer group came over with the data: new entries reach the consumer
        await _until("XADD", lambda: producer.produce("probe", "test", n=2))
        read = await _until("XREADGROUP", lambda: consumer.read(block_ms=100), accept=bool)
        assert [e.args for e in read] == [{"n": 2}]
    finally:
        hub_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hub_task
        await publisher.aclose()
        await redis.aclose()


async def test_the_webserver_keeps_logins_on_the_primary_its_sentinels_name(sentinel_redis: SentinelRedis,
                                                                              tmp_path: Path) -> None:
    path = tmp_path / "webserver.toml"  # as the installer renders it for an HA cluster
    path.write_text(f'[session.redis]\nsentinel = {json.dumps(sentinel_redis.sentinels.split(","))}\n'
                    f'service-name = "{sentinel_redis.service_name}"\npassword = "{sentinel_redis.password}"\n')
    path.chmod(0o600)
    state = WebState(webserver_config.load(path))
    async with redis_ctx(state):
        assert state.store is not None
        sid, login = await _until("a login", lambda: state.store.create(  # type: ignore[union-attr]
            access_key="AKIA", secret_key="s", user_id="u@example.com", role="user", status="active",
            domain="default"))
        await asyncio.wait_for(state.store.listening.wait(), 10)  # ended logins are followed, too
        assert await state.store.get(sid) == login
    key = KEY_PREFIX + hashlib.sha256(sid.encode()).hexdigest()
    assert sentinel_redis.cli(sentinel_redis.primary_per_sentinels(), "-n", str(state.config.session.redis.db),
                              "exists", key) == "1"
