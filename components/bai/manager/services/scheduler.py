"""The dispatcher: PENDING -> SCHEDULED -> PREPARING.

One transaction under a PostgreSQL advisory lock decides every pending session, so several
managers never hand out the same slots. Each resource group has its scheduler (session order:
fifo, lifo, drf, mof) and its agent-selection strategy (``scheduler_opts``), read at every pass
so that a modify_scaling_group takes effect on the next one. A pass loads what it needs in a
few bulk queries (one per kind, never one per session), runs the pure policy of
``services/scheduling`` and writes the decisions back in bulk. Scheduling runs whenever
something frees or requests capacity (an explicit wake-up), plus a slow periodic tick that also
releases reservations whose ``starts_at`` has come.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID as uuid_t

from sqlalchemy.ext.asyncio import AsyncConnection

from bai.common.agent_rpc import AgentError
from bai.common.etcd import quote_key
from bai.common.tasks import raise_if_cancelling
from bai.common.types import KernelStatus, ResourceSlots, SessionStatus, slots_from_json
from bai.manager.store import agents as agent_store
from bai.manager.store import cluster as cluster_store
from bai.manager.store import images as image_store
from bai.manager.store import session_dependencies as dependency_store
from bai.manager.store import sessions as store
from bai.manager.store import users as user_store
from bai.manager.store.db import try_advisory_xact_lock

from . import cluster_networks, dotfiles
from .context import ManagerContext
from .images import registry_for_agent
from .scheduling import dependencies, devices, predicates, queues, selectors
from .scheduling import images as image_locality
from .scheduling.model import (
    AgentCapacity,
    Ledger,
    OwnerLimits,
    PendingSession,
    SlotLimits,
    Snapshot,
    add_slots,
)
from .sessions import ssh_keys, termination
from .sessions.payloads import broadcast_session

log = logging.getLogger(__name__)

SCHEDULER_LOCK_ID = 91_000_001
TICK_SECONDS = 3.0
#: After another manager held the lock: look again this much later (not at once: no busy loop).
LOCK_RETRY_SECONDS = 0.5
#: etcd: the FIFO scheduler's default ``num_retries_to_skip`` (``scheduler_opts.config`` wins).
FIFO_RETRIES_KEY = "config/plugins/scheduler/fifo/num_retries_to_skip"
ETCD_CONFIG_TTL = 10.0
#: etcd: the most kernels (containers) one agent may hold; unset or 0: no cap.
MAX_CONTAINERS_KEY = "config/agent/max-container-count"
#: Kernels RUNNING since this long before an agent's last heartbeat count as possibly not in its
#: per-device report (scheduling/devices.py): events and heartbeats may cross on the way.
UNCONFIRMED_MARGIN = timedelta(seconds=5)
#: etcd: round-robin positions, one key per resource group and architecture (as the original).
ROUNDROBIN_PREFIX = "roundrobin_states"

__all__ = ["AgentCapacity", "Scheduler", "SCHEDULER_LOCK_ID"]


@dataclass
class GroupPolicy:
    scheduler: str
    strategy: str
    roundrobin: bool
    num_retries_to_skip: int
    pending_timeout: float


@dataclass
class PassResult:
    scheduled: list[Any]
    #: sessions to cancel, with the reason: ``pending-timeout`` (the group's
    #: ``scheduler_opts.pending_timeout`` passed) or ``owner-keypair-inactive``
    cancelled: list[tuple[uuid_t, str]]
    #: status_data of some of them (``dependency-failed``: which dependency)
    cancel_data: dict[uuid_t, dict[str, Any]] = field(default_factory=dict)


def _group_policy(row: Any, fifo_default: int) -> GroupPolicy:
    opts = row.scheduler_opts or {}
    config = opts.get("config") or {}
    strategy = opts.get("agent_selection_strategy") or selectors.DEFAULT_STRATEGY
    retries = config.get("num_retries_to_skip", fifo_default)
    timeout = opts.get("pending_timeout") or 0
    return GroupPolicy(
        scheduler=row.scheduler if row.scheduler in queues.SCHEDULERS else "fifo",
        strategy=strategy if strategy in selectors.STRATEGIES else selectors.DEFAULT_STRATEGY,
        roundrobin=strategy == "roundrobin" or opts.get("roundrobin") is True,
        num_retries_to_skip=retries if isinstance(retries, int) and retries >= 0 else fifo_default,
        pending_timeout=float(timeout) if isinstance(timeout, (int, float)) else 0.0,
    )


def _pending(row: Any) -> PendingSession:
    return PendingSession(
        id=row.id, name=row.name, access_key=row.access_key, user_uuid=row.user_uuid, group_id=row.group_id,
        domain_name=row.domain_name, scaling_group=row.scaling_group_name, architecture=row.architecture,
        session_type=row.session_type, created_at=row.created_at, starts_at=row.starts_at,
        requested=slots_from_json(row.requested_slots), status_info=row.status_info,
        status_data=dict(row.status_data or {}), cluster_mode=row.cluster_mode, cluster_size=row.cluster_size,
        image=row.image or "",
    )


def _owner(row: Any) -> OwnerLimits:
    pending_slots = row.max_pending_session_resource_slots
    main_total = row.main_total_resource_slots
    keypair = SlotLimits(slots_from_json(row.total_resource_slots), row.default_for_unspecified == "LIMITED")
    main = keypair if main_total is None else SlotLimits(
        slots_from_json(main_total), row.main_default_for_unspecified == "LIMITED")
    return OwnerLimits(
        access_key=row.access_key, policy_name=row.policy_name, keypair=keypair, main_keypair=main,
        max_concurrent_sessions=row.max_concurrent_sessions,
        max_concurrent_sftp_sessions=row.max_concurrent_sftp_sessions,
        max_pending_session_count=row.max_pending_session_count,
        max_pending_session_resource_slots=slots_from_json(pending_slots) if pending_slots is not None else None,
    )


class Scheduler:
    def __init__(self, ctx: ManagerContext) -> None:
        self.ctx = ctx
        self._tasks: set[asyncio.Task[None]] = set()
        self._fifo_default: tuple[float, int] | None = None
        self._max_containers: tuple[float, int | None] | None = None
        #: whether the last pass found the lock taken by another manager
        self.locked_out = False
        #: the earliest ``starts_at`` still ahead, seen by the last pass: the next pass runs then
        self._next_start: datetime | None = None

    async def run(self) -> None:
        sweep = asyncio.create_task(self._remove_overlay_leftovers(), name="overlay-leftovers")
        try:
            await self._run()
        finally:
            sweep.cancel()  # it sleeps between sweeps: it ends with the scheduler
            await asyncio.gather(sweep, return_exceptions=True)
            await cluster_networks.of(self.ctx).close()

    async def _remove_overlay_leftovers(self) -> None:
        """Overlays of sessions that ended while no manager could remove them (at start, then
        every few minutes: a session may end on a manager whose engine cannot remove overlays)."""
        async def live(ids: list[uuid_t]) -> set[uuid_t]:
            async with self.ctx.db.connect() as conn:
                return await cluster_store.live_among(conn, ids)
        while True:
            try:
                removed = await cluster_networks.of(self.ctx).remove_leftovers(live)
                if removed:
                    log.info("removed overlay networks of ended sessions: %s", ", ".join(removed))
            except Exception as exc:
                raise_if_cancelling()
                log.warning("cannot look for overlay networks of ended sessions: %r", exc)
            await asyncio.sleep(cluster_networks.LEFTOVER_SWEEP_SECONDS)

    async def _run(self) -> None:
        while True:
            if self.locked_out:
                # Another manager is mid-pass: wake-ups do not shorten this wait (no busy loop);
                # what woke us is looked at by our next try.
                await asyncio.sleep(LOCK_RETRY_SECONDS)
            else:
                try:
                    await asyncio.wait_for(self.ctx.schedule_requested.wait(), self._wait_seconds())
                except TimeoutError:
                    pass
            self.ctx.schedule_requested.clear()
            try:
                await self.schedule_once()
            except Exception:
                raise_if_cancelling()
                log.exception("scheduling pass failed")

    def _wait_seconds(self) -> float:
        if self._next_start is None:
            return TICK_SECONDS
        return min(TICK_SECONDS, max(0.01, (self._next_start - datetime.now(UTC)).total_seconds()))

    async def schedule_once(self) -> int:
        result = await self.decide()
        for sid, reason in result.cancelled:
            await termination.cancel(self.ctx, sid, reason, result.cancel_data.get(sid))
        for sess in result.scheduled:
            await broadcast_session(self.ctx, "session_scheduled", sess)
            task = asyncio.create_task(self._prepare_or_log(sess.id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(result.scheduled)

    async def decide(self) -> PassResult:
        """One pass's decisions, committed: the sessions scheduled (their rows) and those whose
        group's ``pending_timeout`` has passed (to cancel). Nothing when another manager holds
        the lock (``locked_out``; the run loop looks again shortly)."""
        self._next_start = None
        async with self.ctx.db.begin() as conn:
            self.locked_out = not await try_advisory_xact_lock(conn, SCHEDULER_LOCK_ID)
            if self.locked_out:
                return PassResult([], [])
            rows = await store.pending(conn)
            if not rows:
                return PassResult([], [])
            return await self._decide(conn, rows)

    async def _fifo_retries_default(self) -> int:
        now = time.monotonic()
        if self._fifo_default is None or now - self._fifo_default[0] > ETCD_CONFIG_TTL:
            raw = await self.ctx.etcd.get(FIFO_RETRIES_KEY)
            try:
                value = max(0, int(raw)) if raw is not None else 0
            except ValueError:
                log.warning("ignoring %s = %r (not an integer)", FIFO_RETRIES_KEY, raw)
                value = 0
            self._fifo_default = (now, value)
        return self._fifo_default[1]

    async def _max_container_count(self) -> int | None:
        """etcd ``config/agent/max-container-count`` (the original's per-agent container cap);
        None: no cap."""
        now = time.monotonic()
        if self._max_containers is None or now - self._max_containers[0] > ETCD_CONFIG_TTL:
            raw = await self.ctx.etcd.get(MAX_CONTAINERS_KEY)
            value = None
            try:
                value = int(raw) if raw is not None else None
            except ValueError:
                log.warning("ignoring %s = %r (not an integer)", MAX_CONTAINERS_KEY, raw)
            self._max_containers = (now, value if value is not None and value > 0 else None)
        return self._max_containers[1]

    async def _decide(self, conn: AsyncConnection, rows: list[Any]) -> PassResult:
        now = datetime.now(UTC)
        by_id = {r.id: r for r in rows}
        pending = [_pending(r) for r in rows]
        group_names = sorted({s.scaling_group for s in pending})
        settings = await agent_store.scheduler_settings(conn, group_names)
        fifo_default = await self._fifo_retries_default()
        policies = {name: _group_policy(row, fifo_default) for name, row in settings.items()}

        agent_rows = await agent_store.schedulable_in_groups(conn, list(policies), lock=True)
        occupied, containers = await agent_store.occupancy_by_agent(conn, [a.id for a in agent_rows])
        max_containers = await self._max_container_count()
        reporting = [r.id for r in agent_rows if devices.parse_placement(r.compute_plugins)]
        unconfirmed = await agent_store.unconfirmed_by_agent(conn, reporting, UNCONFIRMED_MARGIN) if reporting else {}
        agents: dict[tuple[str, str], list[AgentCapacity]] = defaultdict(list)
        for row in agent_rows:
            agents[(row.scaling_group, row.architecture)].append(AgentCapacity(
                row.id, row.addr, slots_from_json(row.available_slots), occupied[row.id], containers[row.id],
                max_containers, devices.one_device_slots(row.compute_plugins, unconfirmed.get(row.id, []))))
        # sessions of an image no agent can pull go only where it is (scheduling/images.py)
        image_holders = await self._image_holders(conn, pending, agent_rows)

        self._next_start = min((s.starts_at for s in pending if s.starts_at is not None and s.starts_at > now),
                               default=None)
        snap = await self._snapshot(conn, pending, now)
        # kernels a superadmin assigned to agents at create (agentList), per session in rank order
        manual = await cluster_store.preset_agents(conn, [s.id for s in pending])
        # without the overlay, a multi-node session must stay on one host (its kernels meet on a
        # local bridge there); asked only when a multi-node session waits. A manager whose Docker
        # engine cannot create overlays (no swarm manager) leaves sessions across hosts to one that can
        overlay = any(s.is_multi_node for s in pending) and await cluster_networks.of(self.ctx).usable()
        doomed = dependencies.failed_dependencies(snap.dependencies)
        cancel_data: dict[uuid_t, dict[str, Any]] = {}
        notes: list[tuple[uuid_t, str, dict[str, Any]]] = []
        placements: list[tuple[uuid_t, str, str, dict[str, Any]]] = []
        #: multi-node sessions: (session, kernel's local rank, agent id, agent address)
        kernel_agents: list[tuple[uuid_t, int, str, str]] = []
        cancelled: list[tuple[uuid_t, str]] = []
        touched: dict[str, AgentCapacity] = {}
        rr_states: dict[tuple[str, str], selectors.RoundRobinState | None] = {}
        rr_changed: set[tuple[str, str]] = set()

        by_group: dict[str, list[PendingSession]] = defaultdict(list)
        for sess in pending:
            by_group[sess.scaling_group].append(sess)
        for group, sessions in by_group.items():
            policy = policies.get(group)
            if policy is None:
                continue  # the group is inactive (or gone): its sessions wait
            if policy.pending_timeout > 0:
                cutoff = now - timedelta(seconds=policy.pending_timeout)
                cancelled += [(s.id, "pending-timeout") for s in sessions if s.created_at < cutoff]
                sessions = [s for s in sessions if s.created_at >= cutoff]
            capacity: ResourceSlots = {}
            for (g, _), members in agents.items():
                if g == group:
                    for member in members:
                        add_slots(capacity, member.available)
            queue = queues.make_queue(policy.scheduler, sessions, num_retries_to_skip=policy.num_retries_to_skip,
                                      capacity=capacity, occupancy_by_keypair=snap.ledger.by_keypair)
            while queue:
                sess = queue.next()
                if sess.access_key not in snap.owners:
                    cancelled.append((sess.id, "owner-keypair-inactive"))  # keypair or user deactivated
                    continue
                if (failed_dep := doomed.get(sess.id)) is not None:  # it can never start
                    cancelled.append((sess.id, dependencies.cancel_reason(failed_dep)))
                    cancel_data[sess.id] = dependencies.cancel_data(failed_dep)
                    continue
                passed, failed = predicates.check_all(sess, snap)
                sched = {"retries": sess.retries, "last_try": now.isoformat(),
                         "passed_predicates": [{"name": n} for n in passed]}
                if failed and sess.is_private:
                    cancelled.append((sess.id, "predicate-checks-failed"))  # system sessions do not wait
                    continue
                if failed:
                    sched.update(retries=sess.retries + 1,
                                 failed_predicates=[{"name": f.name, "msg": f.msg} for f in failed])
                    notes.append((sess.id, "predicate-checks-failed", {**sess.status_data, "scheduler": sched}))
                    continue
                candidates = agents.get((group, sess.architecture), [])
                holders = image_holders.get((sess.image, sess.architecture))
                chosen, why = await self._place(policy, sess, candidates, rr_states, rr_changed,
                                                manual.get(sess.id), overlay, holders)
                if chosen is None and why is not None:
                    sched.update(retries=sess.retries + 1, msg=why)
                    notes.append((sess.id, "no-available-instances", {**sess.status_data, "scheduler": sched}))
                    continue
                if chosen is None:
                    per_kernel, kernels = ((sess.per_kernel(), 1) if sess.is_multi_node
                                           else (sess.requested, max(sess.cluster_size, 1)))
                    # the image's holders are all that count; its locality is the reason only when
                    # an agent without the image would have had room
                    considered = [a for a in candidates if holders is None or a.id in holders]
                    locality_held_it = holders is not None and any(
                        a.id not in holders and a.fits_total(per_kernel, kernels) for a in candidates)
                    per_device = devices.shortfall_message(
                        {a.id: a.one_device for a in considered if a.fits_total(per_kernel, kernels)},
                        per_kernel, kernels)
                    sched.update(retries=sess.retries + 1, msg=(
                        "No agents found to be compatible with the image architecture" if not candidates else
                        image_locality.not_held_message(sess.image, group) if locality_held_it else
                        per_device or
                        "Could not find a contiguous resource region in any agent big enough to host the "
                        f"session (id: {sess.id}, resource group: {group})"))
                    notes.append((sess.id, "no-available-instances", {**sess.status_data, "scheduler": sched}))
                    continue
                for agent in chosen:
                    touched[agent.id] = agent
                snap.scheduled.add(sess.id)
                snap.ledger.add(sess.access_key, sess.user_uuid, sess.group_id, sess.domain_name,
                                sess.requested, sess.is_private)
                queue.scheduled(sess)
                placements.append((sess.id, chosen[0].id, chosen[0].addr, {**sess.status_data, "scheduler": sched}))
                if sess.is_multi_node:
                    kernel_agents += [(sess.id, rank, a.id, a.addr) for rank, a in enumerate(chosen)]

        await store.mark_scheduled(conn, placements, kernel_agents)
        await store.note_unscheduled(conn, notes)
        await agent_store.set_occupied_slots_many(conn, {a.id: a.occupied for a in touched.values()})
        for key in rr_changed:
            state = rr_states[key]
            if state is not None:
                await self.ctx.etcd.put(self._rr_key(*key), json.dumps(state.to_json()))
        return PassResult([by_id[sid] for sid, *_ in placements], cancelled, cancel_data)

    async def _place(self, policy: GroupPolicy, sess: PendingSession, candidates: list[AgentCapacity],
                     rr_states: dict[tuple[str, str], selectors.RoundRobinState | None],
                     rr_changed: set[tuple[str, str]], manual: list[str] | None = None,
                     overlay: bool = False, holders: frozenset[str] | None = None
                     ) -> tuple[list[AgentCapacity] | None, str | None]:
        """The agent of each kernel, in local-rank order, with the slots reserved there: one agent
        for a single-node session; for a multi-node one each kernel is placed in turn (the
        original's ``assign_agent_for_kernel``) -- on one host unless ``overlay`` (kernels on
        different hosts meet only over the swarm overlay). ``manual``: the agents a superadmin
        assigned (agentList), which are checked, not chosen. None, with nothing reserved, when
        some kernel finds no room (a session is placed whole or not at all), with the reason
        when there is one more telling than "no room". ``holders``: the only agents that may take
        any kernel (its image cannot be pulled; None: any agent)."""
        if manual:
            placed = self._place_manual(sess, candidates, manual, overlay, holders)
            return (None, placed) if isinstance(placed, str) else (placed, None)
        if sess.is_multi_node and not overlay:
            return await self._place_on_one_host(policy, sess, candidates, rr_states, rr_changed, holders)
        return await self._place_by_policy(policy, sess, candidates, rr_states, rr_changed, holders), None

    def _place_manual(self, sess: PendingSession, candidates: list[AgentCapacity],
                      manual: list[str], overlay: bool,
                      holders: frozenset[str] | None = None) -> list[AgentCapacity] | str:
        by_id = {a.id: a for a in candidates}
        if sess.is_multi_node and not overlay and cluster_networks.spans_hosts(
                [by_id[a].addr for a in manual if a in by_id]):
            return ("The assigned agents are on different hosts: a multi-node session across hosts "
                    + cluster_networks.of(self.ctx).needs())
        if sess.is_multi_node:
            wanted = [(aid, sess.per_kernel(), 1) for aid in manual]
        else:  # one agent holds every kernel
            wanted = [(manual[0], sess.requested, max(sess.cluster_size, 1))]
        chosen: list[AgentCapacity] = []
        for aid, request, kernels in wanted:
            agent = by_id.get(aid)
            problem = None
            if agent is None:
                problem = (f"The assigned agent {aid} is not available in resource group {sess.scaling_group} "
                           f"(not alive, not schedulable, or not of architecture {sess.architecture})")
            elif holders is not None and aid not in holders:
                problem = (f"The assigned agent {aid} does not hold the image {sess.image} "
                           "(no configured registry serves it, so it cannot pull it)")
            elif not agent.fits(request, kernels):
                free = agent.free()
                short = ", ".join(f"{slot} {free.get(slot, Decimal(0))} free < {amount}"
                                  for slot, amount in sorted(request.items())
                                  if amount > 0 and amount > free.get(slot, Decimal(0)))
                problem = (f"The assigned agent {aid} has not enough free capacity"
                           f" ({short or 'no room for more containers or on one device'})")
            if problem is not None:
                for placed, (_, req, n) in zip(chosen, wanted, strict=False):
                    placed.unreserve(req, n)
                return problem
            assert agent is not None
            agent.reserve(request, kernels)
            chosen.append(agent)
        return chosen

    async def _place_on_one_host(self, policy: GroupPolicy, sess: PendingSession, candidates: list[AgentCapacity],
                                 rr_states: dict[tuple[str, str], selectors.RoundRobinState | None],
                                 rr_changed: set[tuple[str, str]], holders: frozenset[str] | None = None
                                 ) -> tuple[list[AgentCapacity] | None, str | None]:
        """A multi-node session without the overlay: placed by the policy among the agents of
        one host (the agents sharing a Docker engine), trying the host of the policy's first
        choice first."""
        by_host: dict[str, list[AgentCapacity]] = defaultdict(list)
        for agent in candidates:
            by_host[cluster_networks.host_of(agent.addr)].append(agent)
        if len(by_host) <= 1:
            return await self._place_by_policy(policy, sess, candidates, rr_states, rr_changed, holders), None
        key = (sess.scaling_group, sess.architecture)
        rr_before, rr_was_changed = rr_states.get(key), key in rr_changed
        first = await self._place_by_policy(policy, sess, candidates, rr_states, rr_changed, holders)
        if first is not None and not cluster_networks.spans_hosts([a.addr for a in first]):
            return first, None
        hosts = list(by_host)
        if first is not None:  # undo it: it needs the overlay
            for placed in first:
                placed.unreserve(sess.per_kernel())
            if policy.roundrobin:
                rr_states[key] = rr_before
                if not rr_was_changed:
                    rr_changed.discard(key)
            hosts.sort(key=lambda h: h != cluster_networks.host_of(first[0].addr))
        for host in hosts:
            chosen = await self._place_by_policy(policy, sess, by_host[host], rr_states, rr_changed, holders)
            if chosen is not None:
                return chosen, None
        if first is None:
            return None, None  # no room even across hosts: the usual message
        return None, (f"A multi-node session across hosts {cluster_networks.of(self.ctx).needs()}; no single "
                      f"host has room for all {sess.cluster_size} kernels")

    async def _place_by_policy(self, policy: GroupPolicy, sess: PendingSession, candidates: list[AgentCapacity],
                               rr_states: dict[tuple[str, str], selectors.RoundRobinState | None],
                               rr_changed: set[tuple[str, str]],
                               holders: frozenset[str] | None = None) -> list[AgentCapacity] | None:
        if not sess.is_multi_node:
            kernels = max(sess.cluster_size, 1)
            agent = await self._pick(policy, sess, candidates, sess.requested, kernels, rr_states, rr_changed,
                                     holders)
            if agent is None:
                return None
            agent.reserve(sess.requested, kernels)
            return [agent]
        request = sess.per_kernel()
        chosen: list[AgentCapacity] = []
        # A session that is rolled back leaves the round-robin position where it was.
        key = (sess.scaling_group, sess.architecture)
        if policy.roundrobin and key not in rr_states:
            rr_states[key] = await self._rr_state(*key)
        rr_before, rr_was_changed = rr_states.get(key), key in rr_changed
        for _ in range(sess.cluster_size):
            agent = await self._pick(policy, sess, candidates, request, 1, rr_states, rr_changed, holders)
            if agent is None:
                for placed in chosen:
                    placed.unreserve(request)
                if policy.roundrobin:
                    rr_states[key] = rr_before
                    if not rr_was_changed:
                        rr_changed.discard(key)
                return None
            agent.reserve(request)
            chosen.append(agent)
        return chosen

    async def _pick(self, policy: GroupPolicy, sess: PendingSession, candidates: list[AgentCapacity],
                    request: ResourceSlots, kernels: int,
                    rr_states: dict[tuple[str, str], selectors.RoundRobinState | None],
                    rr_changed: set[tuple[str, str]], holders: frozenset[str] | None = None) -> AgentCapacity | None:
        agent: AgentCapacity | None = None
        key = (sess.scaling_group, sess.architecture)
        if policy.roundrobin and candidates:
            if key not in rr_states:
                rr_states[key] = await self._rr_state(*key)
            agent, state = selectors.pick_round_robin(candidates, request, rr_states[key], kernels, holders)
            if state != rr_states[key]:
                rr_states[key] = state
                rr_changed.add(key)
        if agent is None:
            strategy = "mof" if policy.scheduler == "mof" else policy.strategy
            if holders is not None:
                candidates = [a for a in candidates if a.id in holders]
            agent = selectors.pick_agent(strategy, candidates, request,
                                         self.ctx.config.manager.agent_selection_resource_priority, kernels)
        return agent

    async def _image_holders(self, conn: AsyncConnection, pending: list[PendingSession],
                             agent_rows: list[Any]) -> dict[tuple[str, str], frozenset[str]]:
        """For each image (name, architecture) of the pending sessions that agents cannot pull
        (scheduling/images.py ``pullable``): the agents that may take its sessions, i.e. those
        holding it and those that run no images. One query for all the images (never one per
        agent or session); etcd's registries read only when an image names a non-local one. An
        image without a row (forgotten since) is left to the agent, as before."""
        rows = await image_store.locality_of(conn, [(s.image, s.architecture) for s in pending if s.image])
        if not rows:
            return {}
        configured = await image_locality.configured_among(self.ctx.etcd, {r.registry for r in rows})
        anywhere = frozenset(r.id for r in agent_rows if image_locality.runs_without_images(r.compute_plugins))
        return {(r.name, r.architecture): frozenset(r.installed_agents or ()) | anywhere
                for r in rows if not image_locality.pullable(r.registry, configured)}

    async def _snapshot(self, conn: AsyncConnection, pending: list[PendingSession], now: datetime) -> Snapshot:
        access_keys = sorted({s.access_key for s in pending})
        owners = {r.access_key: _owner(r) for r in await store.scheduling_owners(conn, access_keys)}
        domains = sorted({s.domain_name for s in pending})
        users, groups = sorted({s.user_uuid for s in pending}), sorted({s.group_id for s in pending})
        totals, counts = await store.occupancy_totals(conn, access_keys, users, groups, domains)
        ledger = Ledger()
        sums: dict[str, dict[Any, ResourceSlots]] = {"keypair": ledger.by_keypair, "user": ledger.by_user,
                                                     "group": ledger.by_group, "domain": ledger.by_domain}
        for dim, key, slot, amount in totals:
            sums[dim].setdefault(key, {})[slot] = Decimal(amount)
        for row in counts:
            (ledger.sftp_sessions if row.private else ledger.sessions)[row.access_key] = row.count
        group_slots, domain_slots = await store.slot_limits_of(conn, groups, domains)
        by_keypair: dict[str, list[PendingSession]] = defaultdict(list)
        for s in pending:  # already oldest first
            by_keypair[s.access_key].append(s)
        deps = await dependency_store.of_sessions(conn, [s.id for s in pending])
        return Snapshot(
            dependencies={sid: [dependencies.Dependency(r.id, r.name, r.status, r.result) for r in rows]
                          for sid, rows in deps.items()},
            now=now, owners=owners,
            group_limits={g: SlotLimits(slots_from_json(v)) for g, v in group_slots.items()},
            domain_limits={d: SlotLimits(slots_from_json(v)) for d, v in domain_slots.items()},
            ledger=ledger, pending_by_keypair=dict(by_keypair))

    @staticmethod
    def _rr_key(group: str, architecture: str) -> str:
        return f"{ROUNDROBIN_PREFIX}/{quote_key(group)}/{quote_key(architecture)}"

    async def _rr_state(self, group: str, architecture: str) -> selectors.RoundRobinState | None:
        raw = await self.ctx.etcd.get(self._rr_key(group, architecture))
        try:
            data = json.loads(raw) if raw else None
            return selectors.RoundRobinState(str(data["schedulable_group_id"]), int(data["next_index"])) \
                if isinstance(data, dict) else None
        except (ValueError, KeyError, TypeError):
            return None  # a damaged state: start the rotation over

    async def _prepare_or_log(self, session_id: uuid_t) -> None:
        try:
            await self.prepare(session_id)
        except Exception:
            raise_if_cancelling()
            # e.g. the database went away half-way: the stuck-session sweep fails it later.
            log.exception("preparing session %s failed", session_id)

    async def prepare(self, session_id: uuid_t) -> None:
        async with self.ctx.db.begin() as conn:
            if not await store.set_session_status(conn, session_id, SessionStatus.PREPARING,
                                                  only_from=["SCHEDULED"]):
                return
            sess = await store.get(conn, session_id)
            assert sess is not None  # the status update above just matched it
            kernels = await store.kernels_of(conn, session_id)
            for k in kernels:
                await store.set_kernel_status(conn, k.id, KernelStatus.PREPARING, only_from=["SCHEDULED"])
            email = await user_store.email_of(conn, sess.user_uuid)
            image_labels = await image_store.labels_of(conn, sess.image, sess.architecture)
            # the domain's, project's and keypair's dotfiles, and the keypair's stored bootstrap
            # script for a session created without one: as they are when the session starts
            home_files, stored_script = await dotfiles.for_session(conn, sess.access_key, sess.domain_name,
                                                                   sess.group_id)
            ssh_pair = await ssh_keys.stored(conn, sess.access_key)
        if ssh_pair is None and sess.access_key:  # the keypair's first session: its SSH keypair, made once
            ssh_pair = await ssh_keys.generate_once(self.ctx.db, sess.access_key)
        # where the agent pulls the image from if it lacks it (None for local images: no lookup)
        registry = await registry_for_agent(self.ctx, kernels[0].registry or "")
        hosts = ",".join(k.cluster_hostname for k in kernels)
        roles = [k.cluster_role for k in kernels]
        replicas = ",".join(f"{role}:{roles.count(role)}" for role in dict.fromkeys(roles))
        configs = []
        for k in kernels:
            environ = {
                **(k.environ or {}),
                "BACKENDAI_SESSION_ID": str(sess.id), "BACKENDAI_SESSION_NAME": sess.name,
                "BACKENDAI_KERNEL_ID": str(k.id), "BACKENDAI_KERNEL_IMAGE": k.image,
                "BACKENDAI_USER_UUID": str(sess.user_uuid), "BACKENDAI_USER_EMAIL": email or "",
                "BACKENDAI_ACCESS_KEY": sess.access_key,
                "BACKENDAI_CLUSTER_SIZE": str(sess.cluster_size), "BACKENDAI_CLUSTER_HOSTS": hosts,
                "BACKENDAI_CLUSTER_REPLICAS": replicas,
                "BACKENDAI_CLUSTER_HOST": k.cluster_hostname, "BACKENDAI_CLUSTER_ROLE": k.cluster_role,
                "BACKENDAI_CLUSTER_IDX": str(k.cluster_idx), "BACKENDAI_CLUSTER_LOCAL_RANK": str(k.local_rank),
            }
            configs.append({
                "image": {"canonical": k.image, "labels": image_labels or {}, "registry": registry},
                "session_type": k.session_type, "cluster_role": k.cluster_role, "cluster_idx": k.cluster_idx,
                "local_rank": k.local_rank, "cluster_hostname": k.cluster_hostname,
                "resource_slots": k.requested_slots, "resource_opts": k.resource_opts, "environ": environ,
                "bootstrap_script": sess.bootstrap_script or stored_script or None,
                "startup_command": sess.startup_command,
                "owner": {"access_key": sess.access_key, "user_uuid": str(sess.user_uuid), "user_email": email},
                # resolved and checked when the session was created (services/vfolders/mounts.py)
                "mounts": [{"host_path": m["host_path"], "kernel_path": m["kernel_path"],
                            "permission": m["mount_perm"]} for m in sess.vfolder_mounts or ()],
            })
            if home_files:  # protocol 1.1; left out for older agents (bai.common.protocol.FIELDS_SINCE)
                configs[-1]["dotfiles"] = home_files
            if ssh_pair:  # protocol 1.1 too: ~/.ssh/authorized_keys and ~/id_container (sessions/ssh_keys.py)
                configs[-1]["ssh_keypair"] = ssh_keys.wire(ssh_pair)
        cluster_info = {"mode": sess.cluster_mode, "size": sess.cluster_size,
                        "replicas": {"main": 1, "sub": sess.cluster_size - 1}}
        if cluster_pair := await ssh_keys.for_cluster(len(kernels)):  # protocol 1.1 (sessions/ssh_keys.py)
            cluster_info["ssh_keypair"] = cluster_pair
        if sess.cluster_mode == "multi-node" and cluster_networks.spans_hosts([k.agent_addr for k in kernels]):
            # kernels on several hosts meet on the session's overlay, made before any of them
            networks = cluster_networks.of(self.ctx)
            if (await networks.overlay()).enabled:
                try:
                    cluster_info["network_name"] = await networks.create(session_id)
                except cluster_networks.OverlayUnavailable as unavailable:
                    log.warning("session %s: %s", session_id, unavailable)
                    await termination.cancel_whole(self.ctx, session_id, "failed-to-start",
                                                   {"error": {"src": "manager", "repr": str(unavailable)}})
                    return
        # One create_kernels per agent (a multi-node session's kernels are on several), at once.
        by_agent: dict[str, list[int]] = defaultdict(list)
        for idx, k in enumerate(kernels):
            by_agent[k.agent_addr].append(idx)
        results = await asyncio.gather(*(
            self.ctx.agents.get(addr).create_kernels(
                str(session_id), [str(kernels[i].id) for i in idxs], [configs[i] for i in idxs], cluster_info)
            for addr, idxs in by_agent.items()), return_exceptions=True)
        failures = {addr: res for addr, res in zip(by_agent, results, strict=True) if isinstance(res, BaseException)}
        if not failures:
            return
        addr, exc = next(iter(failures.items()))
        log.warning("create_kernels on %s failed: %r", addr, exc)
        # all or nothing: what other agents accepted is removed too
        await termination.cancel_whole(self.ctx, session_id, "failed-to-start",
                                       {"error": {"src": "agent", "repr": repr(exc)}})
        unexpected = [e for e in failures.values() if not isinstance(e, (TimeoutError, AgentError, OSError))]
        if unexpected:
            raise unexpected[0]
