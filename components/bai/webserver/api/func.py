"""``/func/*`` (any method, websockets too: the official client reaches streams there) and
``/pipe/*`` (the web UI's websockets): the caller's login, CSRF rules, then the signed relay."""

from __future__ import annotations

from aiohttp import web

from .. import proxy
from ..errors import NotLoggedIn
from ..security import check_csrf, check_origin, client_address
from ..state import STATE, USER
from .login import clear_cookie, session_cookie


def _handler(prefix: str):  # type: ignore[no-untyped-def]
    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        assert state.store is not None and state.link is not None
        cfg = state.config
        cookie = session_cookie(request)
        login = None
        if cookie is not None:
            login = await state.store.get(cookie)
            if login is None:
                check_origin(request, cfg)
                err = NotLoggedIn("the login expired or was ended; log in again")
                resp = err.response()
                clear_cookie(resp, state)
                return resp
            check_csrf(request, cfg, login.csrf_token)
        else:
            check_origin(request, cfg)  # unsigned: the manager serves its public calls only
        request[USER] = login.user_id if login else "-"
        return await proxy.relay(request, state.link, proxy.upstream_path(request, prefix), login,
                                 client_address(request, cfg.service.trusted_proxies))
    return handle


def routes(app: web.Application) -> None:
    func, pipe = _handler("/func"), _handler("/pipe")
    app.router.add_route("*", "/func", func)
    app.router.add_route("*", "/func/{tail:.*}", func)
    app.router.add_route("*", "/pipe/{tail:.*}", pipe)
