"""POST /admin/gql (always 200 with {"data", "errors"?}) and the legacy POST /admin/graphql (data
only; errors become 400 graphql-error): the body, the limits, error formatting and routing."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from ariadne import graphql
from ariadne.utils import unwrap_graphql_error
from graphql import GraphQLError
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from bai.manager import errors
from bai.manager.querylang import QueryError

from .. import routing
from ..keys import CTX, requester
from ..middlewares import auth_required
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
    _, result = await graphql(SCHEMA, body, context_value=ctx, introspection=True, debug=False,
                              logger=_ERROR_LOG, error_formatter=_format_error,
                              **limits.ariadne_hooks(prepared))
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
