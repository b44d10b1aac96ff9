"""Creating a session: validate the request against the image, the owner's policy and the
resource group, enqueue it (PENDING), and wait (unless enqueue-only) until it settles."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from decimal import Decimal
from typing import Any

from bai.common.types import (
    MAX_SLOT_AMOUNT_EXPONENT,
    SESSION_NAME_RE,
    ResourceSlots,
    parse_binary_size,
    slots_to_json,
)
from bai.manager import errors
from bai.manager.store import agents as agent_store
from bai.manager.store import images as image_store
from bai.manager.store import keypairs as keypair_store
from bai.manager.store import scaling_groups as sgroup_store
from bai.manager.store import sessions as store
from bai.manager.store.keypairs import Requester

from ..context import ManagerContext
from ..images import check_customized_owner, check_registry_allowed
from ..manager_admin import ensure_not_frozen
from ..scheduling import images as image_locality
from ..scheduling.admission import check_capacity, check_create_limits, starts_at_of
from ..schemas import CreateSession
from ..vfolders.mounts import MountRequest
from ..vfolders.mounts import prepare as prepare_mounts
from . import assignment, dependencies
from .lookup import resolve_owner, service_ports_for_client
from .payloads import broadcast_session

__all__ = ["DEFAULT_SHMEM", "SETTLED", "check_session_name", "create"]

#: Statuses after which a blocking create stops waiting.
SETTLED = frozenset({"RUNNING", "ERROR", "CANCELLED", "TERMINATED", "TERMINATING"})
DEFAULT_SHMEM = 64 * 2**20
#: No slot amount is 10**31 or more (not even bytes): larger ones are refused, not computed with.
MAX_AMOUNT_EXPONENT = MAX_SLOT_AMOUNT_EXPONENT


def check_session_name(name: str) -> None:
    """A session's name (at creation and rename): 4-64 ASCII word characters, '.' or '-'."""
    if not SESSION_NAME_RE.match(name) or name == "from-template":
        raise errors.InvalidAPIParameters(
            "Input validation error", {"name": "Session name must be 4-64 ASCII word characters, '.' or '-'."})


async def create(ctx: ManagerContext, requester: Requester, req: CreateSession) -> dict[str, Any]:
    """``POST /session``: the new session (or the live one of that name, when reusable)."""
    ensure_not_frozen(ctx)
    assignment.check_privilege(requester, req)
    owner = await resolve_owner(ctx, requester, req.owner_access_key)
    check_session_name(req.name)
    if req.type == "batch" and not req.startup_command:
        raise errors.InvalidAPIParameters("Batch sessions must have a non-empty startup command.")
    if req.starts_at and req.type != "batch":
        raise errors.InvalidAPIParameters("Parameter starts_at should be used only for batch sessions")
    if req.cluster_size > owner.policy.max_containers_per_session:
        raise errors.QuotaExceeded(
            f"You cannot create session with more than {owner.policy.max_containers_per_session} containers.")

    async with ctx.db.connect() as conn:
        existing = await store.find_by_ref(conn, req.name, owner.access_key)
        if existing:
            return await _existing_session(conn, existing[0], req)

        group_id = await keypair_store.resolve_group(conn, req.domain, req.group, owner.user_uuid)
        if group_id is None or req.domain != owner.domain_name:
            raise errors.InvalidAPIParameters(f"Invalid group or domain name: {req.domain}/{req.group}")
        image = await image_store.resolve(conn, req.image, req.architecture)
        if image is None:
            raise errors.ImageNotFound(f"Unknown image: {req.image} ({req.architecture})")
        await check_registry_allowed(conn, image.registry, req.domain, group_id)
        check_customized_owner(image.labels, owner.user_uuid, req.image)
        sgroup = await _pick_scaling_group(conn, req.config.scaling_group, req.domain, group_id, owner.access_key)
        assigned = await assignment.resolve(ctx, conn, req, sgroup, image.architecture)
        # an image no registry serves runs only where it is
        holders = await image_locality.check_at_create(ctx.etcd, conn, image.name, image.registry, sgroup,
                                                       image.architecture, assigned)
        known_slots = await agent_store.known_slot_types(conn)
        requested, resource_opts = _requested_slots(req, image.labels, known_slots)
        _check_policy(owner, requested, req.cluster_size)
        await check_capacity(conn, sgroup, image.architecture, requested, req.cluster_mode, req.cluster_size,
                             holders, image.name)
        await check_create_limits(conn, owner, {k: v * req.cluster_size for k, v in requested.items()})
        starts_at = starts_at_of(req.starts_at)
        vfolder_mounts = await prepare_mounts(ctx, conn, owner, group_id, MountRequest(
            req.config.mounts or [], req.config.mount_map or {}, req.config.mount_options or {}))
        depends_on = await dependencies.resolve(conn, req.dependencies, owner.access_key)

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
            if assigned is not None:  # the scheduler places it there (services/scheduler.py)
                kernels[-1]["agent"] = assigned[idx] if req.cluster_mode == "multi-node" else assigned[0]
        total = {k: v * req.cluster_size for k, v in requested.items()}
        session = {
            "id": session_id, "creation_id": secrets.token_hex(16), "name": req.name,
            "session_type": req.type, "cluster_mode": req.cluster_mode, "cluster_size": req.cluster_size,
            "domain_name": req.domain, "group_id": group_id, "user_uuid": owner.user_uuid,
            "access_key": owner.access_key, "image": image.name, "architecture": image.architecture,
            "tag": req.tag, "scaling_group_name": sgroup, "requested_slots": slots_to_json(total),
            "environ": environ, "bootstrap_script": req.bootstrap_script,
            "startup_command": req.startup_command, "callback_url": req.callback_url,
            "vfolder_mounts": vfolder_mounts, "starts_at": starts_at,
        }
    waiter = None if req.enqueue_only else ctx.waiters.add(session_id)
    try:
        try:
            async with ctx.db.begin() as conn:
                await store.insert_session(conn, session, kernels)
                await dependencies.save(conn, session_id, depends_on)
        except store.DuplicateSessionName:
            # A concurrent create of this name committed first (the unique index decides):
            # answer as if its session had been there when this request looked.
            async with ctx.db.connect() as conn:
                existing = await store.find_by_ref(conn, req.name, owner.access_key)
                if not existing:  # and it is already gone again
                    raise errors.SessionAlreadyExists("A session of this name was just created.") from None
                return await _existing_session(conn, existing[0], req)
        await broadcast_session(ctx, "session_enqueued", session)
        ctx.request_schedule()
        if waiter is None:
            return {"sessionId": str(session_id), "sessionName": req.name, "status": "PENDING",
                    "servicePorts": [], "created": True}
        status = await _wait(ctx, session_id, waiter, req.max_wait_seconds)
    finally:
        if waiter is not None:
            ctx.waiters.discard(session_id, waiter)
    service_ports: list[dict[str, Any]] = []
    if status == "RUNNING":
        async with ctx.db.connect() as conn:
            main = (await store.kernels_of(conn, session_id))[0]
            service_ports = service_ports_for_client(main.service_ports)
    return {"sessionId": str(session_id), "sessionName": req.name, "status": status,
            "servicePorts": service_ports, "created": True}


async def _pick_scaling_group(conn: Any, wanted: str | None, domain: str, group_id: Any, access_key: str) -> str:
    """The resource group the session runs in: the one asked for, if the domain, the project or
    the keypair is associated with it (and it is active); else "default" when allowed, else the
    first allowed one (the original's choice)."""
    allowed = [r.name for r in await sgroup_store.allowed_scaling_groups(conn, domain, group_id, access_key)]
    if wanted is not None:
        if wanted not in allowed:
            raise errors.ScalingGroupNotFound(
                f"The resource group {wanted!r} is not available to this domain, project or keypair.")
        return wanted
    if not allowed:
        raise errors.ScalingGroupNotFound("No resource group is available to this domain, project or keypair.")
    return "default" if "default" in allowed else allowed[0]


async def _existing_session(conn: Any, row: Any, req: CreateSession) -> dict[str, Any]:
    """The answer to a create whose name a live session of the owner already has: that
    session (reuseIfExists, same image), or 400 session-already-exists."""
    if req.reuse_if_exists and await _same_image(conn, row.image, req.image, req.architecture):
        live_kernels = await store.kernels_of(conn, row.id)
        main = next((k for k in live_kernels if k.cluster_role == "main"), None)
        return {
            "sessionId": str(row.id), "sessionName": row.name, "status": row.status,
            "service_ports": main.service_ports if main else [], "created": False,
        }
    raise errors.SessionAlreadyExists(data={"existingSessionId": str(row.id)})


async def _same_image(conn: Any, current: str | None, ref: str, arch: str) -> bool:
    if current == ref:
        return True
    resolved = await image_store.resolve(conn, ref, arch)
    return resolved is not None and resolved.name == current


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


def _requested_slots(
    req: CreateSession, labels: dict[str, str], known: set[str],
) -> tuple[ResourceSlots, dict[str, Any]]:
    raw = dict(req.config.resources or {})
    requested: ResourceSlots = {}
    for key, value in raw.items():
        try:
            amount = Decimal(parse_binary_size(value)) if key == "mem" else Decimal(str(value))
        except (ValueError, ArithmeticError):
            raise errors.InvalidAPIParameters(
                "Input validation error", {f"config.resources.{key}": f"invalid amount: {value!r}"}) from None
        # NaN would not even compare; an exponent like 1e999999999 would take minutes to print.
        if not amount.is_finite() or amount.adjusted() > MAX_AMOUNT_EXPONENT:
            raise errors.InvalidAPIParameters(
                "Input validation error", {f"config.resources.{key}": f"invalid amount: {str(value)[:32]!r}"})
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


def _check_policy(owner: Requester, requested: ResourceSlots, cluster_size: int) -> None:
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


async def _wait(ctx: ManagerContext, session_id: uuid.UUID, waiter: asyncio.Future[str], max_wait: int) -> str:
    # The status may have settled before the waiter was registered: check the row once.
    async with ctx.db.connect() as conn:
        row = await store.get(conn, session_id)
    if row is not None and row.status in SETTLED:
        return str(row.status)
    timeout = max_wait or ctx.config.manager.default_create_wait or None
    try:
        return await asyncio.wait_for(asyncio.shield(waiter), timeout)
    except TimeoutError:
        return "TIMEOUT"
