"""Session domain logic: create (validate, enqueue, wait), destroy, execute, describe."""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from bai.common.agent_rpc import LOG_TAIL_BYTES, LOG_TAIL_LINES, AgentError, KernelNotFound
from bai.common.types import (
    SESSION_NAME_RE,
    KernelStatus,
    ResourceSlots,
    SessionStatus,
    parse_binary_size,
    slots_from_json,
    slots_to_json,
)
from bai.manager import errors
from bai.manager.store import agents as agent_store
from bai.manager.store import images as image_store
from bai.manager.store import keypairs as keypair_store
from bai.manager.store import sessions as store
from bai.manager.store import tables as t
from bai.manager.store.keypairs import Requester

from .context import ManagerContext
from .schemas import CreateSession

log = logging.getLogger(__name__)

#: Statuses after which a blocking create stops waiting.
SETTLED = frozenset({"RUNNING", "ERROR", "CANCELLED", "TERMINATED", "TERMINATING"})
DEFAULT_SHMEM = 64 * 2**20


def _labels_min(labels: dict[str, str]) -> dict[str, Decimal]:
    mins: dict[str, Decimal] = {"cpu": Decimal(1), "mem": Decimal(2**30)}
    prefix = "ai.backend.resource.min."
    found = {k[len(prefix):]: v for k, v in labels.items() if k.startswith(prefix)}
    if found:
        mins = {}
        for slot, value in found.items():
            mins[slot] = Decimal(parse_binary_size(value)) if slot == "mem" else Decimal(value)
        mins.setdefault("cpu", Decimal(1))
        mins.setdefault("mem", Decimal(2**30))
    return mins


def service_ports_for_client(stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for sp in stored:
        item = {"name": sp["name"], "protocol": sp["protocol"], "ports": sp.get("container_ports", [])}
        for opt in ("url_template", "allowed_arguments", "allowed_envs"):
            if opt in sp:
                item[opt] = sp[opt]
        out.append(item)
    return out


#: Attempts at closing a session's rows when PostgreSQL picks that transaction to break a deadlock.
CLOSE_ATTEMPTS = 3


def _is_deadlock(exc: sa.exc.DBAPIError) -> bool:
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)
    return state == "40P01"


class SessionService:
    def __init__(self, ctx: ManagerContext) -> None:
        self.ctx = ctx

    # ---------------------------------------------------------------- owner resolution
    async def resolve_owner(self, requester: Requester, owner_access_key: str | None) -> Requester:
        """Admins may act on behalf of another keypair (``owner_access_key``)."""
        if not owner_access_key or owner_access_key == requester.access_key:
            return requester
        async with self.ctx.db.connect() as conn:
            owner = await keypair_store.get_requester(conn, owner_access_key)
        if owner is None:
            raise errors.InvalidAPIParameters("No such access key: owner_access_key")
        if requester.is_superadmin or (requester.role == "admin" and owner.domain_name == requester.domain_name
                                       and not owner.is_superadmin):
            return owner
        raise errors.GenericForbidden("Only admins can act on behalf of other keypairs.")

    # ---------------------------------------------------------------- create
    async def create(self, requester: Requester, req: CreateSession) -> dict[str, Any]:
        owner = await self.resolve_owner(requester, req.owner_access_key)
        if not SESSION_NAME_RE.match(req.name) or req.name == "from-template":
            raise errors.InvalidAPIParameters(
                "Input validation error", {"name": "Session name must be 4-64 ASCII word characters, '.' or '-'."})
        if req.type == "batch" and not req.startup_command:
            raise errors.InvalidAPIParameters("Batch sessions must have a non-empty startup command.")
        if req.starts_at and req.type != "batch":
            raise errors.InvalidAPIParameters("Parameter starts_at should be used only for batch sessions")
        if req.cluster_size > owner.policy.max_containers_per_session:
            raise errors.QuotaExceeded(
                f"You cannot create session with more than {owner.policy.max_containers_per_session} containers.")

        async with self.ctx.db.connect() as conn:
            existing = await store.find_by_ref(conn, req.name, owner.access_key)
            if existing:
                return await self._existing_session(conn, existing[0], req)

            group_id = await keypair_store.resolve_group(conn, req.domain, req.group, owner.user_uuid)
            if group_id is None or req.domain != owner.domain_name:
                raise errors.InvalidAPIParameters(f"Invalid group or domain name: {req.domain}/{req.group}")
            image = await image_store.resolve(conn, req.image, req.architecture)
            if image is None:
                raise errors.ImageNotFound(f"Unknown image: {req.image} ({req.architecture})")
            sgroup = req.config.scaling_group or "default"
            allowed = await conn.scalar(
                sa.select(sa.func.count()).select_from(t.sgroups_for_domains).where(
                    t.sgroups_for_domains.c.scaling_group == sgroup, t.sgroups_for_domains.c.domain == req.domain))
            if not allowed:
                raise errors.ScalingGroupNotFound(f"The resource group {sgroup!r} is not available to this domain.")
            known_slots = await agent_store.known_slot_types(conn)
            requested, resource_opts = self._requested_slots(req, image.labels, known_slots)
            self._check_policy(owner, requested, req.cluster_size)

            session_id = uuid.uuid4()
            environ = dict(req.config.environ or {})
            kernels: list[dict[str, Any]] = []
            for idx in range(req.cluster_size):
                role, role_idx = ("main", 1) if idx == 0 else ("sub", idx)
                kernels.append({
                    "id": uuid.uuid4(), "session_id": session_id, "session_name": req.name,
                    "session_type": req.type, "cluster_role": role, "cluster_idx": role_idx, "local_rank": idx,
                    "cluster_hostname": f"{role}{role_idx}", "scaling_group": sgroup,
                    "domain_name": req.domain, "group_id": group_id, "user_uuid": owner.user_uuid,
                    "access_key": owner.access_key, "image": image.name, "architecture": image.architecture,
                    "registry": image.registry, "requested_slots": slots_to_json(requested),
                    "resource_opts": resource_opts, "environ": environ,
                })
            total = {k: v * req.cluster_size for k, v in requested.items()}
            session = {
                "id": session_id, "creation_id": secrets.token_hex(16), "name": req.name,
                "session_type": req.type, "cluster_mode": req.cluster_mode, "cluster_size": req.cluster_size,
                "domain_name": req.domain, "group_id": group_id, "user_uuid": owner.user_uuid,
                "access_key": owner.access_key, "image": image.name, "architecture": image.architecture,
                "tag": req.tag, "scaling_group_name": sgroup, "requested_slots": slots_to_json(total),
                "environ": environ, "bootstrap_script": req.bootstrap_script,
                "startup_command": req.startup_command, "callback_url": req.callback_url,
            }
        waiter = None if req.enqueue_only else self.ctx.waiters.add(session_id)
        try:
            try:
                async with self.ctx.db.begin() as conn:
                    await store.insert_session(conn, session, kernels)
            except store.DuplicateSessionName:
                # A concurrent create of this name committed first (the unique index decides):
                # answer as if its session had been there when this request looked.
                async with self.ctx.db.connect() as conn:
                    existing = await store.find_by_ref(conn, req.name, owner.access_key)
                    if not existing:  # and it is already gone again
                        raise errors.SessionAlreadyExists("A session of this name was just created.") from None
                    return await self._existing_session(conn, existing[0], req)
            await self.ctx.events.broadcast("session_enqueued", self.ctx.manager_id, **self._event_args(session))
            self.ctx.request_schedule()
            if waiter is None:
                return {"sessionId": str(session_id), "sessionName": req.name, "status": "PENDING",
                        "servicePorts": [], "created": True}
            status = await self._wait(session_id, waiter, req.max_wait_seconds)
        finally:
            if waiter is not None:
                self.ctx.waiters.discard(session_id, waiter)
        service_ports: list[dict[str, Any]] = []
        if status == "RUNNING":
            async with self.ctx.db.connect() as conn:
                main = (await store.kernels_of(conn, session_id))[0]
                service_ports = service_ports_for_client(main.service_ports)
        return {"sessionId": str(session_id), "sessionName": req.name, "status": status,
                "servicePorts": service_ports, "created": True}

    async def _existing_session(self, conn: Any, row: Any, req: CreateSession) -> dict[str, Any]:
        """The answer to a create whose name a live session of the owner already has: that
        session (reuseIfExists, same image), or 400 session-already-exists."""
        if req.reuse_if_exists and await self._same_image(conn, row.image, req.image, req.architecture):
            live_kernels = await store.kernels_of(conn, row.id)
            main = next((k for k in live_kernels if k.cluster_role == "main"), None)
            return {
                "sessionId": str(row.id), "sessionName": row.name, "status": row.status,
                "service_ports": main.service_ports if main else [], "created": False,
            }
        raise errors.SessionAlreadyExists(data={"existingSessionId": str(row.id)})

    async def _same_image(self, conn: Any, current: str | None, ref: str, arch: str) -> bool:
        if current == ref:
            return True
        resolved = await image_store.resolve(conn, ref, arch)
        return resolved is not None and resolved.name == current

    def _requested_slots(
        self, req: CreateSession, labels: dict[str, str], known: set[str],
    ) -> tuple[ResourceSlots, dict[str, Any]]:
        raw = dict(req.config.resources or {})
        requested: ResourceSlots = {}
        for key, value in raw.items():
            try:
                amount = Decimal(parse_binary_size(value)) if key == "mem" else Decimal(str(value))
            except (ValueError, ArithmeticError):
                raise errors.InvalidAPIParameters(
                    "Input validation error", {f"config.resources.{key}": f"invalid amount: {value!r}"}) from None
            if amount < 0:
                raise errors.InvalidAPIParameters(
                    "Input validation error", {f"config.resources.{key}": "must not be negative"})
            if key not in known:
                if amount != 0:
                    raise errors.InvalidAPIParameters(f"Unknown requested resource slot: {key}")
                continue
            requested[key] = amount
        mins = _labels_min(labels)
        for slot in ("cpu", "mem"):
            if requested.get(slot, Decimal(0)) == 0:
                requested[slot] = mins[slot]
        opts = dict(req.config.resource_opts or {})
        shmem_raw = opts.get("shmem", labels.get("ai.backend.resource.preferred.shmem", DEFAULT_SHMEM))
        try:
            shmem = parse_binary_size(shmem_raw)
        except ValueError:
            raise errors.InvalidAPIParameters("Input validation error",
                                              {"config.resource_opts.shmem": "invalid size"}) from None
        opts["shmem"] = shmem
        too_small = [s for s, m in mins.items() if requested.get(s, Decimal(0)) < m]
        if too_small:
            raise errors.InvalidAPIParameters(
                "Your resource request is smaller than the minimum required by the image. "
                + ", ".join(f"{s}: {requested.get(s)} < {mins[s]}" for s in too_small))
        if shmem >= requested["mem"]:
            raise errors.InvalidAPIParameters("Shared memory should be less than the main memory.")
        return requested, opts

    def _check_policy(self, owner: Requester, requested: ResourceSlots, cluster_size: int) -> None:
        limits = owner.policy.total_resource_slots
        over = [
            f"{slot}: {requested[slot] * cluster_size} > {limit}"
            for slot, limit in limits.items()
            if slot in requested and requested[slot] * cluster_size > limit
        ]
        if over:
            raise errors.QuotaExceeded(
                "The resource request exceeds the keypair resource policy "
                f"{owner.policy.name!r} ({'; '.join(over)}).")

    async def _wait(self, session_id: uuid.UUID, waiter: asyncio.Future[str], max_wait: int) -> str:
        # The status may have settled before the waiter was registered: check the row once.
        async with self.ctx.db.connect() as conn:
            row = await store.get(conn, session_id)
        if row is not None and row.status in SETTLED:
            return str(row.status)
        timeout = max_wait or self.ctx.config.manager.default_create_wait or None
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            return "TIMEOUT"

    @staticmethod
    def _event_args(session: dict[str, Any] | Any, **extra: Any) -> dict[str, Any]:
        get = session.get if isinstance(session, dict) else (lambda k, d=None: getattr(session, k, d))
        return {"sessionId": str(get("id")), "sessionName": get("name"), "ownerAccessKey": get("access_key"),
                "reason": extra.pop("reason", None), "exitCode": extra.pop("exitCode", None), **extra}

    @staticmethod
    def _kernel_event_args(kernel: Any, reason: str | None, exit_code: int | None) -> dict[str, Any]:
        """What a ``kernel_*`` broadcast carries: the SSE payload of the original, in its key order."""
        return {"reason": reason, "sessionName": kernel.session_name, "ownerAccessKey": kernel.access_key,
                "sessionId": str(kernel.session_id), "exitCode": exit_code, "kernelId": str(kernel.id),
                "clusterRole": kernel.cluster_role, "clusterIdx": kernel.cluster_idx}

    async def broadcast_kernel(self, name: str, kernel: Any, reason: str | None,
                               exit_code: int | None = None) -> None:
        await self.ctx.events.broadcast(name, self.ctx.manager_id,
                                        **self._kernel_event_args(kernel, reason, exit_code))

    # ---------------------------------------------------------------- lookup
    async def get_one(self, conn: Any, ref: str, access_key: str | None, include_dead: bool = False) -> Any:
        if "\x00" in ref:  # no session has it, and PostgreSQL refuses to compare with it
            raise errors.SessionNotFound(f"Session (id={ref!r}) does not exist.")
        rows = await store.find_by_ref(conn, ref, access_key, include_dead=include_dead)
        if not rows:
            raise errors.SessionNotFound(f"Session (id={ref}) does not exist.")
        if len(rows) > 1:
            raise errors.TooManySessionsMatched(data={"matches": [
                {"id": str(r.id), "name": r.name, "status": r.status, "created_at": r.created_at.isoformat()}
                for r in rows]})
        return rows[0]

    async def info(self, requester: Requester, ref: str, owner_access_key: str | None) -> dict[str, Any]:
        owner = await self.resolve_owner(requester, owner_access_key)
        async with self.ctx.db.connect() as conn:
            row = await self.get_one(conn, ref, owner.access_key)
            kernels = await store.kernels_of(conn, row.id)
        main = kernels[0]
        now = datetime.now(UTC)
        return {
            "domainName": row.domain_name, "groupId": str(row.group_id), "userId": str(row.user_uuid),
            "lang": row.image, "image": row.image, "architecture": row.architecture,
            "registry": main.registry, "tag": row.tag, "containerId": main.container_id,
            # The original sends Python reprs here; real JSON objects parse in its client too.
            "occupiedSlots": main.occupied_slots, "occupyingSlots": row.occupying_slots,
            "requestedSlots": row.requested_slots, "occupiedShares": {}, "environ": row.environ,
            "resourceOpts": {k.cluster_hostname: k.resource_opts for k in kernels},
            "status": row.status, "statusInfo": row.status_info or "", "statusData": row.status_data or {},
            "age": int((now - row.created_at).total_seconds() * 1000),
            "creationTime": str(row.created_at),
            "terminationTime": str(row.terminated_at) if row.terminated_at else None,
            "numQueriesExecuted": row.num_queries, "lastStat": main.last_stat,
            "idleChecks": {},
        }

    # ---------------------------------------------------------------- destroy
    async def destroy(self, requester: Requester, ref: str, *, forced: bool,
                      owner_access_key: str | None) -> dict[str, Any]:
        owner = await self.resolve_owner(requester, owner_access_key)
        async with self.ctx.db.connect() as conn:
            row = await self.get_one(conn, ref, owner.access_key)
            kernels = await store.kernels_of(conn, row.id)
        status = SessionStatus(row.status)
        if status == SessionStatus.PENDING:
            await self.cancel(row.id, "user-requested")
            return {"stats": {"status": "cancelled"}}
        if status == SessionStatus.PULLING or (
            status in (SessionStatus.SCHEDULED, SessionStatus.PREPARING, SessionStatus.TERMINATING,
                       SessionStatus.ERROR) and not forced):
            raise errors.GenericForbidden(f"Cannot destroy a session in {status.value} state without forced=true.")
        terminating = []
        async with self.ctx.db.begin() as conn:
            await store.set_session_status(conn, row.id, SessionStatus.TERMINATING, info="user-requested")
            for k in kernels:
                if await store.set_kernel_status(conn, k.id, KernelStatus.TERMINATING,
                                                 only_from=["SCHEDULED", "PREPARING", "PULLING", "RUNNING",
                                                            "RESTARTING", "ERROR"]):
                    terminating.append(k)
        await self.ctx.events.broadcast("session_terminating", self.ctx.manager_id,
                                        **self._event_args(row, reason="user-requested"))
        for k in terminating:  # the exit code is not known yet: -1, as the original sends
            await self.broadcast_kernel("kernel_terminating", k, "user-requested", -1)
        stats: dict[str, Any] = {}
        results = await asyncio.gather(*[self._destroy_kernel(k, "user-requested") for k in kernels],
                                       return_exceptions=True)
        for k, res in zip(kernels, results, strict=True):
            if isinstance(res, BaseException):
                log.warning("destroying kernel %s failed: %r", k.id, res)
            elif k.cluster_role == "main":
                stats = res
        await self.finish_termination(row.id, "user-requested")
        return {"stats": stats or {"status": "terminated"}}

    async def _destroy_kernel(self, kernel: Any, reason: str) -> dict[str, Any]:
        if not kernel.agent_addr:
            return {}
        try:
            return await self.ctx.agents.get(kernel.agent_addr).destroy_kernel(
                str(kernel.id), str(kernel.session_id), reason)
        except KernelNotFound:
            return {"status": "terminated"}

    async def finish_termination(self, session_id: uuid.UUID, reason: str,
                                 exit_codes: dict[uuid.UUID, int | None] | None = None) -> None:
        """Mark every kernel TERMINATED, release their slots and close the session.
        ``exit_codes`` holds what agents reported for some kernels (for the kernel_terminated event)."""
        live = [s.value for s in KernelStatus if s not in (KernelStatus.TERMINATED, KernelStatus.CANCELLED)]
        await self.close(session_id, SessionStatus.TERMINATED, KernelStatus.TERMINATED, reason,
                         kernels_from=live, exit_codes=exit_codes,
                         sessions_from=["TERMINATING", "RUNNING", "ERROR", "PREPARING", "SCHEDULED",
                                        "RUNNING_DEGRADED", "RESTARTING"])

    async def cancel(self, session_id: uuid.UUID, reason: str, data: dict[str, Any] | None = None) -> None:
        """A session that never started: CANCELLED, with its slots released."""
        not_started = ["PENDING", "SCHEDULED", "PREPARING", "PULLING"]
        await self.close(session_id, SessionStatus.CANCELLED, KernelStatus.CANCELLED, reason, data=data,
                         kernels_from=not_started, sessions_from=not_started)

    async def close(
        self, session_id: uuid.UUID, status: SessionStatus, kernel_status: KernelStatus, reason: str, *,
        kernels_from: list[str], sessions_from: list[str], data: dict[str, Any] | None = None,
        exit_codes: dict[uuid.UUID, int | None] | None = None,
    ) -> None:
        """Move a session and its kernels to a final status in one transaction, release their
        agents' slots, then wake waiters, tell listeners and let the scheduler use the room.

        Listeners get ``kernel_<status>`` for each kernel moved here, then ``session_<status>``:
        whoever moves the rows announces them, so each kernel is announced once and before its
        session, however agent events and API calls race."""
        for attempt in range(1, CLOSE_ATTEMPTS + 1):
            try:
                async with self.ctx.db.begin() as conn:
                    # The session row first, as the scheduler's prepare step takes it; PostgreSQL
                    # breaks a cycle with a path that locks in another order by failing one side,
                    # and this side then simply runs again.
                    await conn.execute(sa.select(t.sessions.c.id).where(t.sessions.c.id == session_id)
                                       .with_for_update())
                    kernels = await store.kernels_of(conn, session_id)
                    moved = [k for k in kernels
                             if await store.set_kernel_status(conn, k.id, kernel_status, info=reason,
                                                              only_from=kernels_from)]
                    changed = await store.set_session_status(conn, session_id, status, info=reason, data=data,
                                                             only_from=sessions_from)
                    for agent in {k.agent for k in kernels if k.agent}:
                        await agent_store.refresh_occupied(conn, agent)
                    row = await store.get(conn, session_id)
                break
            except sa.exc.DBAPIError as exc:
                if attempt == CLOSE_ATTEMPTS or not _is_deadlock(exc):
                    raise
                log.info("closing session %s met a deadlock; running it again", session_id)
        try:
            for k in moved:
                exit_code: int | None = None
                if kernel_status == KernelStatus.TERMINATED:
                    code = (exit_codes or {}).get(k.id)
                    exit_code = -1 if code is None else code  # -1: unknown, as in the original
                await self.broadcast_kernel(f"kernel_{kernel_status.value.lower()}", k, reason, exit_code)
            if changed and row is not None:
                await self.ctx.events.broadcast(f"session_{status.value.lower()}", self.ctx.manager_id,
                                                **self._event_args(row, reason=reason))
        finally:  # wake waiters after the broadcasts, so clients that act on it never overtake them
            if changed and row is not None:
                self.ctx.waiters.notify(session_id, status.value)
                self.ctx.request_schedule()

    # ---------------------------------------------------------------- execute
    async def route(self, requester: Requester, ref: str) -> Any:
        if "\x00" in ref:  # as in get_one
            raise errors.SessionNotFound(f"Session (id={ref!r}) does not exist.")
        async with self.ctx.db.connect() as conn:
            route = await store.main_kernel_route(conn, ref, requester.access_key)
            if route is None:
                await self.get_one(conn, ref, requester.access_key)  # raises the precise 404
                raise errors.SessionNotFound(f"Session (id={ref}) does not exist.")
        if route.status != "RUNNING" or not route.agent_addr:
            raise errors.InvalidAPIParameters(f"The session is not running (status: {route.session_status}).")
        return route

    async def execute(self, route: Any, *, mode: str, run_id: str | None, code: str,
                      opts: dict[str, Any] | None, flush_timeout: float) -> dict[str, Any]:
        try:
            return await self.ctx.agents.get(route.agent_addr).execute(
                str(route.session_id), str(route.kernel_id), run_id, mode,  # type: ignore[arg-type]
                code, opts or {}, flush_timeout)
        except KernelNotFound:
            # The kernel vanished under us: the original answers a synthetic finished/130.
            return {"runId": run_id, "status": "finished", "exitCode": 130, "options": None,
                    "files": [], "console": []}
        except AgentError as exc:
            if exc.status == 400:
                raise errors.InvalidAPIParameters(exc.msg or exc.title) from exc
            raise errors.KernelExecutionFailed(exc.msg, data={"agent-details": exc.to_json()}) from exc

    async def logs(self, requester: Requester, ref: str) -> str:
        """The tail of the main kernel's log: at most LOG_TAIL_LINES lines and LOG_TAIL_BYTES
        bytes (the agent never reads a whole log into memory, nor do we)."""
        route = await self.route(requester, ref)
        try:
            return await self.ctx.agents.get(route.agent_addr).get_logs(
                str(route.kernel_id), tail_lines=LOG_TAIL_LINES, max_bytes=LOG_TAIL_BYTES)
        except AgentError as exc:
            raise errors.InternalServerError(exc.msg) from exc

    async def count_query(self, session_id: uuid.UUID) -> None:
        async with self.ctx.db.begin() as conn:
            await conn.execute(t.sessions.update().where(t.sessions.c.id == session_id)
                               .values(num_queries=t.sessions.c.num_queries + 1))


def occupancy(rows: list[Any]) -> ResourceSlots:
    total: ResourceSlots = {}
    for r in rows:
        for k, v in slots_from_json(r.requested_slots).items():
            total[k] = total.get(k, Decimal(0)) + v
    return total
