"""The manager on an HA half-stack: ``[etcd] addr`` lists three members, etcd names Redis
sentinels, and ``[db] addr`` is a PostgreSQL primary and its streaming replica. Writes go to the
primary and reach the replica; with the primary down and the replica not yet promoted an API
write answers 503 problem+json (the client's retry cue, not a 500); once the replica is promoted
the same manager and the same engine write again, without a restart."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from typing import Any

import sqlalchemy as sa
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from bai.common import etcd as etcd_mod
from bai.common.auth import API_VERSION, sign_request
from bai.manager.config import DBConfig, ManagerConfig
from bai.manager.server import DB, REDIS, build_app
from bai.manager.store import fixtures, migrate
from bai.manager.store import tables as t
from bai.manager.store.db import create_engine, is_transient
from tests.fixtures.ha_halfstack import EtcdCluster, PostgresPair, SentinelRedis

PROMOTION_DEADLINE = 30.0


async def _update_full_name(session: ClientSession, host: str, admin: fixtures.AdminCredentials,
                            name: str) -> tuple[int, str, Any]:
    path = "/auth/update-full-name"
    signed = sign_request(admin.access_key, admin.secret_key, "POST", path, host, "application/json")
    headers = {"Host": host, "Content-Type": "application/json", "X-BackendAI-Version": API_VERSION,
               "Date": signed.date, "Authorization": signed.authorization}
    body = json.dumps({"email": admin.email, "full_name": name})
    async with session.post(f"http://{host}{path}", data=body, headers=headers) as resp:
        return resp.status, resp.content_type, await resp.json(content_type=None)


async def test_the_manager_rides_out_a_postgresql_failover_on_an_ha_half_stack(
        etcd_cluster: EtcdCluster, sentinel_redis: SentinelRedis, postgres_pair: PostgresPair) -> None:
    pair = postgres_pair
    db = DBConfig.model_validate({"addr": pair.addr, "name": "backend_ha", "user": "postgres"})
    await asyncio.to_thread(pair.psql, pair.primary_port, "create database backend_ha")
    await asyncio.to_thread(migrate.upgrade, db.dsn)  # the multi-host URL reaches the primary
    engine = create_engine(db)
    namespace = f"ha-{secrets.token_hex(3)}"
    try:
        async with engine.begin() as conn:
            admin = await fixtures.populate(conn)
        async with etcd_mod.connect(etcd_cluster.addr, namespace) as etcd:
            await etcd.put("config/redis/sentinel", sentinel_redis.sentinels)
            await etcd.put("config/redis/service_name", sentinel_redis.service_name)
            await etcd.put("config/redis/password", sentinel_redis.password)
            await etcd.put("config/agent/rpc-secret", secrets.token_urlsafe(24))
        config = ManagerConfig.model_validate({
            "etcd": {"namespace": namespace, "addr": etcd_cluster.addr},
            "db": {"addr": pair.addr, "name": "backend_ha", "user": "postgres"},
            "manager": {"id": f"i-ha-{namespace}", "service-addr": "127.0.0.1:0"},
        })
        app = build_app(config)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        host = f"127.0.0.1:{server.port}"
        try:
            async with ClientSession() as http:
                assert await app[REDIS].stream.ping()  # through the sentinels
                status, _, _ = await _update_full_name(http, host, admin, "before")
                assert status == 200

                async def replica_has(name: str) -> bool:
                    try:
                        got = await asyncio.to_thread(
                            pair.psql, pair.replica_port,
                            f"select full_name from users where email = '{admin.email}'", "backend_ha")
                    except subprocess.CalledProcessError:  # the database itself not replayed yet
                        return False
                    return got == name

                await _poll("the write streamed to the replica", lambda: replica_has("before"), 10)

                await asyncio.to_thread(pair.stop_primary)
                for attempt in range(2):  # a pooled connection's failure, then a refused connect
                    status, ctype, body = await _update_full_name(http, host, admin, f"during-{attempt}")
                    assert (status, ctype) == (503, "application/problem+json"), body
                    assert body["type"].endswith("/service-unavailable")

                await asyncio.to_thread(pair.promote_replica)

                async def written(name: str) -> bool:
                    status, _, body = await _update_full_name(http, host, admin, name)
                    assert status in (200, 503), body  # 503 until a connection finds the new primary
                    return status == 200

                await _poll("the manager's write after the promotion", lambda: written("after"), PROMOTION_DEADLINE)
                assert await replica_has("after")  # now the primary

                async def engine_writes() -> bool:  # the engine made before the failover, too
                    async with engine.begin() as conn:
                        await conn.execute(sa.update(t.users).where(t.users.c.email == admin.email)
                                           .values(full_name="engine"))
                    return True

                await _poll("the old engine's write after the promotion", engine_writes, PROMOTION_DEADLINE)
                async with app[DB].connect() as conn:
                    name = await conn.scalar(sa.select(t.users.c.full_name).where(t.users.c.email == admin.email))
                assert name == "engine"
        finally:
            await server.close()
    finally:
        await engine.dispose()


async def _poll(what: str, check: Any, deadline: float) -> None:
    """``await check()`` until it is true; errors of the outage count as not yet."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        try:
            if await check():
                return
        except Exception as exc:
            if not is_transient(exc):
                raise
        if loop.time() > end:
            raise TimeoutError(f"{what}: not within {deadline} s")
        await asyncio.sleep(0.1)
