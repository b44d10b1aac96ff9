"""The web UI: ``/static/*`` (its files), ``/vendor/xterm/*`` (Debian's libjs-xterm) and
``index.html`` for ``/`` and every other path the UI routes itself."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .. import xterm_bundle as xterm_bundle_mod
from ..errors import NotFound
from ..state import STATE
from ..static import MemoryFile

#: Paths that never fall back to index.html (an unknown API path is a 404, not a page).
RESERVED = ("/func", "/pipe", "/server", "/static", "/vendor")


async def static_file(request: web.Request) -> web.StreamResponse:
    ui = request.app[STATE].ui
    assert ui is not None
    return ui.response(request, request.match_info["path"])


async def xterm_file(request: web.Request) -> web.StreamResponse:
    xterm = request.app[STATE].xterm
    assert xterm is not None
    return xterm.response(request, request.match_info["path"])


async def xterm_bundle(request: web.Request) -> web.StreamResponse:
    """Debian's xterm.js as one ES module (see xterm_bundle: the packaged xterm.js cannot load in
    a browser), built on first use and then served from memory like any other file."""
    state = request.app[STATE]
    if state.xterm_bundle is None:
        try:
            body = await asyncio.to_thread(xterm_bundle_mod.build)
        except (xterm_bundle_mod.BundleError, OSError) as exc:
            raise NotFound(f"the terminal library is not installed: {exc}") from None
        state.xterm_bundle = MemoryFile(body, "text/javascript; charset=utf-8")
    return state.xterm_bundle.response(request)


async def index(request: web.Request) -> web.StreamResponse:
    path = request.path
    if any(path == p or path.startswith(p + "/") for p in RESERVED):
        raise NotFound()
    ui = request.app[STATE].ui
    assert ui is not None
    if not ui.exists("index.html"):
        raise NotFound("the web UI is not installed (no index.html)")
    return ui.response(request, "index.html")


def routes(app: web.Application) -> None:
    app.router.add_get("/static/{path:.+}", static_file)
    app.router.add_get("/vendor/xterm/bundle.js", xterm_bundle)
    app.router.add_get("/vendor/xterm/{path:.+}", xterm_file)
    app.router.add_get("/{tail:.*}", index)
