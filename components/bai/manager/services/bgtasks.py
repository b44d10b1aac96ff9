"""Background tasks, as the original runs them (an image rescan, for now): the caller gets a task
id at once; the work runs in this manager process and reports progress.

A task's state lives in the Redis hash ``bgtask.<id>`` (kept 24 h after it ends, as the
original) so that any manager can answer ``GET /events/background-task``; each change is also
published on the pub/sub channel ``bai.bgtask-events`` as ``{"task_id", "event", "message",
"current_progress", "total_progress"}``, where ``event`` is ``bgtask_updated``, ``bgtask_done``,
``bgtask_failed`` or ``bgtask_cancelled``.

A task outlives no manager: each manager process holds a lease (the Redis key
``bgtask.lease.<random>``, :data:`LEASE_TTL` seconds, renewed every :data:`LEASE_RENEW` while it
runs tasks) that its tasks name. A reader that finds a task still ``started`` whose lease has
lapsed (its manager was killed, or lost Redis for that long) records it as failed, with a message
naming the manager and what the task's starter said may still happen (``if_lost``), so that
nobody waits on it forever. The first final state wins: a late write of the dead manager's task
(had it only stalled) changes nothing a client was told.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from bai.common.tasks import raise_if_cancelling, stop_tasks

from .context import ManagerContext

log = logging.getLogger(__name__)

CHANNEL = "bai.bgtask-events"
#: Seconds a manager's lease on its running tasks lasts without renewal, and how often it renews.
LEASE_TTL = 10.0
LEASE_RENEW = 2.0
#: Seconds a finished task's state stays readable.
RESULT_TTL = 24 * 3600
FINAL_EVENTS = frozenset({"bgtask_done", "bgtask_failed", "bgtask_cancelled"})
_STATUS_EVENT = {"started": "bgtask_updated", "done": "bgtask_done", "failed": "bgtask_failed",
                 "cancelled": "bgtask_cancelled"}


def state_key(task_id: uuid.UUID) -> str:
    return f"bgtask.{task_id}"


@dataclass(frozen=True)
class TaskState:
    task_id: uuid.UUID
    status: str  # started | done | failed | cancelled
    message: str
    current_progress: int
    total_progress: int
    owner: str  # the access key that started it

    @property
    def event(self) -> str:
        return _STATUS_EVENT.get(self.status, "bgtask_updated")

    @property
    def finished(self) -> bool:
        return self.event in FINAL_EVENTS

    def payload(self) -> dict[str, Any]:
        return {"task_id": str(self.task_id), "event": self.event, "message": self.message,
                "current_progress": self.current_progress, "total_progress": self.total_progress}


class Progress:
    """What a task body reports through: counts and a message, written and announced."""

    def __init__(self, tasks: BackgroundTasks, task_id: uuid.UUID) -> None:
        self._tasks = tasks
        self._id = task_id
        self.current = 0
        self.total = 0

    async def update(self, *, increment: int = 0, total: int | None = None, message: str = "") -> None:
        self.current += increment
        if total is not None:
            self.total = total
        await self._tasks._write(self._id, "started", message, self.current, self.total)


#: A task body: does the work, reports through Progress, returns its final message.
TaskBody = Callable[[Progress], Awaitable[str]]


class BackgroundTasks:
    """The background tasks of this manager process (one per ManagerContext: :func:`of`)."""

    def __init__(self, redis: aioredis.Redis, manager_id: str = "") -> None:
        self._redis = redis
        self._manager_id = manager_id
        # Per process, not per manager id: a manager restarted under the same id must not
        # revive the tasks its killed predecessor left behind.
        self._lease = f"bgtask.lease.{uuid.uuid4().hex}"
        self._renewer: asyncio.Task[None] | None = None
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}

    async def start(self, body: TaskBody, *, owner: str, name: str, if_lost: str = "") -> uuid.UUID:
        """Run ``body`` in the background; ``if_lost``: what the client should know should this
        manager die before the task ends (e.g. that the work may still complete elsewhere)."""
        task_id = uuid.uuid4()
        await self._renew()
        await self._redis.hset(state_key(task_id), mapping={
            "owner": owner, "name": name, "lease": self._lease, "manager": self._manager_id, "if_lost": if_lost})
        await self._write(task_id, "started", "", 0, 0)
        task = asyncio.create_task(self._run(task_id, body, name), name=f"bgtask-{name}-{task_id}")
        self._running[task_id] = task
        task.add_done_callback(lambda _t: self._running.pop(task_id, None))
        # Only now (no await since the task was added): a renewer that found no task and ended
        # meanwhile is replaced, so no running task is left without one.
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._keep_lease(), name="bgtask-lease")
        return task_id

    async def _renew(self) -> None:
        await self._redis.set(self._lease, self._manager_id or "1", px=int(LEASE_TTL * 1000))

    async def _keep_lease(self) -> None:
        """Renew the lease while tasks run (a renewal Redis refused is retried at the next turn)."""
        while True:
            await asyncio.sleep(LEASE_RENEW)
            if not self._running:
                self._renewer = None
                return
            try:
                await self._renew()
            except Exception as exc:
                raise_if_cancelling()
                log.warning("cannot renew the lease on this manager's background tasks: %s", exc)

    async def _run(self, task_id: uuid.UUID, body: TaskBody, name: str) -> None:
        progress = Progress(self, task_id)
        try:
            message = await body(progress)
            status = "done"
        except asyncio.CancelledError:
            await asyncio.shield(self._final(task_id, "cancelled", "the manager stopped the task", progress))
            raise
        except Exception as exc:
            raise_if_cancelling()
            log.warning("background task %s (%s) failed: %s", task_id, name, exc)
            message, status = str(exc) or type(exc).__name__, "failed"
        await self._final(task_id, status, message, progress)

    async def _final(self, task_id: uuid.UUID, status: str, message: str, progress: Progress) -> None:
        try:
            await self._write(task_id, status, message, progress.current, progress.total)
        except Exception:
            raise_if_cancelling()
            log.exception("cannot record the end of background task %s", task_id)

    async def _write(self, task_id: uuid.UUID, status: str, message: str, current: int, total: int) -> None:
        key = state_key(task_id)
        written = await self._redis.eval(  # type: ignore[misc]
            _WRITE_UNLESS_FINAL, 1, key, status, message, current, total, f"{time.time():.3f}", RESULT_TTL)
        if not written:
            log.warning("background task %s had been recorded as ended already; its %s is dropped", task_id, status)
            return
        owner = await self._redis.hget(key, "owner")
        state = TaskState(task_id, status, message, current, total, _s(owner))
        await self._redis.publish(CHANNEL, json.dumps(state.payload()))

    async def state(self, task_id: uuid.UUID) -> TaskState | None:
        return await read_state(self._redis, task_id)

    async def close(self) -> None:
        await stop_tasks(list(self._running.values()))
        if self._renewer is not None:
            await stop_tasks([self._renewer])
            self._renewer = None
        try:
            await self._redis.delete(self._lease)
        except Exception as exc:
            raise_if_cancelling()
            log.warning("cannot drop this manager's background task lease: %s", exc)


#: Write a task's state unless it has ended already (the first final state wins).
_WRITE_UNLESS_FINAL = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'done' or status == 'failed' or status == 'cancelled' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'message', ARGV[2], 'current', ARGV[3], 'total', ARGV[4],
           'updated_at', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 1
"""
#: Record a started task whose lease has lapsed as failed (nothing, if it ended or is alive).
_FAIL_IF_LOST = """
if redis.call('HGET', KEYS[1], 'status') ~= 'started' then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'failed', 'message', ARGV[1], 'updated_at', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


def lost_message(manager_id: str, if_lost: str) -> str:
    who = f"the manager running it ({manager_id})" if manager_id else "the manager running it"
    return f"The task was lost: {who} stopped before the task ended." + (f" {if_lost}" if if_lost else "")


async def read_state(redis: aioredis.Redis, task_id: uuid.UUID) -> TaskState | None:
    """The task's state; a task whose manager's lease lapsed is recorded as failed first."""
    raw = await redis.hgetall(state_key(task_id))
    if not raw:
        return None
    fields = {_s(k): _s(v) for k, v in raw.items()}
    lease = fields.get("lease")
    if fields.get("status") == "started" and lease and not await redis.exists(lease):
        message = lost_message(fields.get("manager", ""), fields.get("if_lost", ""))
        if await redis.eval(_FAIL_IF_LOST, 2, state_key(task_id), lease,  # type: ignore[misc]
                            message, f"{time.time():.3f}", RESULT_TTL):
            log.warning("background task %s (%s) lost with its manager %s", task_id, fields.get("name"),
                        fields.get("manager"))
            fields["status"], fields["message"] = "failed", message
            lost = _parse(task_id, fields)
            if lost is not None:
                await redis.publish(CHANNEL, json.dumps(lost.payload()))
        else:  # it ended (or renewed) meanwhile
            return await read_state(redis, task_id)
    return _parse(task_id, fields)


def _parse(task_id: uuid.UUID, fields: dict[str, str]) -> TaskState | None:
    try:
        return TaskState(task_id, fields.get("status", "started"), fields.get("message", ""),
                         int(fields.get("current") or 0), int(fields.get("total") or 0), fields.get("owner", ""))
    except ValueError:
        return None


def _s(value: Any) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def of(ctx: ManagerContext) -> BackgroundTasks:
    """This manager's background tasks (made on first use)."""
    tasks = ctx.extra.get("bgtasks")
    if not isinstance(tasks, BackgroundTasks):
        tasks = ctx.extra["bgtasks"] = BackgroundTasks(ctx.redis_stream, ctx.manager_id)
    return tasks


async def close(ctx: ManagerContext) -> None:
    """Stop this manager's running tasks (at shutdown); each records itself as cancelled."""
    tasks = ctx.extra.get("bgtasks")
    if isinstance(tasks, BackgroundTasks):
        await tasks.close()
