"""The coordinator API (the original wsproxy's "v2" routes the manager and clients use):

* ``GET /status``: who we are and the address to advertise (anonymous);
* ``POST /v2/conf``: the manager registers a session's service and gets a token for the user
  (``X-BackendAI-Token`` = the shared ``api-secret``);
* ``GET /v2/proxy/auth?token=&session_id=&app=&protocol=``: the user trades the token for a
  circuit: browsers are redirected to it (through its login, which sets the circuit's cookie),
  clients asking for JSON get ``{"redirect_url", "reuse"}``; TCP circuits answer their address.
"""

from __future__ import annotations

import hmac
import json
import uuid
from typing import Any, Literal
from urllib.parse import urlencode

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import tokens
from ..circuits import CircuitRegistry
from ..config import ProxySection
from ..errors import Forbidden, InvalidParams, Unauthorized, problem_middleware
from ..http_forward import LOGIN_PATH

TOKEN_HEADER = "X-BackendAI-Token"
MAX_JSON_BODY = 64 * 1024
API_VERSION = "v2"

CIRCUITS = web.AppKey("circuits", CircuitRegistry)
SETTINGS = web.AppKey("settings", ProxySection)


class ConfRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    login_session_token: str | None = Field(None, max_length=1024)
    kernel_host: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9.\-:\[\]]+$")
    kernel_port: int = Field(ge=1, le=65535)
    session: tokens.SessionInfo


class AuthQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    token: str = Field(min_length=1)
    session_id: uuid.UUID
    app: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    protocol: Literal["http", "tcp", "preopen"] = "http"
    redirect: str = Field("/", max_length=2048)


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())


async def status(request: web.Request) -> web.Response:
    cfg = request.app[SETTINGS]
    return web.json_response({"id": cfg.id, "status": "healthy", "api_version": API_VERSION,
                              "advertise_address": cfg.api_url, "circuits": len(request.app[CIRCUITS])})


async def conf(request: web.Request) -> web.Response:
    cfg = request.app[SETTINGS]
    given = request.headers.get(TOKEN_HEADER, "")
    if not hmac.compare_digest(given.encode(), cfg.api_secret.encode()):
        raise Unauthorized("a valid X-BackendAI-Token is required")
    try:
        raw: Any = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise InvalidParams("the body is not JSON") from None
    try:
        req = ConfRequest.model_validate(raw)
    except ValidationError as exc:
        raise InvalidParams(_problems(exc)) from None
    claims = tokens.ServiceClaims(session=req.session.id, user=req.session.user_uuid,
                                  access_key=req.session.access_key, kernel_host=req.kernel_host,
                                  kernel_port=req.kernel_port, login_session_token=req.login_session_token)
    return web.json_response({"token": tokens.mint(claims, cfg.jwt_encrypt_key, cfg.token_ttl)})


def _wants_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


async def proxy_auth(request: web.Request) -> web.Response:
    cfg = request.app[SETTINGS]
    try:
        q = AuthQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        raise InvalidParams(_problems(exc)) from None
    claims = tokens.verify_service(q.token, cfg.jwt_encrypt_key)
    if claims.session != q.session_id:
        raise Forbidden("the token is for another session")
    protocol: Literal["http", "tcp"] = "tcp" if q.protocol == "tcp" else "http"
    circuit, reused = await request.app[CIRCUITS].open(claims, q.app, protocol, request.remote)
    if protocol == "tcp":
        url = f"tcp://{cfg.advertised_host}:{circuit.port}"
    else:
        ticket = tokens.mint(tokens.CircuitClaims(typ="ticket", circuit=circuit.id, session=circuit.session_id,
                                                  user=circuit.user_uuid), cfg.permit_hash_key, tokens.TICKET_TTL)
        url = (f"http://{cfg.advertised_host}:{circuit.port}{LOGIN_PATH}?"
               + urlencode({"ticket": ticket, "next": q.redirect}))
    if protocol == "tcp" or _wants_json(request):
        return web.json_response({"redirect_url": url, "reuse": reused, "circuit_id": str(circuit.id)})
    raise web.HTTPFound(url, headers={"Cache-Control": "no-store"})


async def delete_circuit(request: web.Request) -> web.Response:
    """``DELETE /v2/circuit/{id}`` (the manager's, with the shared secret)."""
    cfg = request.app[SETTINGS]
    if not hmac.compare_digest(request.headers.get(TOKEN_HEADER, "").encode(), cfg.api_secret.encode()):
        raise Unauthorized("a valid X-BackendAI-Token is required")
    try:
        cid = uuid.UUID(request.match_info["circuit_id"])
    except ValueError:
        raise InvalidParams("not a circuit id") from None
    circuit = request.app[CIRCUITS].get(cid)
    if circuit is None:
        return web.Response(status=404, content_type="application/problem+json",
                            body=json.dumps({"title": "No such circuit."}).encode())
    await request.app[CIRCUITS].close(circuit, "deleted through the API")
    return web.Response(status=204)


def create_app(cfg: ProxySection, circuits: CircuitRegistry) -> web.Application:
    app = web.Application(middlewares=[problem_middleware], client_max_size=MAX_JSON_BODY)
    app[SETTINGS], app[CIRCUITS] = cfg, circuits
    app.router.add_get("/status", status)
    app.router.add_post("/v2/conf", conf)
    app.router.add_get("/v2/proxy/auth", proxy_auth)
    app.router.add_delete("/v2/circuit/{circuit_id}", delete_circuit)
    return app
