"""Signed HTTP/WebSocket requests to the manager API (``BACKEND_ENDPOINT_TYPE=api``).

Mirrors what the official SDK puts on the wire (see ``wire/README.md``):

* on open, an **unsigned** ``GET <endpoint>`` (only ``User-Agent``) reads the server's API
  version; every later request carries ``X-BackendAI-Version: min(server, client)``;
* signed requests carry ``User-Agent``, ``X-BackendAI-Domain``, ``X-BackendAI-Version``,
  ``Date`` (ISO-8601 with microseconds and offset), ``Content-Type`` (``application/json`` with a
  JSON body, ``text/plain`` without one) and ``Authorization: BackendAI signMethod=HMAC-SHA256,
  credential=AK:SIG``; WebSocket upgrades carry no Content-Type and are signed as
  ``application/octet-stream``;
* JSON bodies are ``json.dumps(obj)`` with the default separators;
* error responses become :class:`BackendAPIError` ``(status, reason, problem-json)``.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from bai.common.auth import sign_request

from .config import (
    MIN_API_VERSION,
    APIConfig,
    format_api_version,
    parse_api_version,
)
from .exceptions import (
    PROBLEM_BASE,
    APIVersionWarning,
    BackendAPIError,
    BackendClientError,
)

__all__ = (
    "APISession",
    "APIResponse",
    "BackendAPIError",
    "BackendClientError",
    "NO_BODY",
)


class _NoBody:
    def __repr__(self) -> str:
        return "NO_BODY"


NO_BODY: Final = _NoBody()

#: Max size of one websocket message we accept (console records can be up to 10 MiB each).
WS_MAX_MSG_SIZE = 64 * 2**20


@dataclass
class APIResponse:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        if not self.body:
            return None
        return json.loads(self.body)

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def _describe_conn_error(e: BaseException) -> str:
    if isinstance(e, aiohttp.ClientConnectorError):
        os_err = e.os_error
        if isinstance(os_err, ConnectionRefusedError):
            return "Connection refused"
        if os_err is not None and os_err.errno and not os_err.strerror:
            return os.strerror(os_err.errno)
        return (os_err.strerror or str(os_err)) if os_err is not None else str(e)
    if isinstance(e, TimeoutError):
        return "timed out"
    return str(e) or e.__class__.__name__


class APISession:
    """One client session: an ``aiohttp.ClientSession`` plus the negotiated API version.

    Use as ``async with APISession(config) as api: ...``.
    """

    def __init__(self, config: APIConfig | None = None, *, negotiate: bool = True) -> None:
        self.config = config if config is not None else APIConfig.from_env()
        if self.config.endpoint_type != "api":
            raise BackendClientError(
                f"Endpoint type {self.config.endpoint_type!r} is not supported by this client yet "
                "(only 'api' is); set BACKEND_ENDPOINT_TYPE=api."
            )
        self.client_version: tuple[int, str] = parse_api_version(self.config.version)
        self.api_version: tuple[int, str] = self.client_version
        #: the JSON of ``GET /`` (``{"version", "manager"}``) once negotiated; None if unavailable
        self.server_info: dict[str, Any] | None = None
        self._negotiate = negotiate
        self._http: aiohttp.ClientSession | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> APISession:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        if self._http is None:
            connector = aiohttp.TCPConnector(
                ssl=False if self.config.skip_sslcert_validation else True,
            )
            self._http = aiohttp.ClientSession(connector=connector)
        if self._negotiate:
            try:
                await self.negotiate_version()
            except BaseException:
                await self.close()
                raise

    async def close(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise RuntimeError("APISession is not open")
        return self._http

    @property
    def api_version_str(self) -> str:
        return format_api_version(self.api_version)

    # -- helpers ---------------------------------------------------------------------------

    def _timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=None,
            connect=None,
            sock_connect=self.config.connection_timeout or None,
            sock_read=self.config.read_timeout or None,
        )

    @property
    def host(self) -> str:
        """The ``Host`` value that is signed and sent: the endpoint's authority (host[:port])."""
        return urlsplit(self.config.endpoint).netloc.rpartition("@")[2]

    def build_url(self, path: str, params: dict[str, str] | None = None) -> URL:
        base = URL(self.config.endpoint)
        base_path = base.path.rstrip("/")
        url = base.with_path(f"{base_path}/{path.lstrip('/')}")
        if params:
            url = url.with_query(params)
        return url

    def make_headers(self, method: str, url: URL, content_type: str | None) -> dict[str, str]:
        """Request headers including the signature; ``content_type=None`` means no
        Content-Type header (websocket), signed as ``application/octet-stream``."""
        cfg = self.config
        headers = {
            "User-Agent": cfg.user_agent,
            "X-BackendAI-Domain": cfg.domain,
            "X-BackendAI-Version": self.api_version_str,
        }
        host = self.host
        authorization: str | None = None
        if cfg.is_anonymous:
            headers["Date"] = datetime.now(UTC).isoformat()
        else:
            signed = sign_request(
                cfg.access_key,
                cfg.secret_key,
                method,
                url.raw_path_qs,
                host,
                content_type or "application/octet-stream",
                self.api_version_str,
                hash_name=cfg.hash_type,
            )
            headers["Date"] = signed.date
            authorization = signed.authorization
        if content_type is not None:
            headers["Content-Type"] = content_type
        if authorization is not None:
            headers["Authorization"] = authorization
        # The signature covers the Host header: send exactly the value that was signed.
        headers["Host"] = host
        return headers

    def _conn_error(self, e: BaseException) -> BackendClientError:
        return BackendClientError(
            f"Cannot connect to the API endpoint {self.config.endpoint}: {_describe_conn_error(e)}"
        )

    # -- version negotiation ---------------------------------------------------------------

    async def negotiate_version(self) -> tuple[int, str]:
        """``GET <endpoint>`` without signature; use ``min(server, client)``.

        Connection failures raise BackendClientError; an answer without a usable version keeps
        the client's own version (as the official SDK does).
        """
        attempts = len(self.config.endpoints)
        for attempt in range(attempts):
            try:
                async with self.http.get(
                    URL(self.config.endpoint),
                    headers={"User-Agent": self.config.user_agent},
                    timeout=self._timeout(),
                    allow_redirects=False,
                ) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        return self.api_version
                    info = json.loads(body)
                    server_version = parse_api_version(info["version"])
                    self.server_info = info
                break
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
                if attempt + 1 < attempts:
                    self.config.rotate_endpoints()
                    continue
                raise self._conn_error(e) from e
            except (TimeoutError, aiohttp.ClientError, ValueError, KeyError, TypeError):
                return self.api_version
        if server_version > self.client_version:
            warnings.warn(
                "The server API version is higher than the client. Please upgrade the client package.",
                category=APIVersionWarning,
                stacklevel=2,
            )
        if server_version < MIN_API_VERSION:
            warnings.warn(
                f"The server is too old ({format_api_version(server_version)}) and does not meet the "
                f"minimum API version requirement: {format_api_version(MIN_API_VERSION)}",
                category=APIVersionWarning,
                stacklevel=2,
            )
        self.api_version = min(server_version, self.client_version)
        return self.api_version

    # -- requests --------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = NO_BODY,
        params: dict[str, str] | None = None,
    ) -> APIResponse:
        """Send one signed request; non-2xx/3xx answers raise :class:`BackendAPIError`."""
        method = method.upper()
        if json_body is NO_BODY:
            data = b""
            content_type = "text/plain"
        else:
            data = json.dumps(json_body).encode("utf-8")
            content_type = "application/json"
        attempts = len(self.config.endpoints)
        for attempt in range(attempts):
            url = self.build_url(path, params)
            headers = self.make_headers(method, url, content_type)
            try:
                async with self.http.request(
                    method,
                    url,
                    data=data,
                    headers=headers,
                    timeout=self._timeout(),
                    allow_redirects=False,
                ) as resp:
                    body = await resp.read()
                    if resp.status // 100 not in (2, 3):
                        raise BackendAPIError(resp.status, resp.reason or "", body)
                    return APIResponse(resp.status, resp.reason or "", dict(resp.headers), body)
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
                if attempt + 1 < attempts:
                    self.config.rotate_endpoints()
                    continue
                raise self._conn_error(e) from e
            except TimeoutError as e:
                raise BackendClientError(
                    f"Request to the API endpoint {self.config.endpoint} timed out"
                ) from e
            except aiohttp.ClientError as e:
                raise BackendClientError(
                    f"Request to the API endpoint {self.config.endpoint} has failed: "
                    f"{_describe_conn_error(e)}"
                ) from e
        raise AssertionError("unreachable")

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = NO_BODY,
        params: dict[str, str] | None = None,
    ) -> Any:
        resp = await self.request(method, path, json_body=json_body, params=params)
        try:
            return resp.json()
        except ValueError as e:
            raise BackendClientError(
                f"The API server returned a non-JSON answer for {method} {path}"
            ) from e

    async def gql(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        """``POST /admin/gql``; a non-empty ``errors`` list raises a 400 ``graphql-error``."""
        body = {"query": query, "variables": variables if variables else {}}
        resp = await self.request_json("POST", "/admin/gql", json_body=body)
        if not isinstance(resp, dict):
            raise BackendClientError("The API server returned a malformed GraphQL answer")
        errors = resp.get("errors") or []
        if errors:
            raise BackendAPIError(
                400,
                "Bad request",
                {
                    "type": PROBLEM_BASE + "graphql-error",
                    "title": "GraphQL-generated error",
                    "data": errors,
                },
            )
        return resp.get("data")

    async def ws_connect(
        self, path: str, params: dict[str, str] | None = None
    ) -> aiohttp.ClientWebSocketResponse:
        """Open a signed websocket (``autoping``, 30 s heartbeat, as the official SDK)."""
        url = self.build_url(path, params)
        headers = self.make_headers("GET", url, None)
        try:
            return await self.http.ws_connect(
                url,
                headers=headers,
                autoping=True,
                heartbeat=30.0,
                max_msg_size=WS_MAX_MSG_SIZE,
            )
        except aiohttp.WSServerHandshakeError as e:
            raise BackendAPIError(
                e.status,
                e.message or "",
                {
                    "type": PROBLEM_BASE + "generic-error",
                    "title": f"The server refused the streaming connection ({e.status} {e.message})",
                    "msg": f"GET {url.raw_path_qs}",
                },
            ) from e
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
            raise self._conn_error(e) from e
        except aiohttp.ClientError as e:
            raise BackendClientError(
                f"Streaming connection to {self.config.endpoint} has failed: {_describe_conn_error(e)}"
            ) from e
