"""The webserver's own errors (login, session, CSRF, proxy): each carries its HTTP status and
problem type; the middleware turns any of them into an ``application/problem+json`` reply.
Errors of the manager itself pass through /func/ unchanged."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

from aiohttp import web

PROBS = "https://api.backend.ai/probs/webserver/"


class WebError(Exception):
    status: ClassVar[int] = 500
    error_type: ClassVar[str] = PROBS + "general-error"
    title: ClassVar[str] = "Webserver error."

    def __init__(self, msg: str | None = None, *, headers: Mapping[str, str] | None = None,
                 extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(msg or self.title)
        self.msg = msg
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.error_type, "title": self.title}
        if self.msg is not None:
            body["msg"] = self.msg
        body.update(self.extra)
        return body

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=json.dumps(self.body()).encode(),
                            content_type="application/problem+json", headers=self.headers)


class InvalidParams(WebError):
    status, error_type, title = 400, PROBS + "invalid-api-params", "Invalid or missing parameters."


class LoginFailed(WebError):
    status, error_type, title = 401, PROBS + "auth-failed", "Login failed."


class NotLoggedIn(WebError):
    status, error_type, title = 401, PROBS + "login-required", "Not logged in, or the login expired."


class CsrfRefused(WebError):
    status, error_type, title = 403, PROBS + "csrf-refused", "Cross-site request refused."


class NotFound(WebError):
    status, error_type, title = 404, PROBS + "not-found", "Not found."


class TooLarge(WebError):
    status, error_type, title = 413, PROBS + "too-large", "Request entity too large."


class TooManyRequests(WebError):
    status, error_type, title = 429, PROBS + "too-many-requests", "Too many requests."


class Busy(WebError):
    status, error_type, title = 503, PROBS + "busy", "Too many requests in flight; retry shortly."


class SessionStoreDown(WebError):
    status, error_type, title = 503, PROBS + "session-store-unavailable", "The session store is unreachable."


class ManagerUnreachable(WebError):
    status, error_type, title = 502, PROBS + "manager-unreachable", "The manager does not answer."


class ManagerTimeout(WebError):
    status, error_type, title = 504, PROBS + "manager-timeout", "The manager did not answer in time."


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except WebError as exc:
        return exc.response()
    except web.HTTPRequestEntityTooLarge:
        return TooLarge().response()
    except web.HTTPException as exc:
        if exc.status >= 400:
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return web.Response(status=exc.status, content_type="application/problem+json", headers=allow,
                                body=json.dumps({"type": PROBS + "http-error", "title": exc.reason}).encode())
        raise
