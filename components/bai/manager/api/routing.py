"""Routes declared together with their contract.

Every REST route is added through :func:`add`, which registers the aiohttp route and records an
:class:`Endpoint`: the pydantic models that validate its body or query string, the shapes of its
answers and the problems it may raise. Handlers read their input with :func:`params`, which
validates with the model the route declares (and refuses to use another one), so the OpenAPI
document that ``openapi.py`` builds from these records describes exactly what is enforced.

Adding an endpoint: write the handler, then one ``routing.add(app, ...)`` call in its module's
``routes()``; nothing else to keep in sync.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from bai.manager import errors
from bai.manager.services.schemas import parse

from .middlewares import AUTH_ATTR, read_params

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Answer:
    """A documented successful answer; ``model`` is its JSON body (None: not described)."""

    status: int
    description: str
    model: type[BaseModel] | None = None
    media_type: str = "application/json"


@dataclass(frozen=True)
class Link:
    """An OpenAPI link from a 2xx answer to another operation, for stateful testing."""

    operation_id: str
    parameters: Mapping[str, str]
    description: str = ""


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    auth: str | None  # None: anonymous; else the auth_required level
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    answers: tuple[Answer, ...] = ()
    problems: tuple[type[errors.ApiError], ...] = ()
    websocket: bool = False
    links: Mapping[str, Link] = field(default_factory=dict)
    description: str = ""


class Registry:
    """The app's endpoints, keyed by (method, path template); holds the generated document."""

    def __init__(self) -> None:
        self.endpoints: dict[tuple[str, str], Endpoint] = {}
        self.document: dict[str, Any] | None = None

    def of(self, request: web.Request) -> Endpoint | None:
        route = request.match_info.route
        method = "GET" if route.method == "HEAD" else route.method
        return self.endpoints.get((method, route.resource.canonical if route.resource else ""))


REGISTRY = web.AppKey("api_registry", Registry)


def registry(app: web.Application) -> Registry:
    if REGISTRY not in app:
        app[REGISTRY] = Registry()
    return app[REGISTRY]


def add(app: web.Application, method: str, path: str, handler: Handler, *, operation_id: str, summary: str,
        tag: str, body: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
        answers: tuple[Answer, ...] = (), problems: tuple[type[errors.ApiError], ...] = (),
        websocket: bool = False, links: Mapping[str, Link] | None = None, description: str = "") -> None:
    """Register ``handler`` at ``method path`` and record its contract for the OpenAPI document."""
    method = method.upper()
    reg = registry(app)
    if (method, path) in reg.endpoints:
        raise ValueError(f"{method} {path} is registered twice")
    if any(e.operation_id == operation_id for e in reg.endpoints.values()):
        raise ValueError(f"operation id {operation_id!r} is used twice")
    if method == "GET":
        app.router.add_get(path, handler)  # with HEAD, as aiohttp adds it (not documented)
    else:
        app.router.add_route(method, path, handler)
    level = getattr(handler, AUTH_ATTR, None)
    reg.endpoints[(method, path)] = Endpoint(
        method=method, path=path, operation_id=operation_id, summary=summary, tag=tag, auth=level,
        body=body, query=query, answers=answers, problems=problems, websocket=websocket,
        links=dict(links or {}), description=description,
    )
    reg.document = None


async def params(request: web.Request, model: type[M]) -> M:
    """The request's parameters (JSON body, or the query string for GET and body-less requests,
    as the original reads them) validated with ``model``, which must be what the route declares."""
    endpoint = request.app[REGISTRY].of(request)
    if endpoint is None or model not in (endpoint.body, endpoint.query):
        raise RuntimeError(f"{request.method} {request.path}: the handler validates with {model.__name__}, "
                           "which its route does not declare")
    result: M = parse(model, await read_params(request))
    return result


def query(request: web.Request, model: type[M]) -> M:
    """The query string validated with ``model``, which must be the route's declared query model."""
    endpoint = request.app[REGISTRY].of(request)
    if endpoint is None or endpoint.query is not model:
        raise RuntimeError(f"{request.method} {request.path}: the handler validates its query with "
                           f"{model.__name__}, which its route does not declare")
    result: M = parse(model, dict(request.query))
    return result

