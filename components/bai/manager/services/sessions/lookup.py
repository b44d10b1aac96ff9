"""Finding sessions and describing them: whose session a request acts on (``owner_access_key``),
one session by name or id prefix, and a session's information as clients read it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bai.manager import errors
from bai.manager.store import keypairs as keypair_store
from bai.manager.store import sessions as store
from bai.manager.store.keypairs import Requester

from ..context import ManagerContext
from .queries import query_counter

__all__ = ["describe", "get_one", "resolve_owner", "running_main", "service_ports_for_client"]


async def resolve_owner(ctx: ManagerContext, requester: Requester, owner_access_key: str | None) -> Requester:
    """Admins may act on behalf of another keypair (``owner_access_key``)."""
    if not owner_access_key or owner_access_key == requester.access_key:
        return requester
    async with ctx.db.connect() as conn:
        owner = await keypair_store.get_requester(conn, owner_access_key)
    if owner is None:
        raise errors.InvalidAPIParameters("No such access key: owner_access_key")
    if requester.is_superadmin or (requester.role == "admin" and owner.domain_name == requester.domain_name
                                   and not owner.is_superadmin):
        return owner
    raise errors.GenericForbidden("Only admins can act on behalf of other keypairs.")


async def get_one(conn: Any, ref: str, access_key: str | None, include_dead: bool = False) -> Any:
    """The one session ``ref`` (a name or an id prefix) names; 404 when none, 400 when several."""
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


async def running_main(ctx: ManagerContext, requester: Requester, ref: str,
                       owner_access_key: str | None) -> tuple[Requester, Any, Any]:
    """The owner, the session and its main kernel, which must be running on an agent (else 400)."""
    owner = await resolve_owner(ctx, requester, owner_access_key)
    async with ctx.db.connect() as conn:
        row = await get_one(conn, ref, owner.access_key)
        kernels = await store.kernels_of(conn, row.id)
    main = next((k for k in kernels if k.cluster_role == "main"), kernels[0] if kernels else None)
    if row.status != "RUNNING" or main is None or main.status != "RUNNING" or not main.agent_addr:
        raise errors.InvalidAPIParameters(f"The session is not running (status: {row.status}).")
    return owner, row, main


async def describe(ctx: ManagerContext, requester: Requester, ref: str,
                   owner_access_key: str | None) -> dict[str, Any]:
    """``GET /session/{ref}``: the session as the original's client reads it."""
    owner = await resolve_owner(ctx, requester, owner_access_key)
    async with ctx.db.connect() as conn:
        row = await get_one(conn, ref, owner.access_key)
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
        "numQueriesExecuted": row.num_queries + query_counter(ctx).unwritten(row.id), "lastStat": main.last_stat,
        "idleChecks": {},
        "mounts": [m["name"] for m in row.vfolder_mounts or ()],
        # The main kernel's service ports, with the host ports the agent published them on.
        "servicePorts": [{**client, "host_ports": sp.get("host_ports", [])} for sp, client in
                         zip(main.service_ports or [], service_ports_for_client(main.service_ports or []),
                             strict=True)],
    }


def service_ports_for_client(stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A kernel's stored service ports in the shape create answers with."""
    out = []
    for sp in stored:
        item = {"name": sp["name"], "protocol": sp["protocol"], "ports": sp.get("container_ports", [])}
        for opt in ("url_template", "allowed_arguments", "allowed_envs"):
            if opt in sp:
                item[opt] = sp[opt]
        out.append(item)
    return out
