"""The dispatcher: PENDING -> SCHEDULED (FIFO order, concentrated agent selection) -> PREPARING.

One transaction under a PostgreSQL advisory lock picks agents for every pending session, so
several managers never hand out the same slots. Scheduling runs whenever something frees or
requests capacity (an explicit wake-up), plus a slow periodic tick as a safety net.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol
from uuid import UUID as uuid_t

from sqlalchemy.ext.asyncio import AsyncConnection

from bai.common.agent_rpc import AgentError
from bai.common.tasks import raise_if_cancelling
from bai.common.types import KernelStatus, ResourceSlots, SessionStatus, slots_from_json
from bai.manager.store import agents as agent_store
from bai.manager.store import images as image_store
from bai.manager.store import keypairs as keypair_store
from bai.manager.store import sessions as store
from bai.manager.store import users as user_store
from bai.manager.store.db import try_advisory_xact_lock

from .context import ManagerContext
from .images import registry_for_agent
from .sessions import termination
from .sessions.payloads import broadcast_session

log = logging.getLogger(__name__)

SCHEDULER_LOCK_ID = 91_000_001
TICK_SECONDS = 3.0
#: Slots compared first when choosing among agents (the original's default priority).
SLOT_PRIORITY = ("cuda.device", "cuda.shares", "cpu", "mem")


@dataclass
class AgentCapacity:
    id: str
    addr: str
    available: ResourceSlots
    occupied: ResourceSlots

    def free(self) -> ResourceSlots:
        return {k: v - self.occupied.get(k, Decimal(0)) for k, v in self.available.items()}

    def fits(self, request: ResourceSlots) -> bool:
        free = self.free()
        return all(amount <= free.get(slot, Decimal(0)) for slot, amount in request.items() if amount > 0)


class AgentSelector(Protocol):
    name: str

    def pick(self, candidates: list[AgentCapacity], request: ResourceSlots) -> AgentCapacity | None: ...


class ConcentratedSelector:
    """Fill the busiest agent that still fits, keeping other agents free for large requests."""

    name = "concentrated"

    def pick(self, candidates: list[AgentCapacity], request: ResourceSlots) -> AgentCapacity | None:
        fitting = [a for a in candidates if a.fits(request)]
        if not fitting:
            return None

        def key(a: AgentCapacity) -> tuple[Any, ...]:
            free = a.free()
            return (*(free.get(s, Decimal(0)) for s in SLOT_PRIORITY if s in free), a.id)

        return min(fitting, key=key)


def occupancy(rows: list[Any]) -> ResourceSlots:
    """The slots the given sessions request, summed."""
    total: ResourceSlots = {}
    for r in rows:
        for k, v in slots_from_json(r.requested_slots).items():
            total[k] = total.get(k, Decimal(0)) + v
    return total


class Scheduler:
    def __init__(self, ctx: ManagerContext, selector: AgentSelector | None = None) -> None:
        self.ctx = ctx
        self.selector = selector or ConcentratedSelector()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.ctx.schedule_requested.wait(), TICK_SECONDS)
            except TimeoutError:
                pass
            self.ctx.schedule_requested.clear()
            try:
                await self.schedule_once()
            except Exception:
                raise_if_cancelling()
                log.exception("scheduling pass failed")

    async def schedule_once(self) -> int:
        scheduled: list[Any] = []
        async with self.ctx.db.begin() as conn:
            if not await try_advisory_xact_lock(conn, SCHEDULER_LOCK_ID):
                self.ctx.request_schedule()  # another manager is scheduling; look again later
                return 0
            pending = await store.pending(conn)
            agents_by_group: dict[tuple[str, str], list[AgentCapacity]] = {}
            for sess in pending:
                group_key = (sess.scaling_group_name, sess.architecture)
                if group_key not in agents_by_group:
                    rows = await agent_store.alive_in_group(conn, *group_key, lock=True)
                    agents_by_group[group_key] = [
                        AgentCapacity(r.id, r.addr, slots_from_json(r.available_slots),
                                      await agent_store.occupied_slots(conn, r.id))
                        for r in rows
                    ]
                if await self._place(conn, sess, agents_by_group[group_key]):
                    scheduled.append(sess)
        for sess in scheduled:
            await broadcast_session(self.ctx, "session_scheduled", sess)
            task = asyncio.create_task(self._prepare_or_log(sess.id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(scheduled)

    async def _place(self, conn: AsyncConnection, sess: Any, candidates: list[AgentCapacity]) -> bool:
        owner = await keypair_store.get_requester(conn, sess.access_key)
        if owner is None:
            await store.set_session_status(conn, sess.id, SessionStatus.CANCELLED, info="owner-keypair-inactive")
            return False
        running = await store.occupying_of_keypair(conn, sess.access_key)
        if len(running) >= owner.policy.max_concurrent_sessions:
            await self._note(conn, sess, "predicate-checks-failed: concurrency limit")
            return False
        kernels = await store.kernels_of(conn, sess.id)
        total_request = slots_from_json(sess.requested_slots)
        limits = owner.policy.total_resource_slots
        used = occupancy(running)
        if any(used.get(k, Decimal(0)) + v > limits[k] for k, v in total_request.items() if k in limits):
            await self._note(conn, sess, "predicate-checks-failed: keypair resource quota")
            return False
        # single-node: every kernel of the session lands on the same agent
        agent = self.selector.pick(candidates, total_request)
        if agent is None:
            await self._note(conn, sess, "no-available-instances")
            return False
        for slot, amount in total_request.items():
            agent.occupied[slot] = agent.occupied.get(slot, Decimal(0)) + amount
        for k in kernels:
            await store.set_kernel_status(conn, k.id, KernelStatus.SCHEDULED, only_from=["PENDING"],
                                          agent=agent.id, agent_addr=agent.addr)
        await store.set_session_status(conn, sess.id, SessionStatus.SCHEDULED, only_from=["PENDING"], info="")
        await agent_store.set_occupied_slots(conn, agent.id, agent.occupied)
        return True

    async def _note(self, conn: AsyncConnection, sess: Any, info: str) -> None:
        if sess.status_info != info:
            await store.set_status_info(conn, sess.id, info)

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
        # where the agent pulls the image from if it lacks it (None for local images: no lookup)
        registry = await registry_for_agent(self.ctx, kernels[0].registry or "")
        hosts = ",".join(k.cluster_hostname for k in kernels)
        configs = []
        for k in kernels:
            environ = {
                **(k.environ or {}),
                "BACKENDAI_SESSION_ID": str(sess.id), "BACKENDAI_SESSION_NAME": sess.name,
                "BACKENDAI_KERNEL_ID": str(k.id), "BACKENDAI_KERNEL_IMAGE": k.image,
                "BACKENDAI_USER_UUID": str(sess.user_uuid), "BACKENDAI_USER_EMAIL": email or "",
                "BACKENDAI_ACCESS_KEY": sess.access_key,
                "BACKENDAI_CLUSTER_SIZE": str(sess.cluster_size), "BACKENDAI_CLUSTER_HOSTS": hosts,
                "BACKENDAI_CLUSTER_HOST": k.cluster_hostname, "BACKENDAI_CLUSTER_ROLE": k.cluster_role,
                "BACKENDAI_CLUSTER_IDX": str(k.cluster_idx), "BACKENDAI_CLUSTER_LOCAL_RANK": str(k.local_rank),
            }
            configs.append({
                "image": {"canonical": k.image, "labels": image_labels or {}, "registry": registry},
                "session_type": k.session_type, "cluster_role": k.cluster_role, "cluster_idx": k.cluster_idx,
                "local_rank": k.local_rank, "cluster_hostname": k.cluster_hostname,
                "resource_slots": k.requested_slots, "resource_opts": k.resource_opts, "environ": environ,
                "bootstrap_script": sess.bootstrap_script, "startup_command": sess.startup_command,
                "owner": {"access_key": sess.access_key, "user_uuid": str(sess.user_uuid), "user_email": email},
                # resolved and checked when the session was created (services/vfolders/mounts.py)
                "mounts": [{"host_path": m["host_path"], "kernel_path": m["kernel_path"],
                            "permission": m["mount_perm"]} for m in sess.vfolder_mounts or ()],
            })
        cluster_info = {"mode": sess.cluster_mode, "size": sess.cluster_size,
                        "replicas": {"main": 1, "sub": sess.cluster_size - 1}}
        addr = kernels[0].agent_addr
        try:
            await self.ctx.agents.get(addr).create_kernels(
                str(session_id), [str(k.id) for k in kernels], configs, cluster_info)
        except (TimeoutError, AgentError, OSError) as exc:
            log.warning("create_kernels on %s failed: %r", addr, exc)
            await termination.cancel(self.ctx, session_id, "failed-to-start", {"error": {"src": "agent", "repr": repr(exc)}})
