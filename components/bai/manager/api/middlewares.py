"""Middlewares: problem+json errors, API version and HMAC authentication, rate limiting."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from bai.common import auth
from bai.manager import errors

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
        return exc.response(_rate_headers(request))
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
    except Exception:
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
    except (ValueError, OverflowError):
        raise errors.InvalidAuthParameters("Date/time sync error") from None
    if abs((datetime.now(UTC) - date).total_seconds()) >= auth.CLOCK_SKEW_SECONDS:
        raise errors.InvalidAuthParameters("Date/time sync error")
    try:
        parsed = auth.parse_authorization(header)
    except ValueError as exc:
        raise errors.InvalidAuthParameters(str(exc)) from None
    if parsed.hash_name not in hashlib.algorithms_guaranteed:
        raise errors.InvalidAuthParameters("Unsupported signing hash algorithm")
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
    if level == "admin" and not (req.is_admin or req.role in ("admin", "superadmin")):
        raise errors.AuthorizationFailed("Unauthorized access")
    if level == "superadmin" and not req.is_superadmin:
        raise errors.AuthorizationFailed("Unauthorized access")
    request[REQUESTER] = req
    await _rate_limit(request, req.access_key, req.rate_limit)
    return await handler(request)


async def _rate_limit(request: web.Request, access_key: str, limit: int | None) -> None:
    """Rolling 15-minute window per access key, kept as a sorted set (the original's scheme)."""
    redis = request.app[CTX].redis_ratelimit
    now = time.time()
    key = f"ratelimit.{access_key}"
    pipe = redis.pipeline(transaction=False)
    pipe.zremrangebyscore(key, 0, now - RATE_WINDOW)
    pipe.zadd(key, {f"{now:.6f}": now})
    pipe.expire(key, RATE_WINDOW)
    pipe.zcard(key)
    count = int((await pipe.execute())[-1])
    if limit is None:
        request[RATELIMIT] = (1000, 1000)
        return
    request[RATELIMIT] = (limit, max(limit - count, 0))
    if count > limit:
        raise errors.RateLimitExceeded()


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "BackendAI"


async def read_params(request: web.Request) -> dict[str, Any]:
    """Body JSON for non-GET requests with a body; the query string otherwise (original rule)."""
    if request.method not in ("GET", "HEAD") and request.can_read_body:
        try:
            data = await request.json()
        except ValueError:
            raise errors.InvalidAPIParameters("Malformed body") from None
        if not isinstance(data, dict):
            raise errors.InvalidAPIParameters("Malformed body")
        return data
    return dict(request.query)
