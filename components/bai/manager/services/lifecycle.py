"""Reactions to agent events: heartbeats, kernel start/cancel/termination, lost agents."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis

from bai.common.agent_rpc import AgentError
from bai.common.events import BROADCAST_CHANNEL, Event, EventConsumer
from bai.common.tasks import raise_if_cancelling
from bai.common.types import KernelStatus, SessionStatus
from bai.manager.store import agents as agent_store
from bai.manager.store import images as image_store
from bai.manager.store import sessions as store

from .context import ManagerContext
from .sessions import SessionService

log = logging.getLogger(__name__)

SETTLED_EVENTS = {"session_started": "RUNNING", "session_cancelled": "CANCELLED",
                  "session_terminated": "TERMINATED"}


class LifecycleHandler:
    def __init__(self, ctx: ManagerContext, sessions: SessionService) -> None:
        self.ctx = ctx
        self.sessions = sessions

    async def handle(self, ev: Event) -> None:
        handler = getattr(self, f"on_{ev.name}", None)
        if handler is not None:
            await handler(ev)

    async def on_agent_heartbeat(self, ev: Event) -> None:
        info = ev.args
        async with self.ctx.db.begin() as conn:
            revived = await agent_store.upsert_heartbeat(conn, ev.source, info)
            await image_store.upsert_local_images(conn, info.get("architecture") or "x86_64",
                                                  info.get("images") or [])
        if revived:
            log.info("agent %s is alive at %s", ev.source, info.get("addr"))
            self.ctx.request_schedule()

    async def on_agent_terminated(self, ev: Event) -> None:
        async with self.ctx.db.begin() as conn:
            await agent_store.mark_terminated(conn, ev.source)

    async def on_kernel_started(self, ev: Event) -> None:
        kernel_id = uuid.UUID(ev.args["kernel_id"])
        session_id = uuid.UUID(ev.args["session_id"])
        info = ev.args.get("creation_info") or {}
        async with self.ctx.db.begin() as conn:
            kernels = {k.id: k for k in await store.kernels_of(conn, session_id)}
            k = kernels.get(kernel_id)
            if k is None:
                return
            changed = await store.set_kernel_status(
                conn, kernel_id, KernelStatus.RUNNING, only_from=["SCHEDULED", "PREPARING", "PULLING"],
                container_id=info.get("container_id"), kernel_host=info.get("kernel_host"),
                service_ports=info.get("service_ports") or [], occupied_slots=k.requested_slots,
            )
            if not changed:
                return
            others_running = all(o.status == "RUNNING" for oid, o in kernels.items() if oid != kernel_id)
            started = False
            if others_running:
                sess = await store.get(conn, session_id)
                started = await store.set_session_status(
                    conn, session_id, SessionStatus.RUNNING, only_from=["SCHEDULED", "PREPARING", "PULLING"],
                    info="")
                if started and sess is not None:
                    await conn.execute(store.t.sessions.update().where(store.t.sessions.c.id == session_id)
                                       .values(occupying_slots=sess.requested_slots))
        # kernel_started before session_started, as the original sends them; both before the
        # creator is woken, so a client that acts on the answer never overtakes them.
        try:
            await self.sessions.broadcast_kernel("kernel_started", k, "")
            if started:
                async with self.ctx.db.connect() as conn:
                    row = await store.get(conn, session_id)
                await self.ctx.events.broadcast("session_started", self.ctx.manager_id,
                                                **SessionService._event_args(row))
        finally:
            if started:
                self.ctx.waiters.notify(session_id, "RUNNING")

    async def on_kernel_cancelled(self, ev: Event) -> None:
        # cancel() announces kernel_cancelled for each kernel it moves, then session_cancelled
        session_id = uuid.UUID(ev.args["session_id"])
        reason = ev.args.get("reason") or "failed-to-create"
        await self.sessions.cancel(session_id, reason, {"error": {"src": "agent", "repr": ev.args.get("error")}})

    async def on_kernel_terminated(self, ev: Event) -> None:
        kernel_id = uuid.UUID(ev.args["kernel_id"])
        session_id = uuid.UUID(ev.args["session_id"])
        reason = ev.args.get("reason") or "unknown"
        exit_code = ev.args.get("exit_code")
        async with self.ctx.db.begin() as conn:
            sess = await store.get(conn, session_id)
            if sess is None or sess.status in ("TERMINATED", "CANCELLED"):
                return
            moved = None
            if sess.status == "TERMINATING":
                expected = True
            else:
                expected = False
                if await store.set_kernel_status(conn, kernel_id, KernelStatus.TERMINATED, info=reason,
                                                 status_data={"exit_code": exit_code}):
                    moved = next((k for k in await store.kernels_of(conn, session_id) if k.id == kernel_id), None)
                await store.set_session_status(conn, session_id, SessionStatus.TERMINATING, info=reason)
                await conn.execute(store.t.sessions.update().where(store.t.sessions.c.id == session_id).values(
                    status_data={"kernel": {"id": str(kernel_id), "exit_code": exit_code, "reason": reason}},
                    result="FAILURE" if exit_code not in (0, None) else "SUCCESS"))
        if moved is not None:
            await self.sessions.broadcast_kernel("kernel_terminated", moved, reason,
                                                 -1 if exit_code is None else exit_code)
        if not expected:
            log.info("kernel %s of session %s terminated by itself (%s, exit %s)",
                     kernel_id, session_id, reason, exit_code)
            # destroy the siblings (if any) and close the session with the kernel's reason
            async with self.ctx.db.connect() as conn:
                siblings = [k for k in await store.kernels_of(conn, session_id)
                            if k.id != kernel_id and k.status not in ("TERMINATED", "CANCELLED")]
            for k in siblings:
                try:
                    await self.sessions._destroy_kernel(k, reason)
                except Exception:
                    log.exception("destroying sibling kernel %s failed", k.id)
        # In the expected case (a destroy in progress) whoever closes the session announces this
        # kernel's kernel_terminated, with the exit code the agent reported if it is us.
        await self.sessions.finish_termination(session_id, reason, {kernel_id: exit_code})


async def consume_events(ctx: ManagerContext, handler: LifecycleHandler) -> None:
    consumer = EventConsumer(ctx.redis_stream, ctx.manager_id)
    await consumer.ensure_group()
    # redis-py may turn a cancellation that lands in a blocking read into a ConnectionError,
    # swallowing it; the stop flag (set before the cancel) ends the loop regardless.
    while not ctx.stopping.is_set():
        try:
            events = await consumer.read(block_ms=1000)
        except (aioredis.ConnectionError, OSError) as exc:
            if ctx.stopping.is_set():
                return
            raise_if_cancelling()
            log.warning("event stream read failed: %r", exc)
            await asyncio.sleep(1)
            continue
        for ev in events:
            try:
                await handler.handle(ev)
            except Exception:
                log.exception("handling %s from %s failed", ev.name, ev.source)
            await consumer.ack(ev)


async def relay_broadcasts(ctx: ManagerContext) -> None:
    """Wake local waiters for session changes handled by any manager."""
    pubsub = ctx.redis_stream.pubsub()
    await pubsub.subscribe(BROADCAST_CHANNEL)
    try:
        async for msg in pubsub.listen():
            if msg.get("type") != "message":
                continue
            try:
                payload: dict[str, Any] = json.loads(msg["data"])
            except (TypeError, ValueError):
                continue
            status = SETTLED_EVENTS.get(payload.get("name", ""))
            sid = payload.get("args", {}).get("sessionId")
            if status and sid:
                ctx.waiters.notify(uuid.UUID(sid), status)
    finally:
        await pubsub.aclose()


async def watch_lost_agents(ctx: ManagerContext, interval: float = 2.0) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            async with ctx.db.begin() as conn:
                lost = await agent_store.mark_lost(conn, ctx.config.manager.heartbeat_timeout)
            for agent_id in lost:
                log.warning("agent %s is LOST (no heartbeat for %.0f s)", agent_id,
                            ctx.config.manager.heartbeat_timeout)
        except Exception:
            raise_if_cancelling()
            log.exception("lost-agent check failed")


async def sync_with_agents(ctx: ManagerContext, handler: LifecycleHandler, grace: float = 10.0) -> int:
    """Close sessions whose RUNNING kernels their agent no longer has (a container removed while
    the agent was down, an agent restarted with a wiped state, ...). Kernels younger than
    ``grace`` seconds are left alone so a start in flight is never mistaken for a loss.
    Returns how many kernels were found missing."""
    cutoff = datetime.now(UTC) - timedelta(seconds=grace)
    async with ctx.db.connect() as conn:
        by_agent = await store.settled_kernels_by_agent(conn, cutoff)
    missing = 0
    for agent_id, kernels in by_agent.items():
        try:
            known = {k["kernel_id"] for k in await ctx.agents.get(kernels[0].addr).list_kernels()}
        except AgentError as exc:
            log.warning("cannot list kernels of agent %s: %s", agent_id, exc)
            continue
        for k in kernels:
            if str(k.id) in known:
                continue
            missing += 1
            log.warning("kernel %s of session %s is gone from agent %s", k.id, k.session_id, agent_id)
            await handler.on_kernel_terminated(Event("kernel_terminated", agent_id, {
                "kernel_id": str(k.id), "session_id": str(k.session_id),
                "reason": "container-not-found", "exit_code": None}))
    return missing


async def keep_in_sync_with_agents(ctx: ManagerContext, handler: LifecycleHandler, interval: float = 30.0) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await sync_with_agents(ctx, handler)
        except Exception:
            raise_if_cancelling()
            log.exception("agent sync failed")

