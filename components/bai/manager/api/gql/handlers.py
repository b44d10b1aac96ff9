"""POST /admin/gql (always 200 with {"data", "errors"?}) and the legacy POST /admin/graphql (data
only; errors become 400 graphql-error): the body, the limits, error formatting, the audit of
mutations and routing.

Every mutation is audited here, whoever writes its resolver: when the prepared document's
operation is a mutation, a GraphQL middleware wraps each top-level field's resolver and records
one entry per field (its arguments, secrets redacted; ``ok`` from its payload, ``denied`` for a
privilege failure, ``failed`` otherwise). Queries run without the middleware and cost nothing.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from ariadne import graphql
from ariadne.utils import unwrap_graphql_error
from graphql import DocumentNode, GraphQLError, GraphQLResolveInfo, OperationDefinitionNode, OperationType
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from bai.manager import errors
from bai.manager.querylang import QueryError
from bai.manager.services import audit, manager_admin
from bai.manager.services.audit import Actor, AuditEntry

from .. import routing
from ..audit import audits_itself
from ..keys import CTX, requester
from ..middlewares import auth_required, client_address
from ..replies import GraphQLData, GraphQLReply
from . import limits
from .context import GQLContext
from .schema import SCHEMA

log = logging.getLogger("bai.manager.api.gql")


class GraphQLAPIError(errors.ApiError):
    """The legacy endpoint's answer to a query that produced errors (``data`` = the error list)."""

    status, error_type, title = 400, errors.PROBS + "graphql-error", "GraphQL-generated error."


# ------------------------------------------------------------------ errors

def _unexpected(error: BaseException | None) -> bool:
    """True for a resolver failure that is a bug or an outage, not the caller's mistake."""
    if not isinstance(error, GraphQLError) or error.path is None:
        return False
    original = unwrap_graphql_error(error)
    return original is not None and not isinstance(original, (errors.ApiError, QueryError, GraphQLError))


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


# ------------------------------------------------------------------ audit of mutations

def is_mutation(document: DocumentNode | None, operation_name: str | None) -> bool:
    """Whether executing ``document`` runs a mutation (graphql-core's choice of operation)."""
    if document is None:
        return False
    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        ops = [o for o in ops if o.name is not None and o.name.value == operation_name]
    return len(ops) == 1 and ops[0].operation == OperationType.MUTATION


def _payload_outcome(result: Any) -> tuple[str, str | None]:
    """A mutation payload's ``{ok, msg}`` (a mapping or an object) as an outcome and message."""
    get: Callable[[str], Any] = (result.get if isinstance(result, Mapping)
                                 else lambda name: getattr(result, name, None))
    msg = get("msg")
    if get("ok") is False:
        return audit.FAILED, str(msg) if msg is not None else None
    return audit.OK, str(msg) if msg else None


def mutation_auditor(record: Callable[[AuditEntry], None], actor: Actor, client_ip: str) -> Callable[..., Any]:
    """A graphql-core middleware recording each top-level mutation field it resolves."""

    async def audited(next_: Callable[..., Any], obj: Any, info: GraphQLResolveInfo, kwargs: dict[str, Any]) -> Any:
        started = time.perf_counter()

        def entry(outcome: str, message: str | None) -> AuditEntry:
            return AuditEntry(
                kind="graphql", operation=info.field_name, outcome=outcome, actor=actor, client_ip=client_ip,
                target=audit.describe_target(kwargs), args=kwargs, message=message,
                duration_ms=(time.perf_counter() - started) * 1000)

        try:
            result = next_(obj, info, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            record(entry(audit.outcome_of_error(exc), audit.message_of_error(exc)))
            raise
        record(entry(*_payload_outcome(result)))
        return result

    def middleware(next_: Callable[..., Any], obj: Any, info: GraphQLResolveInfo, **kwargs: Any) -> Any:
        if info.path.prev is not None or info.parent_type is not info.schema.mutation_type:
            return next_(obj, info, **kwargs)  # nested fields pass straight through
        return audited(next_, obj, info, kwargs)

    return middleware


async def _execute(request: web.Request) -> dict[str, Any]:
    manager = request.app[CTX]
    config = manager.config.graphql
    if (request.content_length or 0) > limits.max_body_size(config):
        raise GraphQLAPIError(f"The request body is larger than {limits.max_body_size(config)} bytes.")
    body = await _read_body(request)
    try:  # parsed, measured and validated in a worker thread (limits.py)
        prepared = await limits.prepare_off_loop(SCHEMA, body["query"], config)
    except limits.QueryTooComplex as exc:
        raise GraphQLAPIError(str(exc), data=[{"message": str(exc)}]) from None
    ctx = GQLContext(requester(request), manager)
    middleware = None
    if is_mutation(prepared.document, body["operationName"]):
        manager_admin.ensure_not_frozen(manager)  # 503 server-frozen: no writes during maintenance
        log_ = audit.audit_of(manager)
        if log_ is not None:
            middleware = [mutation_auditor(log_.record, Actor.of(ctx.requester),
                                           client_address(request, manager.config.auth.trusted_proxies))]
    _, result = await graphql(SCHEMA, body, context_value=ctx, introspection=True, debug=False,
                              logger=_ERROR_LOG, error_formatter=_format_error, middleware=middleware,
                              **limits.ariadne_hooks(prepared))
    return result


@audits_itself
@auth_required()
async def handle_gql(request: web.Request) -> web.Response:
    result = await _execute(request)
    reply: dict[str, Any] = {"data": result.get("data")}
    if result.get("errors"):
        reply["errors"] = result["errors"]
    return web.json_response(reply)


@audits_itself
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
