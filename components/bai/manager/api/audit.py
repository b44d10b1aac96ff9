"""Audit recording of REST calls: one middleware, between the problem middleware and
authentication, so it sees who called (once authenticated), how each call ended, and the calls
authentication refused.

Audited: every route for admins (tagged ``admin`` or requiring the admin/superadmin level) and
every non-GET call under /auth, /resource, /config, /manager and /folders, whoever makes it; plus, on any
route, a request authentication refuses (bad signature, unknown key, no credentials), recorded
without an actor and with the access key it claimed. Handlers that record their own entries
(GraphQL: one per mutation field) are marked with :func:`audits_itself`. Writing is
:mod:`bai.manager.services.audit`'s business: the request only queues the entry.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from bai.common import auth as signing
from bai.manager import errors
from bai.manager.services import audit as svc
from bai.manager.services.audit import Actor, AuditEntry

from .keys import CTX, REQUESTER
from .middlewares import AUTH_ATTR, Handler, client_address
from .routing import REGISTRY

#: Set by a handler that authenticates someone itself (password login), for its audit entry.
ACTOR = web.RequestKey("audit_actor", Actor)

AUDITS_ITSELF = "_bai_audits_itself"
_AUDITED_PREFIXES = ("/auth", "/resource", "/config", "/manager", "/folders")
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Arguments that say what a call acts on, in the entry's ``target``.
TARGET_KEYS = ("access_key", "email", "username", "name", "domain", "domain_name", "group", "group_id",
               "user_id", "owner_access_key")
_AUTH_REFUSALS = (errors.AuthorizationFailed, errors.InvalidAuthParameters)

#: Whether a route is audited, decided once per route.
_auditable: weakref.WeakKeyDictionary[web.AbstractRoute, bool] = weakref.WeakKeyDictionary()


def _requested_auth(request: web.Request) -> str | None:
    """The auth level the matched handler asks for (None: anonymous)."""
    handler = request.match_info.handler
    level = getattr(handler, AUTH_ATTR, None)
    if level is None and hasattr(handler, "__func__"):
        level = getattr(handler.__func__, AUTH_ATTR, None)
    return level


def audits_itself(handler: Handler) -> Handler:
    """Mark a handler that records its own audit entries (the middleware leaves it alone)."""
    setattr(handler, AUDITS_ITSELF, True)
    return handler


def _decide(request: web.Request) -> bool:
    route = request.match_info.route
    handler = route.handler
    if getattr(handler, AUDITS_ITSELF, False) or route.resource is None:
        return False
    if _requested_auth(request) in ("admin", "superadmin"):
        return True
    path = route.resource.canonical
    if route.method not in _READS and path.startswith(_AUDITED_PREFIXES):
        return True
    registry = request.app.get(REGISTRY)
    endpoint = registry.of(request) if registry is not None else None
    return endpoint is not None and endpoint.tag == "admin"


def _is_audited(request: web.Request) -> bool:
    route = request.match_info.route
    decided = _auditable.get(route)
    if decided is None:
        decided = _auditable[route] = _decide(request)
    return decided


@web.middleware
async def audit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not _is_audited(request):
        try:
            return await handler(request)
        except _AUTH_REFUSALS as exc:
            if REQUESTER not in request and _requested_auth(request) is not None:
                _record_refusal(request, exc)
            raise
    started = time.perf_counter()
    try:
        resp = await handler(request)
    except asyncio.CancelledError:  # nothing more is read from a client that went away
        await _record(request, started, svc.FAILED, "cancelled: the client went away", read_body=False)
        raise
    except Exception as exc:
        await _record(request, started, svc.outcome_of_error(exc), svc.message_of_error(exc))
        raise
    await _record(request, started, svc.outcome_of_status(resp.status),
                  None if resp.status < 400 else f"{resp.status} {resp.reason}")
    return resp


def _operation(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return f"{request.method} {resource.canonical if resource is not None else request.path}"


def _claimed_key(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if not header:
        return None
    try:
        return signing.parse_authorization(header).access_key[:64]
    except ValueError:
        return None


def _record_refusal(request: web.Request, exc: errors.ApiError) -> None:
    """A request authentication refused: no actor, the key it claimed as its target."""
    ctx = request.app[CTX]
    claimed = _claimed_key(request)
    svc.record(ctx, AuditEntry(
        kind="rest", operation=_operation(request), outcome=svc.outcome_of_error(exc),
        client_ip=client_address(request, ctx.config.auth.trusted_proxies),
        target=None if claimed is None else f"access_key={claimed}", message=svc.message_of_error(exc),
    ))


async def _args(request: web.Request, read_body: bool) -> dict[str, Any]:
    """Query string and JSON body; the body is read only once the caller is known (or the route
    is anonymous), so an unauthenticated stranger's upload is not read just to be logged."""
    args: dict[str, Any] = dict(request.query)
    if not read_body or request.method in _READS or not request.body_exists:
        return args
    if REQUESTER not in request and _requested_auth(request) is not None:
        return args
    try:
        raw = await request.read()
    except Exception:  # too large, or the client went away: the handler answered for it
        return {**args, "_body": "unread"}
    try:
        body = json.loads(raw) if raw else {}
    except (ValueError, RecursionError):
        return {**args, "_body": f"not JSON ({len(raw)} bytes)"}
    if isinstance(body, Mapping):
        args.update(body)
    else:
        args["_body"] = body
    return args


async def _record(request: web.Request, started: float, outcome: str, message: str | None,
                  read_body: bool = True) -> None:
    ctx = request.app[CTX]
    if svc.audit_of(ctx) is None:
        return
    args = await _args(request, read_body)
    requester = request.get(REQUESTER)
    actor = Actor.of(requester) if requester is not None else request.get(ACTOR)
    if actor is None and outcome == svc.DENIED:
        claimed = _claimed_key(request)
        if claimed is not None:
            args.setdefault("access_key", claimed)
    target = {**request.match_info, **{k: args[k] for k in TARGET_KEYS if k in args}}
    svc.record(ctx, AuditEntry(
        kind="rest", operation=_operation(request), outcome=outcome, actor=actor,
        client_ip=client_address(request, ctx.config.auth.trusted_proxies),
        target=svc.describe_target(target), args=args, message=message,
        duration_ms=(time.perf_counter() - started) * 1000,
    ))
