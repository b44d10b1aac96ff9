"""``/server/login``, ``/server/login-check`` and ``/server/logout``: the original webserver's
login calls, as the official client (session mode) and the web UI use them.

Login trades a user id and password for a login (the manager's ``/auth/authorize`` gives the
keypair, which stays in Redis) and a new session cookie: a fresh id every time, and the cookie the
request came with (if any) is ended, so a planted id never becomes a login (session fixation).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
from aiohttp import web

from bai.common.auth import API_VERSION

from ..errors import InvalidParams, LoginFailed, ManagerTimeout, ManagerUnreachable, TooManyRequests
from ..security import check_csrf, check_origin, client_address
from ..sessions import Login
from ..state import STATE, WebState

log = logging.getLogger(__name__)

MAX_LOGIN_BODY = 16 * 1024
MAX_USER_ID = 256
MAX_PASSWORD = 1024


def session_cookie(request: web.Request) -> str | None:
    return request.cookies.get(request.app[STATE].config.session.cookie_name)


def _set_cookie(resp: web.StreamResponse, state: WebState, session_id: str) -> None:
    cfg = state.config
    resp.set_cookie(cfg.session.cookie_name, session_id, max_age=int(cfg.session.max_age), path="/",
                    httponly=True, samesite=cfg.session.same_site, secure=cfg.service.scheme == "https")


def clear_cookie(resp: web.StreamResponse, state: WebState) -> None:
    cfg = state.config
    resp.del_cookie(cfg.session.cookie_name, path="/", httponly=True, samesite=cfg.session.same_site,
                    secure=cfg.service.scheme == "https")


async def _credentials(request: web.Request) -> tuple[str, str]:
    if request.content_length is not None and request.content_length > MAX_LOGIN_BODY:
        raise InvalidParams("the login body is too large")
    raw = await request.content.read(MAX_LOGIN_BODY + 1)
    if len(raw) > MAX_LOGIN_BODY:
        raise InvalidParams("the login body is too large")
    try:
        body = json.loads(raw)
    except ValueError:
        raise InvalidParams('the login body must be JSON: {"username": ..., "password": ...}') from None
    if not isinstance(body, dict):
        raise InvalidParams('the login body must be JSON: {"username": ..., "password": ...}')
    user_id, password = body.get("username"), body.get("password")
    if not isinstance(user_id, str) or not user_id.strip() or len(user_id) > MAX_USER_ID:
        raise InvalidParams(f"username: a non-empty string of at most {MAX_USER_ID} characters")
    if not isinstance(password, str) or not password or len(password) > MAX_PASSWORD:
        raise InvalidParams(f"password: a non-empty string of at most {MAX_PASSWORD} characters")
    if body.get("otp"):
        raise InvalidParams("one-time passwords are not supported")
    return user_id.strip(), password


def _failed(msg: str) -> LoginFailed:
    # "authenticated"/"data.details": what the official client prints when a login fails.
    return LoginFailed(msg, extra={"authenticated": False, "data": {"details": msg}})


async def _authorize(state: WebState, user_id: str, password: str, address: str) -> dict[str, Any]:
    """The manager's answer to the password, or the error to answer with."""
    assert state.link is not None
    link = state.link
    payload = {"type": "keypair", "domain": state.config.api.domain, "username": user_id, "password": password}
    headers = {"X-BackendAI-Version": API_VERSION, "X-Forwarded-For": address, "Content-Type": "application/json"}
    try:
        async with link.session.post(link.upstream_url("/auth/authorize"), data=json.dumps(payload),
                                     headers=headers) as resp:
            raw = await resp.content.read(64 * 1024)
            status, retry_after = resp.status, resp.headers.get("Retry-After")
    except TimeoutError:
        raise ManagerTimeout() from None
    except aiohttp.ClientError as exc:
        raise ManagerUnreachable(f"cannot reach the manager: {exc.__class__.__name__}") from None
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if status == 200 and isinstance(answer, dict) and isinstance(answer.get("data"), dict):
        data: dict[str, Any] = answer["data"]
        if isinstance(data.get("access_key"), str) and isinstance(data.get("secret_key"), str):
            return data
    if status == 429:
        raise TooManyRequests("too many login attempts; try again later",
                              headers={"Retry-After": retry_after or "60"})
    if status in (400, 401, 403, 404):
        raise _failed("wrong user id or password, or the account is not active")
    log.warning("login: the manager answered %d", status)
    raise ManagerUnreachable(f"the manager answered {status}")


async def login(request: web.Request) -> web.Response:
    state = request.app[STATE]
    assert state.store is not None
    check_origin(request, state.config)
    user_id, password = await _credentials(request)
    address = client_address(request, state.config.service.trusted_proxies)
    wait = await state.store.blocked_for(user_id, address)
    if wait:
        log.info("login blocked: user=%r addr=%s for %d s", user_id, address, wait)
        raise TooManyRequests(f"too many failed logins; try again in {wait} s", headers={"Retry-After": str(wait)})
    if state.logins.locked():
        raise TooManyRequests("too many logins at once; try again shortly", headers={"Retry-After": "1"})
    async with state.logins:
        try:
            data = await _authorize(state, user_id, password, address)
        except LoginFailed:
            await state.store.record_failure(user_id, address)
            log.info("login failed: user=%r addr=%s", user_id, address)
            raise
    await state.store.clear_failures(user_id)
    await state.store.delete(session_cookie(request))  # rotation: the id the browser had ends here
    session_id, got = await state.store.create(
        access_key=data["access_key"], secret_key=data["secret_key"], user_id=user_id,
        role=str(data.get("role", "user")), status=str(data.get("status", "active")), domain=state.config.api.domain)
    log.info("login: user=%r addr=%s role=%s", user_id, address, got.role)
    resp = web.json_response(_logged_in(got), headers={"Cache-Control": "no-store"})
    _set_cookie(resp, state, session_id)
    return resp


def _logged_in(got: Login) -> dict[str, Any]:
    return {"authenticated": True, "data": got.public(), "csrf_token": got.csrf_token}


async def login_check(request: web.Request) -> web.Response:
    state = request.app[STATE]
    assert state.store is not None
    check_origin(request, state.config)
    cookie = session_cookie(request)
    got = await state.store.get(cookie)
    if got is None:
        resp = web.json_response({"authenticated": False, "data": {}}, headers={"Cache-Control": "no-store"})
        if cookie is not None:
            clear_cookie(resp, state)
        return resp
    return web.json_response(_logged_in(got), headers={"Cache-Control": "no-store"})


async def logout(request: web.Request) -> web.Response:
    state = request.app[STATE]
    assert state.store is not None
    cookie = session_cookie(request)
    got = await state.store.get(cookie)
    if got is None:
        check_origin(request, state.config)  # nothing to end: no token to ask for
    else:
        check_csrf(request, state.config, got.csrf_token)
    await state.store.delete(cookie)
    if got is not None:
        log.info("logout: user=%r", got.user_id)
    resp = web.json_response({"authenticated": False}, headers={"Cache-Control": "no-store"})
    clear_cookie(resp, state)
    return resp


def routes(app: web.Application) -> None:
    app.router.add_post("/server/login", login)
    app.router.add_post("/server/login-check", login_check)
    app.router.add_get("/server/login-check", login_check)
    app.router.add_post("/server/logout", logout)
