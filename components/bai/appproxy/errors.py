"""The app proxy's errors: each carries its HTTP status and problem type; the middleware turns
any of them into an ``application/problem+json`` reply."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from aiohttp import web

PROBS = "https://api.backend.ai/probs/app-proxy/"


class ProxyError(Exception):
    status: ClassVar[int] = 500
    error_type: ClassVar[str] = PROBS + "general-error"
    title: ClassVar[str] = "App proxy error."

    def __init__(self, msg: str | None = None) -> None:
        super().__init__(msg or self.title)
        self.msg = msg

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.error_type, "title": self.title}
        if self.msg is not None:
            body["msg"] = self.msg
        return body

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=json.dumps(self.body()).encode(),
                            content_type="application/problem+json")


class InvalidParams(ProxyError):
    status, error_type, title = 400, PROBS + "invalid-api-params", "Invalid or missing API parameters."


class Unauthorized(ProxyError):
    status, error_type, title = 401, PROBS + "auth-failed", "Authentication failed."


class Forbidden(ProxyError):
    status, error_type, title = 403, PROBS + "forbidden", "Forbidden."


class NotFound(ProxyError):
    status, error_type, title = 404, PROBS + "not-found", "Not found."


class TooLarge(ProxyError):
    status, error_type, title = 413, PROBS + "too-large", "Request entity too large."


class Busy(ProxyError):
    status, error_type, title = 503, PROBS + "busy", "Too many connections to this app."


class NoPortLeft(ProxyError):
    status, error_type, title = 503, PROBS + "no-port-left", "No circuit port is free."


class UpstreamUnreachable(ProxyError):
    status, error_type, title = 502, PROBS + "upstream-unreachable", "The app does not answer."


class UpstreamTimeout(ProxyError):
    status, error_type, title = 504, PROBS + "upstream-timeout", "The app did not answer in time."


@web.middleware
async def problem_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except ProxyError as exc:
        return exc.response()
    except web.HTTPRequestEntityTooLarge:
        return TooLarge().response()
    except web.HTTPException as exc:
        if exc.status >= 400:
            return web.Response(status=exc.status, content_type="application/problem+json", body=json.dumps(
                {"type": PROBS + "http-error", "title": exc.reason}).encode())
        raise
