"""Reactions to agent events (heartbeats, kernel start/cancel/termination, lost agents), and the
loops that keep the manager's view true: event consumption, reconciliation with each agent, and
the sweep of sessions stuck half-way."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bai.common import kernel_logs
from bai.common import protocol as proto
from bai.common.agent_rpc import AgentError, KernelNotFound
from bai.common.events import BROADCAST_CHANNEL, Event, EventConsumer
from bai.common.tasks import raise_if_cancelling, stop_tasks
from bai.common.types import KernelStatus, SessionStatus
from bai.manager.store import agents as agent_store
from bai.manager.store import images as image_store
from bai.manager.store import sessions as store
from bai.manager.store.db import retry_transient

from .context import ManagerContext
from .sessions import batch, termination
from .sessions.payloads import broadcast_kernel, broadcast_session

log = logging.getLogger(__name__)

SETTLED_EVENTS = {"session_started": "RUNNING", "session_cancelled": "CANCELLED",
                  "session_terminated": "TERMINATED"}


class LifecycleHandler:
    def __init__(self, ctx: ManagerContext) -> None:
        self.ctx = ctx
        self._reconciling: dict[str, asyncio.Task[None]] = {}
        #: The protocol version this manager speaks, and the agents it refused (logged once each).
        self.protocol = proto.advertised()
        self._refused: dict[str, str] = {}

    async def handle(self, ev: Event) -> None:
        handler = getattr(self, f"on_{ev.name}", None)
        if handler is not None:
            await handler(ev)

    async def on_agent_heartbeat(self, ev: Event) -> None:
        # Only verified events reach here (see EventConsumer), so the address is the agent's own.
        info = ev.args
        if ev.ts and time.time() - ev.ts > self.ctx.config.manager.heartbeat_timeout:
            return  # a backlog of old heartbeats says nothing about the agent now
        if not isinstance(info.get("addr"), str) or not info["addr"]:
            log.warning("heartbeat of agent %s has no address; ignored", ev.source)
            return
        announced = info.get(proto.HEARTBEAT_FIELD)
        peer = proto.peer_version(announced)
        refusal = proto.incompatibility(self.protocol, peer)
        if refusal is not None:
            await self._refuse_agent(ev.source, info, str(announced or proto.UNVERSIONED), refusal)
            return
        if self._refused.pop(ev.source, None) is not None:
            log.info("agent %s now speaks protocol %s: accepted", ev.source, peer)
        self.ctx.agents.get(info["addr"]).note_peer_protocol(announced)
        async with self.ctx.db.begin() as conn:
            revived = await agent_store.upsert_heartbeat(conn, ev.source, info, protocol=str(peer))
            arch, images = info.get("architecture") or "x86_64", info.get("images") or []
            await image_store.upsert_local_images(conn, arch, images)
            await image_store.note_installed(conn, ev.source, arch,
                                             [str(i["canonical"]) for i in images if i.get("canonical")],
                                             settle_seconds=self.ctx.config.manager.heartbeat_timeout)
        if revived:
            log.info("agent %s is alive at %s", ev.source, info.get("addr"))
            self.ctx.request_schedule()
        if revived or self.ctx.agents.needs_reconciliation(info["addr"]):
            # It was away: what we asked of it meanwhile (a destroy) may not have happened, and it
            # may have re-adopted containers. Reconcile now rather than at the next periodic sync.
            self.reconcile_soon(ev.source, info["addr"])

    async def _refuse_agent(self, agent_id: str, info: dict[str, Any], announced: str, reason: str) -> None:
        """Record the agent as INCOMPATIBLE (never scheduled onto, not reconciled), with what it
        announced, so that ``admin agent info`` shows why; logged once per agent and reason."""
        if self._refused.get(agent_id) != reason:
            self._refused[agent_id] = reason
            log.warning("agent %s at %s refused: %s (this manager speaks protocol %s)",
                        agent_id, info.get("addr"), reason, self.protocol)
        async with self.ctx.db.begin() as conn:
            await agent_store.upsert_heartbeat(conn, agent_id, info, protocol=announced[:16],
                                               status=agent_store.INCOMPATIBLE)

    def reconcile_soon(self, agent_id: str, addr: str) -> None:
        if agent_id in self._reconciling:
            return
        task = asyncio.create_task(self._reconcile(agent_id, addr), name=f"reconcile-{agent_id}")
        self._reconciling[agent_id] = task
        task.add_done_callback(lambda _t: self._reconciling.pop(agent_id, None))

    async def _reconcile(self, agent_id: str, addr: str) -> None:
        try:
            await reconcile_agent(self.ctx, self, agent_id, addr)
        except Exception:
            raise_if_cancelling()
            log.exception("reconciliation with agent %s failed", agent_id)

    async def stop(self) -> None:
        await stop_tasks(list(self._reconciling.values()))

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
                if k.status in (KernelStatus.CANCELLED.value, KernelStatus.TERMINATED.value):
                    # Its session ended (a sibling failed, a destroy) while it was starting.
                    late_start = k
                else:
                    return
            else:
                late_start = None
            others_running = late_start is None and all(o.status == "RUNNING" for oid, o in kernels.items() if oid != kernel_id)
            started = False
            if others_running:
                sess = await store.get(conn, session_id)
                started = await store.set_session_status(
                    conn, session_id, SessionStatus.RUNNING, only_from=["SCHEDULED", "PREPARING", "PULLING"],
                    info="")
                if started and sess is not None:
                    await store.set_occupying_slots(conn, session_id, sess.requested_slots)
        if late_start is not None:
            try:
                await termination.destroy_kernel(self.ctx, late_start, late_start.status_info or "already-terminated")
            except (AgentError, OSError, TimeoutError) as exc:  # the periodic reconciliation retries
                log.warning("removing late-started kernel %s: %r", kernel_id, exc)
            return
        # kernel_started before session_started, as the original sends them; both before the
        # creator is woken, so a client that acts on the answer never overtakes them.
        try:
            await broadcast_kernel(self.ctx, "kernel_started", k, "")
            if started:
                async with self.ctx.db.connect() as conn:
                    row = await store.get(conn, session_id)
                await broadcast_session(self.ctx, "session_started", row)
        finally:
            if started:
                self.ctx.waiters.notify(session_id, "RUNNING")

    async def on_kernel_pulling(self, ev: Event) -> None:
        """The agent is pulling the kernel's image: the kernel and its session go PULLING, with
        status_info ``pulling`` (then ``pulling N%`` from kernel_pull_progress)."""
        kernel_id = uuid.UUID(ev.args["kernel_id"])
        session_id = uuid.UUID(ev.args["session_id"])
        async with self.ctx.db.begin() as conn:
            if not await store.set_kernel_status(conn, kernel_id, KernelStatus.PULLING, only_from=["PREPARING"],
                                                 info="pulling"):
                return
            await store.set_session_status(conn, session_id, SessionStatus.PULLING, only_from=["PREPARING"],
                                           info="pulling")
            k = next((k for k in await store.kernels_of(conn, session_id) if k.id == kernel_id), None)
        if k is not None:
            await broadcast_kernel(self.ctx, "kernel_pulling", k, "")

    async def on_kernel_pull_progress(self, ev: Event) -> None:
        """``pulling N%`` (bytes done of the layers' total) in the kernel's and session's status_info."""
        kernel_id = uuid.UUID(ev.args["kernel_id"])
        session_id = uuid.UUID(ev.args["session_id"])
        done, total = int(ev.args.get("current_progress") or 0), int(ev.args.get("total_progress") or 0)
        info = f"pulling {min(100, done * 100 // total)}%" if total > 0 else "pulling"
        async with self.ctx.db.begin() as conn:
            await store.note_kernel_condition(conn, session_id, kernel_id, info)

    async def on_kernel_oom(self, ev: Event) -> None:
        """The OOM killer struck in a kernel's container: say so in the kernel's and the
        session's status info (the session stays RUNNING while its runner lives; if the runner
        died too, kernel_terminated follows and closes the session as usual)."""
        kernel_id = uuid.UUID(ev.args["kernel_id"])
        session_id = uuid.UUID(ev.args["session_id"])
        async with self.ctx.db.begin() as conn:
            noted = await store.note_kernel_condition(conn, session_id, kernel_id, "oom-killed")
        if noted:
            log.warning("kernel %s of session %s: user code was OOM-killed", kernel_id, session_id)

    async def on_kernel_cancelled(self, ev: Event) -> None:
        # cancel() announces kernel_cancelled for each kernel it moves, then session_cancelled
        session_id = uuid.UUID(ev.args["session_id"])
        reason = ev.args.get("reason") or "failed-to-create"
        # a session starts whole or not at all: its other kernels go too, wherever they got to
        await termination.cancel_whole(self.ctx, session_id, reason,
                                       {"error": {"src": "agent", "repr": ev.args.get("error")}},
                                       failed_kernel=ev.args.get("kernel_id"))

    async def on_session_success(self, ev: Event) -> None:
        """A batch session's startup command exited with 0: result SUCCESS, and it ends."""
        await batch.finish_batch(self.ctx, uuid.UUID(ev.args["session_id"]), 0)

    async def on_session_failure(self, ev: Event) -> None:
        """A batch session's startup command failed: result FAILURE, and it ends."""
        code = ev.args.get("exit_code")
        exit_code = code if isinstance(code, int) and not isinstance(code, bool) and code != 0 else 1
        await batch.finish_batch(self.ctx, uuid.UUID(ev.args["session_id"]), exit_code)

    async def on_kernel_terminated(self, ev: Event) -> None:
        kernel_id = uuid.UUID(ev.args["kernel_id"])
        session_id = uuid.UUID(ev.args["session_id"])
        reason = ev.args.get("reason") or "unknown"
        exit_code = ev.args.get("exit_code")
        log_digest = ev.args.get("log_digest")
        if isinstance(log_digest, str):
            # Kept whatever state the rows are in: the container is gone, this is all that is left.
            container_log = await kernel_logs.read(self.ctx.redis_stream, str(kernel_id), log_digest)
            if container_log is not None:
                async with self.ctx.db.begin() as conn:
                    await store.save_container_log(conn, kernel_id, container_log.replace("\x00", ""))
            await kernel_logs.discard(self.ctx.redis_stream, str(kernel_id))
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
                await store.note_kernel_exit(conn, session_id, kernel_id, exit_code, reason)
        if moved is not None:
            await broadcast_kernel(self.ctx, "kernel_terminated", moved, reason,
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
                    await termination.destroy_kernel(self.ctx, k, reason)
                except Exception:
                    log.exception("destroying sibling kernel %s failed", k.id)
        # In the expected case (a destroy in progress) whoever closes the session announces this
        # kernel's kernel_terminated, with the exit code the agent reported if it is us.
        await termination.finish_termination(self.ctx, session_id, reason, {kernel_id: exit_code})


async def consume_events(ctx: ManagerContext, handler: LifecycleHandler,
                         consumer: EventConsumer | None = None) -> None:
    """Handle the agents' events until the manager stops, whatever happens to Redis, PostgreSQL
    or an entry: reading errors are waited out, a lost group is recreated (by the consumer),
    transient handler errors are retried, and an event that still fails is set aside on the
    dead-letter stream, never dropped silently nor left to block the others."""
    cfg = ctx.config.manager
    consumer = consumer or EventConsumer(
        ctx.redis_stream, ctx.manager_id, verify_key=ctx.events.signing_key,
        claim_min_idle_ms=int(cfg.event_claim_min_idle * 1000))
    loop = asyncio.get_running_loop()
    next_claim = loop.time()
    # redis-py may turn a cancellation that lands in a blocking read into a ConnectionError,
    # swallowing it; the stop flag (set before the cancel) ends the loop regardless.
    while not ctx.stopping.is_set():
        try:
            events: list[Event] = []
            if loop.time() >= next_claim:
                events = await consumer.claim_stale()
                next_claim = loop.time() + (0 if events else cfg.event_claim_min_idle / 2)
            if not events:
                events = await consumer.read(block_ms=1000)
        except Exception as exc:
            if ctx.stopping.is_set():
                return
            raise_if_cancelling()
            log.warning("event stream read failed: %r", exc)
            await asyncio.sleep(1)
            continue
        for ev in events:
            await _handle_one(ctx, handler, consumer, ev)


async def _handle_one(ctx: ManagerContext, handler: LifecycleHandler, consumer: EventConsumer, ev: Event) -> None:
    try:
        await retry_transient(lambda: handler.handle(ev), attempts=ctx.config.manager.event_retries,
                              what=f"handling {ev.name} from {ev.source}")
    except Exception as exc:
        raise_if_cancelling()
        log.exception("handling %s (%s) from %s failed; set aside on the dead-letter stream",
                      ev.name, ev.id, ev.source)
        try:
            await consumer.dead_letter_event(ev, repr(exc))
        except Exception:
            raise_if_cancelling()
            log.warning("cannot dead-letter event %s; it stays pending and will be re-claimed", ev.id)
        return
    try:
        await consumer.ack(ev)
    except Exception:
        raise_if_cancelling()
        # Handlers are idempotent (guarded status moves): handling it again on re-claim is fine.
        log.warning("cannot acknowledge event %s; it stays pending and will be re-claimed", ev.id)


async def relay_broadcasts(ctx: ManagerContext) -> None:
    """Wake local waiters for session changes handled by any manager; subscribe again after a
    lost connection."""
    while not ctx.stopping.is_set():
        pubsub = ctx.redis_stream.pubsub()
        try:
            await pubsub.subscribe(BROADCAST_CHANNEL)
            async for msg in pubsub.listen():
                if msg.get("type") != "message":
                    continue
                try:
                    payload: dict[str, Any] = json.loads(msg["data"])
                    status = SETTLED_EVENTS.get(payload.get("name", ""))
                    sid = payload.get("args", {}).get("sessionId")
                    if status and sid:
                        ctx.waiters.notify(uuid.UUID(sid), status)
                except (TypeError, ValueError, AttributeError):
                    continue
        except Exception as exc:
            if ctx.stopping.is_set():
                return
            raise_if_cancelling()
            log.warning("broadcast subscription lost: %r", exc)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        await asyncio.sleep(1)


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


@dataclass
class Reconciliation:
    """What one reconciliation with an agent found and did."""

    orphans_destroyed: list[str] = field(default_factory=list)
    sessions_closed: list[uuid.UUID] = field(default_factory=list)


async def reconcile_agent(ctx: ManagerContext, handler: LifecycleHandler, agent_id: str, addr: str,
                          grace: float = 10.0) -> Reconciliation:
    """Make an agent and the database agree, both ways:

    - a container whose kernel the database has as TERMINATED/CANCELLED (destroyed while the
      agent was down, then re-adopted) is destroyed on the agent, which frees its slots there;
    - a RUNNING kernel the agent does not have (its container vanished) ends its session with
      ``container-not-found``.

    Kernels whose status changed less than ``grace`` seconds ago are left alone, so a start or a
    destroy in flight is never mistaken for a loss. Raises AgentError if the agent is unreachable."""
    found = Reconciliation()
    reported = await ctx.agents.get(addr).list_kernels()
    ctx.agents.reconciled(addr)
    on_agent = {str(k.get("kernel_id")): k for k in reported}
    cutoff = datetime.now(UTC) - timedelta(seconds=grace)
    async with ctx.db.connect() as conn:
        dead = await store.dead_kernels_among(conn, list(on_agent))
        expected = await store.settled_kernels_of_agent(conn, agent_id, cutoff)
    for kernel_id, session_id in dead:
        if on_agent[kernel_id].get("status") == "TERMINATING":
            continue
        log.warning("agent %s still runs kernel %s of session %s, which has ended: destroying it",
                    agent_id, kernel_id, session_id)
        try:
            await ctx.agents.get(addr).destroy_kernel(kernel_id, str(session_id), "already-terminated")
        except KernelNotFound:
            pass
        found.orphans_destroyed.append(kernel_id)
    for k in expected:
        if str(k.id) in on_agent:
            continue
        log.warning("kernel %s of session %s is gone from agent %s", k.id, k.session_id, agent_id)
        await handler.on_kernel_terminated(Event("kernel_terminated", agent_id, {
            "kernel_id": str(k.id), "session_id": str(k.session_id),
            "reason": "container-not-found", "exit_code": None}))
        found.sessions_closed.append(k.session_id)
    async with ctx.db.begin() as conn:
        await agent_store.refresh_occupied(conn, agent_id)
    if found.orphans_destroyed or found.sessions_closed:
        ctx.request_schedule()
    return found


async def sync_with_agents(ctx: ManagerContext, handler: LifecycleHandler, grace: float = 10.0) -> int:
    """Reconcile every ALIVE agent (see :func:`reconcile_agent`). Returns how many RUNNING
    kernels were found missing from their agents."""
    async with ctx.db.connect() as conn:
        agents = await agent_store.alive_addrs(conn)
    missing = 0
    for agent_id, addr in agents:
        try:
            missing += len((await reconcile_agent(ctx, handler, agent_id, addr, grace)).sessions_closed)
        except AgentError as exc:
            log.warning("cannot reconcile with agent %s: %s", agent_id, exc)
    return missing


async def keep_in_sync_with_agents(ctx: ManagerContext, handler: LifecycleHandler,
                                   interval: float | None = None) -> None:
    while True:
        await asyncio.sleep(interval or ctx.config.manager.agent_sync_interval)
        try:
            await sync_with_agents(ctx, handler)
        except Exception:
            raise_if_cancelling()
            log.exception("agent sync failed")


#: Statuses a session passes through on its way up (or down); none should last long.
CREATING = ["SCHEDULED", "PREPARING", "PULLING"]
LIVE_KERNEL_STATUSES = [s.value for s in KernelStatus if s not in (KernelStatus.TERMINATED, KernelStatus.CANCELLED)]


async def sweep_stuck_sessions(ctx: ManagerContext, older_than: float | None = None) -> list[uuid.UUID]:
    """Fail sessions stuck in a transitional status for longer than ``older_than`` seconds (default
    ``stuck-session-timeout``) and free their slots: one still being created is CANCELLED (then
    whatever the agent has of it is destroyed); one TERMINATING gets one more destroy on its
    agent and is closed whatever the answer (reconciliation removes a leftover container later);
    one left RESTARTING goes back to RUNNING (:func:`.sessions.batch.recover_stuck_restarts`).
    Returns the sessions it failed."""
    limit = older_than if older_than is not None else ctx.config.manager.stuck_session_timeout
    cutoff = datetime.now(UTC) - timedelta(seconds=limit)
    await batch.recover_stuck_restarts(ctx, cutoff)
    async with ctx.db.connect() as conn:
        stuck = await store.stuck_sessions(conn, [*CREATING, "TERMINATING"], cutoff)
    failed: list[uuid.UUID] = []
    for row in stuck:
        log.warning("session %s has been %s for over %.0f s: failing it", row.id, row.status, limit)
        async with ctx.db.connect() as conn:
            kernels = [k for k in await store.kernels_of(conn, row.id) if k.status in LIVE_KERNEL_STATUSES]
        if row.status == "TERMINATING":
            await _destroy_all(ctx, kernels)
            await termination.finish_termination(ctx, row.id, "hang-timeout")
        else:
            await termination.close(ctx, row.id, SessionStatus.CANCELLED, KernelStatus.CANCELLED, "hang-timeout",
                                    kernels_from=LIVE_KERNEL_STATUSES, sessions_from=CREATING)
            await _destroy_all(ctx, kernels)
        failed.append(row.id)
    return failed


async def _destroy_all(ctx: ManagerContext, kernels: list[Any]) -> None:
    results = await asyncio.gather(*[termination.destroy_kernel(ctx, k, "hang-timeout") for k in kernels],
                                   return_exceptions=True)
    for k, res in zip(kernels, results, strict=True):
        if isinstance(res, BaseException):
            log.warning("destroying kernel %s of a stuck session failed: %r", k.id, res)


async def sweep_stuck_sessions_forever(ctx: ManagerContext) -> None:
    while True:
        await asyncio.sleep(ctx.config.manager.sweep_interval)
        try:
            await sweep_stuck_sessions(ctx)
        except Exception:
            raise_if_cancelling()
            log.exception("stuck-session sweep failed")
