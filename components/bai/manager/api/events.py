"""/events/session: session and kernel lifecycle events as Server-Sent Events.

Every manager broadcasts the lifecycle changes it makes on the Redis pub/sub channel
``BROADCAST_CHANNEL``. One subscription per manager process (the :class:`EventHub`) fans each
message out to a bounded queue per open stream; each stream's handler filters what its client
may and wants to see and writes ``event: NAME`` / ``data: JSON`` records, with a ``: ping``
comment every ``PING_INTERVAL`` seconds. A stream ends when its client goes away, when it falls
``QUEUE_SIZE`` events behind, when its client takes no data for ``stream-send-timeout`` seconds,
or when the manager shuts down (``on_shutdown`` ends them all). So a slow consumer costs at most
``QUEUE_SIZE`` events of memory and is then disconnected.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import redis.asyncio as aioredis
from aiohttp import web
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from bai.common.events import BROADCAST_CHANNEL
from bai.manager import errors
from bai.manager.services.sessions.visibility import OwnersCache, may_see, project_ids
from bai.manager.store.keypairs import Requester

from . import routing
from .keys import CTX, requester
from .middlewares import auth_required
from .routing import Answer

log = logging.getLogger(__name__)

#: Seconds between ``: ping`` keep-alive comments (tests shorten it).
PING_INTERVAL = 15.0
#: How often an idle stream checks whether its client is still connected.
DISCONNECT_CHECK_INTERVAL = 1.0
#: Events a stream may fall behind before it is closed (a client that stopped reading).
QUEUE_SIZE = 1024

#: What the original forwards to SSE clients (``session_preparing`` is internal there).
SESSION_EVENTS = frozenset({
    "session_enqueued", "session_scheduled", "session_started", "session_cancelled",
    "session_terminating", "session_terminated", "session_success", "session_failure",
})
KERNEL_EVENTS = frozenset({
    "kernel_preparing", "kernel_pulling", "kernel_creating", "kernel_started", "kernel_cancelled",
    "kernel_terminating", "kernel_terminated",
})
SCOPES = ("*", "session", "kernel")
SESSION_KEYS = ("reason", "sessionName", "ownerAccessKey", "sessionId", "exitCode")
KERNEL_KEYS = ("kernelId", "clusterRole", "clusterIdx")
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
               "Connection": "keep-alive", "X-Accel-Buffering": "no"}

Payload = dict[str, Any]


class EventHub:
    """The manager's one subscription to the broadcast channel, fanned out to open streams."""

    def __init__(self, redis: aioredis.Redis, owners: OwnersCache) -> None:
        self._redis = redis
        #: Whose each session is, for deciding which stream may see its events.
        self.owners = owners
        self._streams: set[asyncio.Queue[Payload | None]] = set()
        self._closed = False
        self.subscribed = asyncio.Event()
        #: Stream handlers still running (a cut-off stream's handler ends once its write gives up).
        self.serving = 0

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def backlog(self) -> int:
        """Events waiting in the fullest stream queue (at most ``QUEUE_SIZE``)."""
        return max((queue.qsize() for queue in self._streams), default=0)

    def attach(self) -> asyncio.Queue[Payload | None]:
        if self._closed:
            raise errors.ServiceUnavailable("The manager is shutting down.")
        queue: asyncio.Queue[Payload | None] = asyncio.Queue(QUEUE_SIZE)
        self._streams.add(queue)
        return queue

    def detach(self, queue: asyncio.Queue[Payload | None]) -> None:
        self._streams.discard(queue)

    def close(self) -> None:
        """End every open stream (after what is already queued) and refuse new ones."""
        self._closed = True
        for queue in list(self._streams):
            self._end(queue)

    def _end(self, queue: asyncio.Queue[Payload | None]) -> None:
        self._streams.discard(queue)
        try:
            queue.put_nowait(None)
        except asyncio.QueueFull:
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(None)

    def dispatch(self, payload: Payload) -> None:
        for queue in list(self._streams):
            try:
                queue.put_nowait(payload)
            except asyncio.QueueFull:
                log.warning("closing an event stream that fell %d events behind", QUEUE_SIZE)
                self._end(queue)

    async def run(self) -> None:
        """Relay the channel until cancelled, subscribing again after a lost connection."""
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(BROADCAST_CHANNEL)
                async for msg in pubsub.listen():
                    if msg.get("type") == "subscribe":
                        self.subscribed.set()
                    elif msg.get("type") == "message":
                        try:
                            payload = json.loads(msg["data"])
                        except (TypeError, ValueError):
                            continue
                        if isinstance(payload, dict) and isinstance(payload.get("args"), dict):
                            self.dispatch(payload)
            except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
                log.warning("event broadcast subscription lost: %r", exc)
            finally:
                await pubsub.aclose()
            await asyncio.sleep(1.0)

EVENT_HUB = web.AppKey("event_hub", EventHub)


@dataclass(frozen=True)
class SessionFilter:
    """The query of one stream, with the caller's visibility."""

    who: Requester
    session_name: str
    access_key: str
    session_id: uuid.UUID | None
    group_ids: frozenset[uuid.UUID] | None
    scope: str

    def wants(self, name: str, args: Payload) -> bool:
        if name not in SESSION_EVENTS and name not in KERNEL_EVENTS:
            return False
        if self.scope != "*" and not name.startswith(self.scope + "_"):
            return False
        if self.session_id is not None:
            return str(args.get("sessionId")) == str(self.session_id)
        if self.session_name != "*":
            return args.get("sessionName") == self.session_name and args.get("ownerAccessKey") == self.access_key
        return True

    async def may_see(self, hub: EventHub, args: Payload) -> bool:
        return await may_see(hub.owners, self.who, self.group_ids, args.get("sessionId"), args.get("ownerAccessKey"))


NonEmpty = Annotated[str, Field(min_length=1)]


class EventsQuery(BaseModel):
    """The query string of ``GET /events/session``."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    name: NonEmpty = Field("*", validation_alias=AliasChoices("name", "sessionName"),
                           description="A session name, or * for all.")
    ownerAccessKey: NonEmpty | None = Field(None, description="Whose session `name` is (admins).")
    sessionId: uuid.UUID | None = None
    group: NonEmpty = Field("*", validation_alias=AliasChoices("group", "groupName"),
                            description="A project name, or * for all.")
    scope: Literal["*", "session", "kernel"] = "*"


async def _parse(request: web.Request, who: Requester) -> SessionFilter:
    q = routing.query(request, EventsQuery)
    access_key = q.ownerAccessKey or who.access_key
    if access_key != who.access_key and who.role not in ("admin", "superadmin"):
        raise errors.GenericForbidden()
    group_ids = None if q.group == "*" else await project_ids(request.app[CTX], who, q.group)
    return SessionFilter(who, q.name, access_key, q.sessionId, group_ids, q.scope)


def _record(name: str, args: Payload) -> bytes:
    data = {key: args.get(key) for key in SESSION_KEYS}
    if data["reason"] is None:
        data["reason"] = ""
    if name.startswith("kernel_"):
        data.update({key: args[key] for key in KERNEL_KEYS if args.get(key) is not None})
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


@auth_required()
async def push_session_events(request: web.Request) -> web.StreamResponse:
    who = requester(request)
    flt = await _parse(request, who)  # every 4xx before the stream starts
    hub = request.app[EVENT_HUB]
    queue = hub.attach()
    resp = web.StreamResponse(headers=SSE_HEADERS)
    send_timeout = request.app[CTX].config.manager.stream_send_timeout
    hub.serving += 1
    try:
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + PING_INTERVAL
        while not _gone(request):
            wait = max(0.0, min(next_ping - loop.time(), DISCONNECT_CHECK_INTERVAL))
            try:
                async with asyncio.timeout(wait):
                    item = await queue.get()
            except TimeoutError:
                if loop.time() >= next_ping:
                    async with asyncio.timeout(send_timeout):
                        await resp.write(b": ping\n\n")
                    next_ping = loop.time() + PING_INTERVAL
                continue
            if item is None:
                break
            name, args = str(item.get("name", "")), item["args"]
            if flt.wants(name, args) and await flt.may_see(hub, args):
                async with asyncio.timeout(send_timeout):
                    await resp.write(_record(name, args))
    except ConnectionError:
        pass  # the client went away while we wrote
    except TimeoutError:
        log.info("closing an event stream whose client took no data for %.0f s", send_timeout)
    finally:
        hub.serving -= 1
        hub.detach(queue)
    return resp


async def _hub_ctx(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CTX]
    hub = app[EVENT_HUB] = EventHub(ctx.redis_stream, OwnersCache(ctx))
    task = asyncio.create_task(hub.run(), name="sse-events")
    try:
        async with asyncio.timeout(10):
            await hub.subscribed.wait()
    except TimeoutError:
        log.warning("the SSE event hub is not subscribed yet; streams may miss early events")
    try:
        yield
    finally:
        hub.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _end_streams(app: web.Application) -> None:
    if EVENT_HUB in app:
        app[EVENT_HUB].close()


def routes(app: web.Application) -> None:
    """Mount /events; call after the resources context that sets ``app[CTX]`` is registered."""
    app.cleanup_ctx.append(_hub_ctx)
    app.on_shutdown.append(_end_streams)
    routing.add(
        app, "GET", "/events/session", push_session_events, operation_id="session_events", tag="events",
        summary="Session and kernel lifecycle events as Server-Sent Events.", query=EventsQuery,
        description=("`event: NAME` / `data: JSON` records and `: ping` comments, until the client leaves, "
                     "falls too far behind or stops reading, or the manager shuts down."),
        answers=(Answer(200, "The event stream.", media_type="text/event-stream"),),
        problems=(errors.GenericForbidden, errors.GroupNotFound, errors.ServiceUnavailable))
