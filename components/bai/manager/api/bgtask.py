"""GET /events/background-task: a background task's progress as Server-Sent Events, as the
original sends them (what ``backend.ai admin image rescan`` follows).

Records are ``event: bgtask_updated`` (``{"task_id", "message", "current_progress",
"total_progress"}``, with ``retry: 5``), then one of ``bgtask_done`` / ``bgtask_failed`` /
``bgtask_cancelled`` (``{"task_id", "message"}``) and ``server_close`` (``{}``); a task that has
already ended answers its final record and ``server_close`` at once. Only the keypair that
started the task, and superadmins, may follow it; for anyone else it does not exist (404).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any

from aiohttp import web
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from bai.manager import errors
from bai.manager.services import bgtasks

from . import routing
from .keys import CTX, requester
from .middlewares import auth_required
from .routing import Answer

log = logging.getLogger(__name__)

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
               "Connection": "keep-alive", "X-Accel-Buffering": "no"}
#: Seconds between re-reads of the task's state while nothing is published (a missed message,
#: or a manager that died with the task, must not leave the stream hanging) and ping comments.
POLL_INTERVAL = 5.0
#: Seconds between two progress records of one stream (see _follow).
UPDATE_INTERVAL = 0.25


class BackgroundTaskQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    task_id: uuid.UUID = Field(validation_alias=AliasChoices("task_id", "taskId"),
                               description="The id a mutation such as rescan_images answered.")


def _record(state: bgtasks.TaskState) -> bytes:
    data = json.dumps({"task_id": str(state.task_id), "message": state.message,
                       "current_progress": state.current_progress, "total_progress": state.total_progress})
    if state.finished:
        return f"event: {state.event}\ndata: {data}\n\nevent: server_close\ndata: {{}}\n\n".encode()
    return f"event: bgtask_updated\ndata: {data}\nretry: 5\n\n".encode()


def _state_of(payload: dict[str, Any], owner: str) -> bgtasks.TaskState:
    status = {"bgtask_done": "done", "bgtask_failed": "failed", "bgtask_cancelled": "cancelled"}
    return bgtasks.TaskState(uuid.UUID(payload["task_id"]), status.get(payload.get("event", ""), "started"),
                             str(payload.get("message") or ""), int(payload.get("current_progress") or 0),
                             int(payload.get("total_progress") or 0), owner)


@auth_required()
async def push_background_task_events(request: web.Request) -> web.StreamResponse:
    who = requester(request)
    q = routing.query(request, BackgroundTaskQuery)
    ctx = request.app[CTX]
    redis = ctx.redis_stream
    pubsub = redis.pubsub()
    await pubsub.subscribe(bgtasks.CHANNEL)  # before reading the state: no update falls between
    try:
        state = await bgtasks.read_state(redis, q.task_id)
        if state is None or (state.owner != who.access_key and who.role != "superadmin"):
            raise errors.ObjectNotFound("No such background task.")
        resp = web.StreamResponse(headers=SSE_HEADERS)
        await resp.prepare(request)
        try:
            await _follow(resp, pubsub, redis, state, ctx.config.manager.stream_send_timeout)
        except (ConnectionError, TimeoutError):
            pass  # the client went away or stopped reading
        return resp
    finally:
        with contextlib.suppress(Exception):
            await pubsub.aclose()


async def _follow(resp: web.StreamResponse, pubsub: Any, redis: Any, state: bgtasks.TaskState,
                  send_timeout: float) -> None:
    """Write the task's records until it ends. Progress is coalesced: the newest update at most
    every UPDATE_INTERVAL, the first one UPDATE_INTERVAL after the stream opened (a client that
    sets up its progress display after the headers, as the official CLI does, is ready by then);
    the final record goes at once, after the newest update not sent yet (a quick task's last
    message, e.g. the image a session was saved as, would be lost to the client otherwise)."""
    loop = asyncio.get_running_loop()

    async def write(data: bytes) -> None:
        async with asyncio.timeout(send_timeout):
            await resp.write(data)

    if state.finished:
        await write(_record(state))
        return
    pending: bgtasks.TaskState | None = state
    next_update = loop.time() + UPDATE_INTERVAL
    last_write = loop.time()
    while True:
        wait = max(0.0, next_update - loop.time()) if pending is not None else POLL_INTERVAL
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
        if message is not None:
            payload = json.loads(message["data"])
            if payload.get("task_id") != str(state.task_id):
                continue
            state = _state_of(payload, state.owner)
            if state.finished:
                if pending is not None:
                    await write(_record(pending))
                await write(_record(state))
                return
            pending = state
        elif pending is None:
            # Nothing published for a while: re-read the state (a missed message, or the manager
            # running the task died), and keep the connection alive.
            fresh = await bgtasks.read_state(redis, state.task_id)
            if fresh is None:
                fresh = bgtasks.TaskState(state.task_id, "failed", "the task's state expired", 0, 0, "")
            if fresh.finished:
                await write(_record(fresh))
                return
            if fresh != state:
                state = pending = fresh
            elif loop.time() - last_write >= POLL_INTERVAL:
                await write(b": ping\n\n")
                last_write = loop.time()
        if pending is not None and loop.time() >= next_update:
            await write(_record(pending))
            pending, last_write, next_update = None, loop.time(), loop.time() + UPDATE_INTERVAL


async def _stop_tasks(app: web.Application) -> None:
    if CTX in app:
        await bgtasks.close(app[CTX])


def routes(app: web.Application) -> None:
    app.on_shutdown.append(_stop_tasks)
    routing.add(
        app, "GET", "/events/background-task", push_background_task_events, operation_id="background_task_events",
        tag="events", summary="A background task's progress as Server-Sent Events.", query=BackgroundTaskQuery,
        description="`bgtask_updated` records, then `bgtask_done`/`bgtask_failed`/`bgtask_cancelled` and "
                    "`server_close`.",
        answers=(Answer(200, "The event stream.", media_type="text/event-stream"),),
        problems=(errors.ObjectNotFound,))
