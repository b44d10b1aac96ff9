"""Background tasks outlive no manager (bai.manager.services.bgtasks), against a real Redis: a
task keeps ``started`` while its manager renews its lease, is recorded as failed (and announced)
once the lease lapses, and a late write of the task that was given up changes nothing a client
was told. The lease is shortened here; the kill -9 of a real manager is tests/fault/test_imagify_faults.
A client that stops following a task's stream leaves nothing behind on the manager."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from bai.common.auth import API_VERSION, sign_request
from bai.manager.api import bgtask
from bai.manager.api.keys import CTX
from bai.manager.services import bgtasks
from tests.fixtures.halfstack import HalfStack

from .conftest import ManagerDB

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def redis(halfstack: HalfStack) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host="127.0.0.1", port=halfstack.redis_port, db=9)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def short_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bgtasks, "LEASE_TTL", 0.6)
    monkeypatch.setattr(bgtasks, "LEASE_RENEW", 0.15)


async def _until_state(redis: aioredis.Redis, task_id: uuid.UUID, status: str, deadline: float = 10.0
                       ) -> bgtasks.TaskState:
    async with asyncio.timeout(deadline):
        while True:
            state = await bgtasks.read_state(redis, task_id)
            if state is not None and state.status == status:
                return state
            await asyncio.sleep(0.05)


async def test_a_live_manager_keeps_its_task_and_a_dead_one_loses_it(redis: aioredis.Redis, short_lease: None
                                                                     ) -> None:
    release = asyncio.Event()

    async def body(progress: bgtasks.Progress) -> str:
        await progress.update(total=1, message="working")
        await release.wait()
        await progress.update(increment=1, message="late")
        return "finished late"

    alive = bgtasks.BackgroundTasks(redis, "i-alive")
    dead = bgtasks.BackgroundTasks(redis, "i-dead")
    try:
        kept = await alive.start(body, owner="AK", name="kept")
        lost = await dead.start(body, owner="AK", name="lost", if_lost="The work may still finish elsewhere.")
        pubsub = redis.pubsub()
        await pubsub.subscribe(bgtasks.CHANNEL)
        # "dead" stops renewing, as a killed manager would (its task is left running, unheard of).
        assert dead._renewer is not None
        dead._renewer.cancel()
        state = await _until_state(redis, lost, "failed")
        assert state.message == ("The task was lost: the manager running it (i-dead) stopped before the task "
                                 "ended. The work may still finish elsewhere.")
        assert state.owner == "AK"
        async with asyncio.timeout(5):
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message is not None and json.loads(message["data"]) == {**state.payload()}:
                    break
        await pubsub.aclose()
        # Over three leases (a window: asserting that something does not happen), the task of the
        # manager that renews its lease stays running.
        loop = asyncio.get_running_loop()
        watch_until = loop.time() + 3 * bgtasks.LEASE_TTL
        while loop.time() < watch_until:
            still = await bgtasks.read_state(redis, kept)
            assert still is not None and still.status == "started" and still.message == "working"
            await asyncio.sleep(0.05)

        # Both bodies end now: the kept task is done; the lost one's late writes change nothing.
        release.set()
        assert (await _until_state(redis, kept, "done")).message == "finished late"
        await asyncio.wait_for(asyncio.gather(*dead._running.values(), return_exceptions=True), 5)
        after = await bgtasks.read_state(redis, lost)
        assert after == state
    finally:
        release.set()
        await alive.close()
        await dead.close()


async def test_a_closing_manager_cancels_its_tasks_and_drops_its_lease(redis: aioredis.Redis) -> None:
    tasks = bgtasks.BackgroundTasks(redis, "i-closing")

    async def body(progress: bgtasks.Progress) -> str:
        await asyncio.Event().wait()
        return ""

    task_id = await tasks.start(body, owner="AK", name="stopped")
    raw = await redis.hget(bgtasks.state_key(task_id), "lease")
    lease = raw.decode() if isinstance(raw, bytes) else str(raw)
    assert await redis.exists(lease)
    await tasks.close()
    state = await bgtasks.read_state(redis, task_id)
    assert state is not None and (state.status, state.message) == ("cancelled", "the manager stopped the task")
    assert not await redis.exists(lease)


async def test_a_client_that_vanishes_leaves_no_subscription(make_client: Any, manager_db: ManagerDB) -> None:
    api = await make_client(bgtask.routes)
    ctx = api.client.app[CTX]
    redis = ctx.redis_stream
    release = asyncio.Event()

    async def body(progress: bgtasks.Progress) -> str:
        await release.wait()
        return "done"

    async def subscribers() -> int:
        counts = dict(await redis.pubsub_numsub(bgtasks.CHANNEL))
        return int(counts.get(bgtasks.CHANNEL.encode()) or counts.get(bgtasks.CHANNEL) or 0)

    baseline = await subscribers()
    task_id = await bgtasks.of(ctx).start(body, owner=manager_db.admin.access_key, name="followed")
    try:
        path = f"/events/background-task?task_id={task_id}"
        admin = manager_db.admin
        signed = sign_request(admin.access_key, admin.secret_key, "GET", path, api.host, "text/plain")
        headers = {"Host": api.host, "Content-Type": "text/plain", "X-BackendAI-Version": API_VERSION,
                   "Date": signed.date, "Authorization": signed.authorization}
        async with api.client.get(path, headers=headers) as resp:
            assert resp.status == 200
            assert (await resp.content.readline()).startswith(b"event: bgtask_updated")
            assert await subscribers() == baseline + 1
            assert resp.connection is not None and resp.connection.transport is not None
            resp.connection.transport.abort()  # the client vanishes mid-stream, the task still runs
        # The stream notices at its next write (a ping at the latest): the subscription goes.
        async with asyncio.timeout(3 * 5.0):
            while True:
                if await subscribers() == baseline:
                    break
                await asyncio.sleep(0.1)
    finally:
        release.set()
    state = await _until_state(redis, task_id, "done")
    assert state.message == "done"
