"""GraphQL admin API: POST /admin/gql (always 200 with {"data", "errors"?}) and the legacy
POST /admin/graphql (data only; errors become 400 graphql-error). Schema-first with ariadne,
snake_case names as the original's; resolvers scope results to the caller's role."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dateutil.parser
import sqlalchemy as sa
from aiohttp import web
from ariadne import (
    ObjectType,
    QueryType,
    ScalarType,
    graphql,
    load_schema_from_path,
    make_executable_schema,
)
from ariadne.utils import unwrap_graphql_error
from graphql import GraphQLError
from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from bai.common.types import SessionStatus
from bai.manager import errors
from bai.manager.store import gql_queries as gq
from bai.manager.store.keypairs import Requester

from . import gql_limits, routing
from .keys import CTX, requester
from .middlewares import auth_required
from .replies import GraphQLData, GraphQLReply

log = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).with_name("schema.graphql")
_SESSION_STATUSES = frozenset(s.value for s in SessionStatus)
_DEAD = frozenset({"TERMINATED", "CANCELLED"})


class GraphQLAPIError(errors.ApiError):
    """The legacy endpoint's answer to a query that produced errors (``data`` = the error list)."""

    status, error_type, title = 400, errors.PROBS + "graphql-error", "GraphQL-generated error."


@dataclass(frozen=True)
class GQLContext:
    requester: Requester
    db: AsyncEngine


# ------------------------------------------------------------------ scalars

uuid_scalar = ScalarType("UUID")
datetime_scalar = ScalarType("DateTime")
json_scalar = ScalarType("JSONString")
bigint_scalar = ScalarType("BigInt")


@uuid_scalar.serializer
def _serialize_uuid(value: Any) -> str:
    return str(value)


@uuid_scalar.value_parser
def _parse_uuid(value: Any) -> uuid.UUID:
    if not isinstance(value, str):
        raise ValueError("UUID must be a string")
    return uuid.UUID(value)


@datetime_scalar.serializer
def _serialize_datetime(value: Any) -> str:
    return value if isinstance(value, str) else value.isoformat()


@datetime_scalar.value_parser
def _parse_datetime(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("DateTime must be an ISO 8601 string")
    return dateutil.parser.isoparse(value)


@json_scalar.serializer
def _serialize_json(value: Any) -> str:
    return json.dumps(value, default=str)


@json_scalar.value_parser
def _parse_json(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("JSONString must be a string")
    return json.loads(value)


_SAFE_INT = 2**53 - 1
_INT32 = 2**31


@bigint_scalar.serializer
def _serialize_bigint(value: Any) -> int | float:
    """As the original: an Int within 32 bits, a float up to 2^53, an error beyond."""
    num = int(value)
    if not -_SAFE_INT <= num <= _SAFE_INT:
        raise ValueError("Cannot serialize integer out of the safe range.")
    return num if -_INT32 <= num < _INT32 else float(num)


@bigint_scalar.value_parser
def _parse_bigint(value: Any) -> int:
    return int(value)


# ------------------------------------------------------------------ scoping

def _scope(req: Requester, domain_name: str | None, access_key: str | None,
           *, autofill: bool) -> tuple[str | None, str | None]:
    """The original's ``scoped_query``: superadmins see everything, domain admins their domain,
    users their own access key. ``autofill`` defaults ``access_key`` to the caller's."""
    if req.is_superadmin:
        pass
    elif req.role == "admin":
        if domain_name is not None and domain_name != req.domain_name:
            raise errors.GenericForbidden()
        domain_name = req.domain_name
    else:
        if domain_name is not None and domain_name != req.domain_name:
            raise errors.GenericForbidden()
        if access_key is not None and access_key != req.access_key:
            raise errors.GenericForbidden()
        domain_name, access_key = req.domain_name, req.access_key
    if autofill and access_key is None:
        access_key = req.access_key
    return domain_name, access_key


def _check_page(limit: int, offset: int) -> None:
    if limit < 0 or offset < 0:
        raise gq.QueryError("limit and offset must not be negative")


def _statuses(status: str | None, known: frozenset[str], what: str) -> list[str] | None:
    if status is None or not status.strip():
        return None
    return gq.parse_statuses(status, known, what)


# ------------------------------------------------------------------ row -> object

class _KernelBatch:
    """Loads the kernels of every session on a page in one query, on first use."""

    def __init__(self, db: AsyncEngine, session_ids: list[uuid.UUID]) -> None:
        self._db = db
        self._ids = session_ids
        self._lock = asyncio.Lock()
        self._rows: dict[uuid.UUID, list[sa.Row[Any]]] | None = None

    async def get(self, session_id: uuid.UUID) -> list[sa.Row[Any]]:
        async with self._lock:
            if self._rows is None:
                async with self._db.connect() as conn:
                    self._rows = await gq.kernels_by_session(conn, self._ids)
        return self._rows.get(session_id, [])


def _idle_checks(row: sa.Row[Any], now: datetime) -> dict[str, Any]:
    """The shape of the original's idle-check report; only the session-lifetime check exists."""
    lifetime = row.max_session_lifetime or 0
    remaining = None
    if lifetime > 0 and row.status not in _DEAD:
        remaining = max(0.0, lifetime - (now - row.created_at).total_seconds())
    return {"session_lifetime": {"remaining": remaining, "remaining_time_type": "expire_after", "extra": None}}


def _kernel_role(session_type: str | None) -> str:
    return {"inference": "INFERENCE", "system": "SYSTEM"}.get(session_type or "", "COMPUTE")


def _session_obj(row: sa.Row[Any], batch: _KernelBatch, now: datetime) -> dict[str, Any]:
    history = row.status_history or {}
    return {
        "id": row.id, "session_id": row.id, "main_kernel_id": row.main_kernel_id, "tag": row.tag,
        "name": row.name, "type": (row.session_type or "").upper(), "main_kernel_role": _kernel_role(row.session_type),
        "image": row.image, "architecture": row.architecture or row.main_architecture,
        "registry": row.main_registry, "cluster_mode": row.cluster_mode, "cluster_size": row.cluster_size,
        "domain_name": row.domain_name, "group_name": row.group_name, "group_id": row.group_id,
        "user_email": row.user_email, "full_name": row.full_name, "user_id": row.user_uuid,
        "access_key": row.access_key,
        "status": row.status, "status_changed": gq.history_time(history, row.status) or row.created_at,
        "status_info": row.status_info or "", "status_data": row.status_data or {}, "status_history": history,
        "created_at": row.created_at, "terminated_at": row.terminated_at, "starts_at": row.starts_at,
        "scheduled_at": gq.history_time(history, "SCHEDULED"), "startup_command": row.startup_command,
        "result": row.result, "idle_checks": _idle_checks(row, now),
        "scaling_group": row.scaling_group_name, "service_ports": row.main_service_ports or [],
        "occupying_slots": row.occupying_slots, "occupied_slots": row.occupying_slots,
        "requested_slots": row.requested_slots, "num_queries": row.num_queries,
        "_kernels": batch,
    }


def _container_obj(k: sa.Row[Any]) -> dict[str, Any]:
    history = k.status_history or {}
    return {
        "id": k.id, "kernel_id": k.id, "idx": k.cluster_idx, "role": k.cluster_role, "hostname": k.cluster_hostname,
        "cluster_idx": k.cluster_idx, "local_rank": k.local_rank, "cluster_role": k.cluster_role,
        "cluster_hostname": k.cluster_hostname, "session_id": k.session_id,
        "image": k.image, "architecture": k.architecture, "registry": k.registry,
        "status": k.status, "status_changed": k.status_changed, "status_info": k.status_info or "",
        "status_data": k.status_data or {}, "created_at": k.created_at, "terminated_at": k.terminated_at,
        "starts_at": None, "scheduled_at": gq.history_time(history, "SCHEDULED"),
        "agent": k.agent, "agent_addr": k.agent_addr, "container_id": k.container_id,
        "resource_opts": k.resource_opts, "occupied_slots": k.occupied_slots,
        # Live statistics are not collected yet; the last stored ones serve both fields.
        "live_stat": k.last_stat, "last_stat": k.last_stat, "preopen_ports": [],
    }


def _keypair_obj(row: sa.Row[Any], req: Requester) -> dict[str, Any]:
    own = row.access_key == req.access_key
    return {
        "id": row.access_key, "user_id": row.user_id or row.user_email, "full_name": row.full_name,
        "access_key": row.access_key, "secret_key": row.secret_key if own or req.is_superadmin else None,
        "is_active": row.is_active, "is_admin": row.is_admin, "resource_policy": row.resource_policy,
        "created_at": row.created_at, "last_used": row.last_used, "rate_limit": row.rate_limit,
        "num_queries": row.num_queries, "user": row.user,
        "user_info": {"email": row.user_email, "full_name": row.full_name},
    }


def _agent_obj(row: sa.Row[Any]) -> dict[str, Any]:
    return {**row._mapping, "cpu_cur_pct": None, "mem_cur_bytes": None, "live_stat": None}


# ------------------------------------------------------------------ resolvers

query = QueryType()
compute_session = ObjectType("ComputeSession")
keypair = ObjectType("KeyPair")


@query.field("compute_session_list")
async def resolve_compute_session_list(
    _: Any, info: Any, limit: int, offset: int, filter: str | None = None, order: str | None = None,
    domain_name: str | None = None, group_id: uuid.UUID | None = None, access_key: str | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    ctx: GQLContext = info.context
    _check_page(limit, offset)
    domain_name, access_key = _scope(ctx.requester, domain_name, access_key, autofill=False)
    statuses = _statuses(status, _SESSION_STATUSES, "session")
    scope = gq.SessionScope(domain_name, group_id, access_key)
    async with ctx.db.connect() as conn:
        rows, total = await gq.session_page(conn, scope, limit=limit, offset=offset, statuses=statuses,
                                            filter_=filter, order=order)
    batch = _KernelBatch(ctx.db, [r.id for r in rows])
    now = datetime.now(UTC)
    return {"items": [_session_obj(r, batch, now) for r in rows], "total_count": total}


@query.field("compute_session")
async def resolve_compute_session(
    _: Any, info: Any, id: uuid.UUID, domain_name: str | None = None, access_key: str | None = None,
) -> dict[str, Any] | None:
    ctx: GQLContext = info.context
    domain_name, access_key = _scope(ctx.requester, domain_name, access_key, autofill=False)
    async with ctx.db.connect() as conn:
        row = await gq.session_by_id(conn, id, gq.SessionScope(domain_name, None, access_key))
    if row is None:
        return None
    return _session_obj(row, _KernelBatch(ctx.db, [row.id]), datetime.now(UTC))


@compute_session.field("containers")
async def resolve_containers(obj: dict[str, Any], info: Any) -> list[dict[str, Any]]:
    return [_container_obj(k) for k in await obj["_kernels"].get(obj["id"])]


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


@query.field("keypair")
async def resolve_keypair(
    _: Any, info: Any, domain_name: str | None = None, access_key: str | None = None,
) -> dict[str, Any] | None:
    ctx: GQLContext = info.context
    domain_name, access_key = _scope(ctx.requester, domain_name, access_key, autofill=True)
    assert access_key is not None
    async with ctx.db.connect() as conn:
        row = await gq.keypair_with_user(conn, access_key, domain_name)
    return None if row is None else _keypair_obj(row, ctx.requester)


@keypair.field("concurrency_used")
async def resolve_concurrency_used(obj: dict[str, Any], info: Any) -> int:
    ctx: GQLContext = info.context
    async with ctx.db.connect() as conn:
        return await gq.concurrency_used(conn, obj["access_key"])


@query.field("agent_list")
async def resolve_agent_list(
    _: Any, info: Any, limit: int, offset: int, filter: str | None = None, order: str | None = None,
    scaling_group: str | None = None, status: str | None = None,
) -> dict[str, Any]:
    ctx: GQLContext = info.context
    if not ctx.requester.is_superadmin:
        raise errors.GenericForbidden("Only superadmins may list agents.")
    _check_page(limit, offset)
    statuses = _statuses(status, gq.AGENT_STATUSES, "agent")
    async with ctx.db.connect() as conn:
        rows, total = await gq.agent_page(conn, limit=limit, offset=offset, scaling_group=scaling_group,
                                          statuses=statuses, filter_=filter, order=order)
    return {"items": [_agent_obj(r) for r in rows], "total_count": total}


SCHEMA = make_executable_schema(
    load_schema_from_path(str(SCHEMA_PATH)),
    query, compute_session, keypair, uuid_scalar, datetime_scalar, json_scalar, bigint_scalar,
)


# ------------------------------------------------------------------ errors

def _unexpected(error: BaseException | None) -> bool:
    """True for a resolver failure that is a bug or an outage, not the caller's mistake."""
    if not isinstance(error, GraphQLError) or error.path is None:
        return False
    original = unwrap_graphql_error(error)
    return original is not None and not isinstance(original, (errors.ApiError, gq.QueryError, GraphQLError))


def _format_error(error: GraphQLError, debug: bool = False) -> dict[str, Any]:
    if _unexpected(error):
        # Never leak database or driver messages to the client; the log has the traceback.
        return GraphQLError("Internal server error.", error.nodes, error.source, error.positions,
                            error.path).formatted  # type: ignore[return-value]
    return dict(error.formatted)


class _ErrorLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """What ariadne logs for each error: tracebacks for failures, a debug line for bad queries."""

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if _unexpected(exc):
            self.logger.error("GraphQL resolver failed: %s", msg, exc_info=unwrap_graphql_error(exc))
        else:
            self.logger.debug("GraphQL error: %s", msg)


_ERROR_LOG = _ErrorLog(log, {})


# ------------------------------------------------------------------ handlers

class GraphQLRequest(BaseModel):
    """The body of both GraphQL endpoints."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    query: str = Field(min_length=1, pattern=r"\S", description="The GraphQL document.")
    variables: dict[str, Any] | None = None
    operation_name: str | None = Field(None, validation_alias=AliasChoices("operation_name", "operationName"))


async def _read_body(request: web.Request) -> dict[str, Any]:
    body = await routing.params(request, GraphQLRequest)
    return {"query": body.query, "variables": body.variables, "operationName": body.operation_name}


async def _execute(request: web.Request) -> dict[str, Any]:
    limits = request.app[CTX].config.graphql
    if (request.content_length or 0) > gql_limits.max_body_size(limits):
        raise GraphQLAPIError(f"The request body is larger than {gql_limits.max_body_size(limits)} bytes.")
    body = await _read_body(request)
    try:  # parsed, measured and validated in a worker thread (gql_limits)
        prepared = await gql_limits.prepare_off_loop(SCHEMA, body["query"], limits)
    except gql_limits.QueryTooComplex as exc:
        raise GraphQLAPIError(str(exc), data=[{"message": str(exc)}]) from None
    ctx = GQLContext(requester(request), request.app[CTX].db)
    _, result = await graphql(SCHEMA, body, context_value=ctx, introspection=True, debug=False,
                              logger=_ERROR_LOG, error_formatter=_format_error,
                              **gql_limits.ariadne_hooks(prepared))
    return result


@auth_required()
async def handle_gql(request: web.Request) -> web.Response:
    result = await _execute(request)
    reply: dict[str, Any] = {"data": result.get("data")}
    if result.get("errors"):
        reply["errors"] = result["errors"]
    return web.json_response(reply)


@auth_required()
async def handle_gql_legacy(request: web.Request) -> web.Response:
    result = await _execute(request)
    if result.get("errors"):
        raise GraphQLAPIError(data=result["errors"])
    return web.json_response(result.get("data"))


def routes(app: web.Application) -> None:
    routing.add(app, "POST", "/admin/gql", handle_gql, operation_id="gql", tag="admin", body=GraphQLRequest,
                summary="Run a GraphQL query (errors are reported in the 200 answer).",
                answers=(routing.Answer(200, "`data`, and `errors` when there are any.", GraphQLReply),),
                problems=(GraphQLAPIError,))
    routing.add(app, "POST", "/admin/graphql", handle_gql_legacy, operation_id="gql_legacy", tag="admin",
                body=GraphQLRequest, summary="Run a GraphQL query (legacy: errors answer 400 graphql-error).",
                answers=(routing.Answer(200, "The `data` object.", GraphQLData),), problems=(GraphQLAPIError,))
