"""The OpenAPI document covers every route of the manager app, and a handler can only validate
its input with the model its route declares (so the document cannot describe another one)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel

from bai.manager.api import openapi, routing
from bai.manager.api.middlewares import problem_middleware
from bai.manager.config import ManagerConfig
from bai.manager.server import build_app


def _document() -> tuple[web.Application, dict[str, Any]]:
    app = build_app(ManagerConfig())
    return app, openapi.build(app[routing.REGISTRY])


def test_every_route_is_documented_and_nothing_else() -> None:
    app, doc = _document()
    served = {(r.method, r.resource.canonical) for r in app.router.routes()
              if r.method != "HEAD" and r.resource is not None}
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert served == documented
    assert {"/", "/manager/announcement", "/openapi.json", "/auth/authorize", "/session", "/session/{ref}",
            "/events/session", "/stream/session/{ref}/execute", "/admin/gql", "/admin/graphql"} <= set(doc["paths"])


def test_document_shape() -> None:
    _, doc = _document()
    assert doc["openapi"] == "3.1.0"
    scheme = doc["components"]["securitySchemes"][openapi.SECURITY_SCHEME]
    assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": "Authorization"}
    create = doc["paths"]["/session"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/CreateSession"}
    assert set(create["responses"]["201"]["links"]) == {"info", "execute", "logs", "destroy"}
    assert create["responses"]["401"]["content"] == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    assert doc["paths"]["/"]["get"]["security"] == [] and create["security"] == [{openapi.SECURITY_SCHEME: []}]
    ws = doc["paths"]["/stream/session/{ref}/execute"]["get"]
    assert "101" in ws["responses"] and "websocket" in ws["description"]
    events = doc["paths"]["/events/session"]["get"]
    assert {p["name"] for p in events["parameters"] if p["in"] == "query"} == {
        "name", "ownerAccessKey", "sessionId", "group", "scope"}
    assert "text/event-stream" in events["responses"]["200"]["content"]


class Declared(BaseModel):
    a: int = 0


class Other(BaseModel):
    b: int = 0


async def test_a_handler_cannot_validate_with_an_undeclared_model() -> None:
    async def honest(request: web.Request) -> web.Response:
        return web.json_response((await routing.params(request, Declared)).model_dump())

    async def drifting(request: web.Request) -> web.Response:
        return web.json_response((await routing.params(request, Other)).model_dump())

    app = web.Application(middlewares=[problem_middleware])
    routing.add(app, "POST", "/honest", honest, operation_id="honest", summary="", tag="t", body=Declared)
    routing.add(app, "POST", "/drifting", drifting, operation_id="drifting", summary="", tag="t", body=Declared)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        resp = await client.post("/honest", json={"a": 5})
        assert resp.status == 200 and await resp.json() == {"a": 5}
        resp = await client.post("/honest", json={"a": "x"})
        assert resp.status == 400 and (await resp.json())["data"] == {"a": "Input should be a valid integer, "
                                                                          "unable to parse string as an integer"}
        resp = await client.post("/drifting", json={"b": 1})
        assert resp.status == 500  # a programming error, caught by the contract tests
