"""Who is asking, from where, and whether a browser may make this call.

CSRF. A state-changing call (any method but GET/HEAD/OPTIONS) and every websocket handshake is
refused with 403 unless one of these holds:

* it carries ``X-BackendAI-CSRF-Token`` equal to its login's token (the web UI reads the token from
  ``/server/login`` or ``/server/login-check`` and sends it on every such call; another site can
  neither read it nor set custom headers without a CORS preflight we never grant), or
* it is not a browser's: no ``Origin`` and no ``Sec-Fetch-Site`` header. Every current browser sends
  ``Origin`` on cross-origin POST/PUT/PATCH/DELETE and on every websocket handshake, so a forged
  cross-site request always shows one. The official client (session mode) sends neither, so it
  works unchanged.

Websocket handshakes cannot carry custom headers; a browser's is accepted when its ``Origin`` is
ours (or listed in ``allowed_origins``). Any request whose ``Origin`` names another origin, or
whose ``Sec-Fetch-Site`` is ``cross-site``/``same-site`` (an app served by the app proxy on another
port of the same host is same-site), is refused whatever else it carries.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from .config import WebserverConfig
from .errors import CsrfRefused

CSRF_HEADER = "X-BackendAI-CSRF-Token"
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))


def client_address(request: web.Request, trusted_proxies: frozenset[str]) -> str:
    """The peer, or, when the peer is a trusted proxy, the first X-Forwarded-For entry."""
    peer = request.remote or "unknown"
    if peer in trusted_proxies:
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[0].strip()
        if forwarded and len(forwarded) <= 64 and forwarded.isascii() and forwarded.isprintable():
            return forwarded
    return peer


def own_origin(request: web.Request, cfg: WebserverConfig) -> str:
    return f"{cfg.service.scheme}://{request.host}"


def is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def check_origin(request: web.Request, cfg: WebserverConfig) -> bool:
    """Refuses a request a browser sent from another origin or site; answers whether it looks
    like a browser's at all (it carries Origin or Sec-Fetch-Site)."""
    origin = request.headers.get("Origin")
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
        raise CsrfRefused(f"a {fetch_site} request is not accepted here")
    if origin is not None and origin != own_origin(request, cfg) and origin not in cfg.service.allowed_origins:
        raise CsrfRefused("requests from another origin are not accepted")
    return origin is not None or fetch_site is not None


def check_csrf(request: web.Request, cfg: WebserverConfig, csrf_token: str | None) -> None:
    """Raise CsrfRefused unless this call may change state (see the module's docstring)."""
    from_browser = check_origin(request, cfg)
    if request.method in SAFE_METHODS and not is_websocket(request):
        return
    if not from_browser or is_websocket(request):
        return  # not a browser's, or a browser's websocket from our own origin (checked above)
    sent = request.headers.get(CSRF_HEADER)
    if csrf_token is None or sent is None or not hmac.compare_digest(sent.encode(), csrf_token.encode()):
        raise CsrfRefused(f"missing or wrong {CSRF_HEADER} header")


def content_security_policy(cfg: WebserverConfig) -> str:
    connect = " ".join(("'self'", *cfg.security.csp_connect_src))
    frame = " ".join(cfg.security.csp_frame_src) or "'none'"
    # style-src allows inline styles: the terminal (xterm.js) and charts set them from script;
    # scripts are 'self' only (no inline script, no eval).
    return ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; font-src 'self' data:; "
            f"connect-src {connect}; frame-src {frame}; frame-ancestors 'none'; "
            "base-uri 'none'; form-action 'self'; object-src 'none'")


def security_headers(cfg: WebserverConfig) -> dict[str, str]:
    headers = {
        "Content-Security-Policy": content_security_policy(cfg),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Resource-Policy": "same-origin",
    }
    if cfg.service.scheme == "https":
        headers["Strict-Transport-Security"] = "max-age=31536000"
    return headers
