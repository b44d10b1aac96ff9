"""``GET /session/{ref}/dependency-graph``: a session and what it depends on, recursively."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from bai.manager import errors
from bai.manager.services.schemas import SessionQuery
from bai.manager.services.sessions import dependencies

from . import routing
from .keys import CTX, requester
from .middlewares import auth_required
from .routing import Answer


class DependencyNode(BaseModel):
    model_config = ConfigDict(extra="allow")
    session_id: str
    session_name: str
    status: str = Field(description="As the original: `KernelStatus.<status>`.")
    status_changed: str = Field(description="When it entered that status (`YYYY-MM-DD HH:MM:SS...`), or `None`.")
    depends_on: list[DependencyNode]


@auth_required()
async def dependency_graph(request: web.Request) -> web.Response:
    query = await routing.params(request, SessionQuery)
    graph = await dependencies.graph(request.app[CTX], requester(request), request.match_info["ref"],
                                     query.owner_access_key)
    return web.json_response(graph)


def routes(app: web.Application) -> None:
    routing.add(app, "GET", "/session/{ref}/dependency-graph", dependency_graph, operation_id="dependency_graph",
                tag="session", summary="The session and, recursively, the sessions it depends on.",
                query=SessionQuery, answers=(Answer(200, "The graph's root node.", DependencyNode),),
                problems=(errors.SessionNotFound, errors.InsufficientPrivilege))
