"""Middlewares: problem+json errors, API version and HMAC authentication, rate limiting."""

from __future__ import annotations

import hmac
import itertools
import json
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from redis.commands.core import AsyncScript

from bai.common import auth
from bai.manager import errors
from bai.manager.services.auth import client_ip_allowed
from bai.manager.services.outages import is_transient

from .keys import API_VERSION, CTX, RATELIMIT, REQUESTER

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

AUTH_ATTR = "_bai_auth"  # "user" | "admin" | "superadmin"; absent = anonymous
RATE_WINDOW = 900


def auth_required(level: str = "user") -> Callable[[Handler], Handler]:
    def deco(handler: Handler) -> Handler:
        setattr(handler, AUTH_ATTR, level)
        return handler
    return deco


def _requested_auth(request: web.Request) -> str | None:
    handler = request.match_info.handler
    level = getattr(handler, AUTH_ATTR, None)
    if level is None and hasattr(handler, "__func__"):
        level = getattr(handler.__func__, AUTH_ATTR, None)
    return level


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        resp = await handler(request)
    except errors.ApiError as exc:
        if exc.status >= 500:
            log.warning("%s %s -> %s: %s", request.method, request.path, exc.status, exc.msg)
        return exc.response({**_rate_headers(request), **exc.headers})
    except web.HTTPException as exc:
        if exc.status == 404:
            return errors.URLNotFound(data=request.path).response()
        if exc.status == 405:
            return errors.MethodNotAllowed(data={"allowed_methods": sorted(getattr(exc, "allowed_methods", []))}).response()
        if exc.status == 413:
            return errors.RequestTooLarge(exc.text).response()
        if exc.status < 400:
            raise
        err = errors.GenericBadRequest(exc.reason)
        resp = err.response()
        resp.set_status(exc.status)
        return resp
    except Exception as exc:
        if is_transient(exc):
            # PostgreSQL, Redis or etcd is away for a moment (restart, failover): not a bug, and the
            # client should retry, so no traceback and a 503 that says so.
            log.warning("%s %s -> 503: a backing service is unreachable: %r", request.method, request.path, exc)
            return errors.ServiceUnavailable(
                "A backing service (database, Redis or etcd) is unreachable at the moment; retry shortly.",
                headers={"Retry-After": "1"}).response()
        log.exception("unhandled error in %s %s", request.method, request.path)
        return errors.InternalServerError().response()
    if not resp.prepared:
        for k, v in _rate_headers(request).items():
            resp.headers.setdefault(k, v)
    return resp


def _rate_headers(request: web.Request) -> dict[str, str]:
    limit, remaining = request.get(RATELIMIT, (1000, 1000))
    return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Window": str(RATE_WINDOW)}


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    version = request.headers.get("X-BackendAI-Version") or request.headers.get("X-Sorna-Version")
    version_label = "x-backendai-version" if "X-BackendAI-Version" in request.headers else "x-sorna-version"
    if version is not None:
        if version not in auth.ACCEPTED_VERSIONS:
            raise errors.GenericBadRequest("Unsupported API version.")
        request[API_VERSION] = auth.parse_api_version(version)
    else:
        request[API_VERSION] = (5, "20191215")
    level = _requested_auth(request)
    if level is None:
        return await handler(request)
    header = request.headers.get("Authorization")
    if not header:
        raise errors.AuthorizationFailed("Unauthorized access")
    date_str = (request.headers.get("Date") or request.headers.get("X-BackendAI-Date")
                or request.headers.get("X-Sorna-Date"))
    if not date_str:
        raise errors.InvalidAuthParameters("Date/time sync error")
    try:
        date = auth.parse_date(date_str)
    except ValueError:
        raise errors.InvalidAuthParameters("Date/time sync error") from None
    if abs((datetime.now(UTC) - date).total_seconds()) >= auth.CLOCK_SKEW_SECONDS:
        raise errors.InvalidAuthParameters("Date/time sync error")
    try:  # also refuses credentials that are not an ASCII key and a hex signature
        parsed = auth.parse_authorization(header)
    except ValueError as exc:
        raise errors.InvalidAuthParameters(str(exc)) from None
    ctx = request.app[CTX]
    req = await ctx.requesters.get(parsed.access_key)
    if req is None:
        raise errors.AuthorizationFailed("Access key not found")
    expected = auth.signature(
        req.secret_key, request.method, request.raw_path, date_str, request.headers.get("Host", ""),
        request.content_type, version or "", parsed.hash_name, version_label,
    )
    if not hmac.compare_digest(expected, parsed.signature):
        raise errors.AuthorizationFailed("Signature mismatch")
    if req.allowed_client_ip:  # the user's client-address allow list (the original's check and words)
        address = client_address(request, ctx.config.auth.trusted_proxies)
        if not client_ip_allowed(req.allowed_client_ip, address):
            raise errors.AuthorizationFailed(f"'{address}' is not allowed IP address")
    if level == "admin" and not (req.is_admin or req.role in ("admin", "superadmin")):
        raise errors.AuthorizationFailed("Unauthorized access")
    if level == "superadmin" and not req.is_superadmin:
        raise errors.AuthorizationFailed("Unauthorized access")
    request[REQUESTER] = req
    await _rate_limit(request, req.access_key, req.rate_limit)
    return await handler(request)


# Drop what left the window, then admit the request only if the window has room: a refused
# request is not added, so a client hammering past its limit does not keep itself locked out.
# One script, so concurrent requests of a key cannot both take the last slot (and one round trip,
# as before). ARGV: now, window start, window seconds, limit (-1 = unlimited), member.
_RATE_LIMIT_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[2])
local count = redis.call('ZCARD', KEYS[1])
local limit = tonumber(ARGV[4])
if limit >= 0 and count >= limit then
  return -1
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return count + 1
"""
_rate_scripts: weakref.WeakKeyDictionary[aioredis.Redis, AsyncScript] = weakref.WeakKeyDictionary()
#: Makes each window member unique: two requests in one microsecond are still two requests.
_rate_seq = itertools.count()


async def _rate_limit(request: web.Request, access_key: str, limit: int | None) -> None:
    """Rolling 15-minute window per access key, kept as a sorted set (the original's scheme)."""
    redis = request.app[CTX].redis_ratelimit
    script = _rate_scripts.get(redis)
    if script is None:
        script = _rate_scripts[redis] = redis.register_script(_RATE_LIMIT_LUA)
    now = time.time()
    count = int(await script(keys=[f"ratelimit.{access_key}"],
                             args=[now, now - RATE_WINDOW, RATE_WINDOW, -1 if limit is None else limit,
                                   f"{now:.6f}:{next(_rate_seq)}"]))
    if limit is None:
        request[RATELIMIT] = (1000, 1000)
        return
    if count < 0:
        request[RATELIMIT] = (limit, 0)
        raise errors.RateLimitExceeded()
    request[RATELIMIT] = (limit, max(limit - count, 0))


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "BackendAI"


def client_address(request: web.Request, trusted_proxies: frozenset[str] = frozenset()) -> str:
    """The address a request came from: the peer, or, when the peer is a trusted proxy, the
    first ``X-Forwarded-For`` entry (a client could otherwise pick its own address)."""
    peer = request.remote or "unknown"
    if peer in trusted_proxies:
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
        if forwarded and len(forwarded) <= 64 and forwarded.isascii() and forwarded.isprintable():
            return forwarded
    return peer


async def read_params(request: web.Request) -> dict[str, Any]:
    """Body JSON for non-GET requests with a body; the query string otherwise (original rule).

    The body is decoded as JSON text (UTF-8/16/32), whatever charset the Content-Type claims: an
    unknown charset, bytes that are not text, or nesting too deep to parse are a malformed body."""
    if request.method not in ("GET", "HEAD") and request.can_read_body:
        raw = await request.read()
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise errors.InvalidAPIParameters("Malformed body") from None
        if not isinstance(data, dict):
            raise errors.InvalidAPIParameters("Malformed body")
        return data
    return dict(request.query)
