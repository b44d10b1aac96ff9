"""ComputeSession (and its ComputeContainer kernels): SDL, resolvers and row -> object mapping."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from ariadne import ObjectType, QueryType

from bai.common.types import SessionStatus
from bai.manager.services import gql_queries as svc

from .context import GQLContext, context_of

QUERIES = '''
  "A session by ID, or null when it does not exist or lies outside the caller's scope."
  compute_session(id: UUID!, domain_name: String, access_key: String): ComputeSession

  """
  Sessions visible to the caller: users see their own access key's, domain admins their
  domain's, superadmins all. `status` is a comma-separated list of session statuses.
  """
  compute_session_list(
    limit: Int!
    offset: Int!
    filter: String
    order: String
    domain_name: String
    group_id: UUID
    access_key: String
    status: String
  ): ComputeSessionList
'''

SDL = '''
type ComputeSession implements Item {
  id: ID
  # identity
  session_id: UUID
  main_kernel_id: UUID
  tag: String
  name: String
  type: String
  main_kernel_role: String
  # image
  image: String
  architecture: String
  registry: String
  cluster_mode: String
  cluster_size: Int
  # ownership
  domain_name: String
  group_name: String
  group_id: UUID
  user_email: String
  full_name: String
  user_id: UUID
  access_key: String
  # status
  status: String
  status_changed: DateTime
  status_info: String
  status_data: JSONString
  status_history: JSONString
  created_at: DateTime
  terminated_at: DateTime
  starts_at: DateTime
  scheduled_at: DateTime
  startup_command: String
  result: String
  idle_checks: JSONString
  # resources
  agent_ids: [String]
  agents: [String]
  resource_opts: JSONString
  scaling_group: String
  service_ports: JSONString
  occupying_slots: JSONString
  occupied_slots: JSONString
  requested_slots: JSONString
  # mounted virtual folders: their names, and their ids
  mounts: [String]
  vfolder_mounts: [String]
  # statistics
  num_queries: BigInt
  # owned containers (kernels)
  containers: [ComputeContainer]
  # relations
  dependencies: [ComputeSession]
}

type ComputeSessionList implements PaginatedList {
  items: [ComputeSession]!
  total_count: Int!
}

type ComputeContainer implements Item {
  id: ID
  kernel_id: UUID
  idx: Int
  role: String
  hostname: String
  cluster_idx: Int
  local_rank: Int
  cluster_role: String
  cluster_hostname: String
  session_id: UUID
  image: String
  architecture: String
  registry: String
  status: String
  status_changed: DateTime
  status_info: String
  status_data: JSONString
  created_at: DateTime
  terminated_at: DateTime
  starts_at: DateTime
  scheduled_at: DateTime
  agent: String
  agent_addr: String
  container_id: String
  resource_opts: JSONString
  occupied_slots: JSONString
  live_stat: JSONString
  last_stat: JSONString
  preopen_ports: [Int]
}
'''

SESSION_STATUSES = frozenset(s.value for s in SessionStatus)
_DEAD = frozenset({"TERMINATED", "CANCELLED"})

query = QueryType()
compute_session = ObjectType("ComputeSession")
BINDABLES = (query, compute_session)


# ------------------------------------------------------------------ row -> object

class KernelBatch:
    """Loads the kernels of every session on a page in one query, on first use."""

    def __init__(self, ctx: GQLContext, session_ids: list[uuid.UUID]) -> None:
        self._ctx = ctx
        self._ids = session_ids
        self._lock = asyncio.Lock()
        self._rows: dict[uuid.UUID, list[Any]] | None = None
        self._stats: dict[uuid.UUID, dict[str, Any]] | None = None

    async def get(self, session_id: uuid.UUID) -> list[Any]:
        async with self._lock:
            if self._rows is None:
                self._rows = await svc.kernels_by_session(self._ctx.manager.db, self._ids)
        return self._rows.get(session_id, [])

    async def live_stat(self, kernel: Any) -> dict[str, Any] | None:
        """The kernel's live statistics (of every running kernel on the page, read at once)."""
        async with self._lock:
            if self._stats is None:
                running = [k.id for rows in (self._rows or {}).values() for k in rows if k.status == "RUNNING"]
                self._stats = await svc.live_stats(self._ctx.manager.redis_stream, running)
        return self._stats.get(kernel.id)


def history_time(history: dict[str, Any] | None, status: str) -> datetime | None:
    """When a row entered ``status`` according to its status_history (ISO strings)."""
    raw = (history or {}).get(status)
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None


def _idle_checks(row: Any, now: datetime) -> dict[str, Any]:
    """The shape of the original's idle-check report; only the session-lifetime check exists."""
    lifetime = row.max_session_lifetime or 0
    remaining = None
    if lifetime > 0 and row.status not in _DEAD:
        remaining = max(0.0, lifetime - (now - row.created_at).total_seconds())
    return {"session_lifetime": {"remaining": remaining, "remaining_time_type": "expire_after", "extra": None}}


def _kernel_role(session_type: str | None) -> str:
    return {"inference": "INFERENCE", "system": "SYSTEM"}.get(session_type or "", "COMPUTE")


def session_obj(row: Any, batch: KernelBatch, now: datetime) -> dict[str, Any]:
    """A row of store.sessions.session_page as a ComputeSession."""
    history = row.status_history or {}
    return {
        "id": row.id, "session_id": row.id, "main_kernel_id": row.main_kernel_id, "tag": row.tag,
        "name": row.name, "type": (row.session_type or "").upper(), "main_kernel_role": _kernel_role(row.session_type),
        "image": row.image, "architecture": row.architecture or row.main_architecture,
        "registry": row.main_registry, "cluster_mode": row.cluster_mode, "cluster_size": row.cluster_size,
        "domain_name": row.domain_name, "group_name": row.group_name, "group_id": row.group_id,
        "user_email": row.user_email, "full_name": row.full_name, "user_id": row.user_uuid,
        "access_key": row.access_key,
        "status": row.status, "status_changed": history_time(history, row.status) or row.created_at,
        "status_info": row.status_info or "", "status_data": row.status_data or {}, "status_history": history,
        "created_at": row.created_at, "terminated_at": row.terminated_at, "starts_at": row.starts_at,
        "scheduled_at": history_time(history, "SCHEDULED"), "startup_command": row.startup_command,
        "result": row.result, "idle_checks": _idle_checks(row, now),
        "scaling_group": row.scaling_group_name, "service_ports": row.main_service_ports or [],
        "occupying_slots": row.occupying_slots, "occupied_slots": row.occupying_slots,
        "requested_slots": row.requested_slots, "num_queries": row.num_queries,
        "mounts": [m["name"] for m in row.vfolder_mounts or ()],
        "vfolder_mounts": [m["vfid"].rpartition("/")[2] for m in row.vfolder_mounts or ()],
        "_kernels": batch,
    }


def container_obj(k: Any, live_stat: dict[str, Any] | None = None) -> dict[str, Any]:
    """A kernel row as a ComputeContainer."""
    history = k.status_history or {}
    return {
        "id": k.id, "kernel_id": k.id, "idx": k.cluster_idx, "role": k.cluster_role, "hostname": k.cluster_hostname,
        "cluster_idx": k.cluster_idx, "local_rank": k.local_rank, "cluster_role": k.cluster_role,
        "cluster_hostname": k.cluster_hostname, "session_id": k.session_id,
        "image": k.image, "architecture": k.architecture, "registry": k.registry,
        "status": k.status, "status_changed": k.status_changed, "status_info": k.status_info or "",
        "status_data": k.status_data or {}, "created_at": k.created_at, "terminated_at": k.terminated_at,
        "starts_at": None, "scheduled_at": history_time(history, "SCHEDULED"),
        "agent": k.agent, "agent_addr": k.agent_addr, "container_id": k.container_id,
        "resource_opts": k.resource_opts, "occupied_slots": k.occupied_slots,
        # What the agent measured at its last heartbeat; the last stored figures once it ended.
        "live_stat": live_stat if live_stat is not None else k.last_stat, "last_stat": k.last_stat,
        "preopen_ports": [],
    }


# ------------------------------------------------------------------ resolvers

@query.field("compute_session_list")
async def resolve_compute_session_list(
    _: Any, info: Any, limit: int, offset: int, filter: str | None = None, order: str | None = None,
    domain_name: str | None = None, group_id: uuid.UUID | None = None, access_key: str | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    ctx = context_of(info)
    svc.check_page(limit, offset, ctx.max_page_size)
    domain_name, access_key = svc.scope(ctx.requester, domain_name, access_key, autofill=False)
    page = await svc.session_page(
        ctx.manager.db, svc.SessionScope(domain_name, group_id, access_key), limit=limit, offset=offset,
        statuses=svc.statuses(status, SESSION_STATUSES, "session"), filter_=filter, order=order)
    batch = KernelBatch(ctx, [r.id for r in page.rows])
    now = datetime.now(UTC)
    return {"items": [session_obj(r, batch, now) for r in page.rows], "total_count": page.total_count}


@query.field("compute_session")
async def resolve_compute_session(
    _: Any, info: Any, id: uuid.UUID, domain_name: str | None = None, access_key: str | None = None,
) -> dict[str, Any] | None:
    ctx = context_of(info)
    domain_name, access_key = svc.scope(ctx.requester, domain_name, access_key, autofill=False)
    row = await svc.session(ctx.manager.db, id, svc.SessionScope(domain_name, None, access_key))
    if row is None:
        return None
    return session_obj(row, KernelBatch(ctx, [row.id]), datetime.now(UTC))


@compute_session.field("containers")
async def resolve_containers(obj: dict[str, Any], info: Any) -> list[dict[str, Any]]:
    batch = obj["_kernels"]
    return [container_obj(k, await batch.live_stat(k)) for k in await batch.get(obj["id"])]


@compute_session.field("agent_ids")
@compute_session.field("agents")
async def resolve_agent_ids(obj: dict[str, Any], info: Any) -> list[str]:
    agents = [k.agent for k in await obj["_kernels"].get(obj["id"]) if k.agent]
    return list(dict.fromkeys(agents))


@compute_session.field("resource_opts")
async def resolve_resource_opts(obj: dict[str, Any], info: Any) -> dict[str, Any]:
    return {k.cluster_hostname: k.resource_opts for k in await obj["_kernels"].get(obj["id"])}


@compute_session.field("dependencies")
async def resolve_dependencies(obj: dict[str, Any], info: Any) -> list[dict[str, Any]]:
    return []  # session dependencies are not supported yet
