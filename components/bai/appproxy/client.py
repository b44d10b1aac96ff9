"""The manager's side of the coordinator API: ``GET /status`` for the address to advertise, then
``POST /v2/conf`` for a user's token. One short-lived HTTP session per call (start-service is not
on a hot path), every call under a deadline."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

TOKEN_HEADER = "X-BackendAI-Token"
MAX_ANSWER = 64 * 1024


class CoordinatorError(Exception):
    """The app proxy cannot be reached, or refused the manager."""

    def __init__(self, msg: str, status: int | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.status = status


async def _json(resp: aiohttp.ClientResponse) -> Any:
    raw = await resp.content.read(MAX_ANSWER + 1)
    if len(raw) > MAX_ANSWER:
        raise CoordinatorError("the app proxy's answer is too large")
    try:
        return json.loads(raw)
    except ValueError:
        raise CoordinatorError("the app proxy did not answer JSON") from None


async def register_service(addr: str, api_token: str, *, kernel_host: str, kernel_port: int,
                           session: dict[str, Any], login_session_token: str | None = None,
                           deadline: float = 10.0) -> tuple[str, str]:
    """``(token, advertised address)`` for the user of ``session`` to reach ``kernel_host:kernel_port``."""
    base = addr.rstrip("/")
    body = {"login_session_token": login_session_token, "kernel_host": kernel_host, "kernel_port": kernel_port,
            "session": session}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=deadline)) as http:
            async with http.get(base + "/status") as resp:
                if resp.status != 200:
                    raise CoordinatorError(f"the app proxy answered {resp.status} to /status", resp.status)
                status = await _json(resp)
            async with http.post(base + "/v2/conf", json=body, headers={TOKEN_HEADER: api_token}) as resp:
                answer = await _json(resp)
                if resp.status != 200:
                    msg = answer.get("msg") if isinstance(answer, dict) else None
                    raise CoordinatorError(f"the app proxy refused the service ({resp.status}: {msg})", resp.status)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise CoordinatorError(f"the app proxy at {base} is unreachable ({exc.__class__.__name__})") from None
    token = answer.get("token") if isinstance(answer, dict) else None
    advertised = status.get("advertise_address") if isinstance(status, dict) else None
    if not isinstance(token, str):
        raise CoordinatorError("the app proxy answered no token")
    return token, advertised if isinstance(advertised, str) and advertised else base
