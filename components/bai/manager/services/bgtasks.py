"""Background tasks, as the original runs them (an image rescan, for now): the caller gets a task
id at once; the work runs in this manager process and reports progress.

A task's state lives in the Redis hash ``bgtask.<id>`` (kept 24 h after it ends, as the
original) so that any manager can answer ``GET /events/background-task``; each change is also
published on the pub/sub channel ``bai.bgtask-events`` as ``{"task_id", "event", "message",
"current_progress", "total_progress"}``, where ``event`` is ``bgtask_updated``, ``bgtask_done``,
``bgtask_failed`` or ``bgtask_cancelled``.
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

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}

    async def start(self, body: TaskBody, *, owner: str, name: str) -> uuid.UUID:
        task_id = uuid.uuid4()
        await self._redis.hset(state_key(task_id), mapping={"owner": owner, "name": name})
        await self._write(task_id, "started", "", 0, 0)
        task = asyncio.create_task(self._run(task_id, body, name), name=f"bgtask-{name}-{task_id}")
        self._running[task_id] = task
        task.add_done_callback(lambda _t: self._running.pop(task_id, None))
        return task_id

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
        fields: dict[Any, Any] = {"status": status, "message": message, "current": current, "total": total,
                  "updated_at": f"{time.time():.3f}"}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.expire(key, RESULT_TTL)
            await pipe.execute()
        owner = await self._redis.hget(key, "owner")
        state = TaskState(task_id, status, message, current, total, _s(owner))
        await self._redis.publish(CHANNEL, json.dumps(state.payload()))

    async def state(self, task_id: uuid.UUID) -> TaskState | None:
        return await read_state(self._redis, task_id)

    async def close(self) -> None:
        await stop_tasks(list(self._running.values()))


async def read_state(redis: aioredis.Redis, task_id: uuid.UUID) -> TaskState | None:
    raw = await redis.hgetall(state_key(task_id))
    if not raw:
        return None
    fields = {_s(k): _s(v) for k, v in raw.items()}
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
        tasks = ctx.extra["bgtasks"] = BackgroundTasks(ctx.redis_stream)
    return tasks


async def close(ctx: ManagerContext) -> None:
    """Stop this manager's running tasks (at shutdown); each records itself as cancelled."""
    tasks = ctx.extra.get("bgtasks")
    if isinstance(tasks, BackgroundTasks):
        await tasks.close()
