"""The manager's client of the storage proxies' manager-facing API.

Each proxy is described in etcd under ``volumes/proxies/<proxy>/`` (``manager_api``, ``secret``,
``ssl_verify``, ``client_api``, ``sftp_scaling_groups``), as in the original; the descriptions
are cached for a few seconds so a request does not cost an etcd round trip. Every call carries
``X-BackendAI-Storage-Auth-Token``, has a deadline and reads at most ``max_reply_bytes`` of the
answer. Failures are two exceptions the manager's services map to its API errors: the proxy
could not be reached (:class:`ProxyUnreachable`) or it answered with an error
(:class:`ProxyRefused`, carrying its status and message).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from bai.common.bounded import read_bounded
from bai.common.etcd import EtcdError, EtcdStore

#: Manager-facing answers are small JSON documents (a directory listing is the biggest).
DEFAULT_MAX_REPLY_BYTES = 32 * 1024 * 1024
AUTH_HEADER = "X-BackendAI-Storage-Auth-Token"


class StorageProxyError(Exception):
    """Base of what a storage proxy call can raise."""


class ProxyUnknown(StorageProxyError):
    """etcd describes no proxy of that name (or not its manager_api/secret)."""


class ProxyUnreachable(StorageProxyError):
    """The proxy could not be reached, did not answer in time, or answered garbage."""


class ProxyRefused(StorageProxyError):
    """The proxy answered with an HTTP error."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.body = body


@dataclass(frozen=True)
class ProxyInfo:
    name: str
    manager_api: str
    client_api: str
    secret: str
    ssl_verify: bool
    sftp_scaling_groups: tuple[str, ...] = ()


def _message(body: Any, fallback: str) -> str:
    """A short human message from a proxy's error body (problem+json or {"msg": ...})."""
    if isinstance(body, dict):
        for key in ("msg", "detail", "title", "error"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value[:500]
    return fallback


class StorageProxyClient:
    """Calls to every storage proxy etcd lists, over one pooled HTTP session."""

    def __init__(self, etcd: EtcdStore, *, timeout: float = 30.0, connect_timeout: float = 5.0,
                 cache_ttl: float = 5.0, max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES) -> None:
        self._etcd = etcd
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._cache_ttl = cache_ttl
        self._max_reply = max_reply_bytes
        self._cache: tuple[float, VolumeConfig] | None = None
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def invalidate(self) -> None:
        self._cache = None

    async def volume_config(self) -> VolumeConfig:
        """Everything under ``volumes/`` in etcd (cached for ``cache_ttl`` seconds)."""
        cached = self._cache
        if cached is not None and time.monotonic() - cached[0] < self._cache_ttl:
            return cached[1]
        async with self._lock:
            cached = self._cache
            if cached is not None and time.monotonic() - cached[0] < self._cache_ttl:
                return cached[1]
            try:
                async with asyncio.timeout(self._connect_timeout * 2):
                    flat = await self._etcd.get_prefix("volumes/")
            except (EtcdError, TimeoutError) as exc:
                raise ProxyUnreachable(f"cannot read the storage configuration from etcd: {exc}") from exc
            found = parse_volume_config(flat)
            self._cache = (time.monotonic(), found)
            return found

    async def proxies(self) -> dict[str, ProxyInfo]:
        return (await self.volume_config()).proxies

    async def proxy(self, name: str) -> ProxyInfo:
        found = (await self.proxies()).get(name)
        if found is None:
            raise ProxyUnknown(f"no storage proxy named {name!r} is configured")
        return found

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout, sock_connect=self._connect_timeout),
                connector=aiohttp.TCPConnector(limit=64),
            )
        return self._session

    async def call(self, proxy_name: str, method: str, path: str, body: dict[str, Any] | None = None,
                   *, deadline: float | None = None) -> Any:
        """``method path`` on the proxy with a JSON ``body``; its JSON answer (None for an empty
        one, e.g. 204). Raises ProxyUnknown, ProxyUnreachable or ProxyRefused."""
        return (await self.request(proxy_name, method, path, body, deadline=deadline))[1]

    async def request(self, proxy_name: str, method: str, path: str, body: dict[str, Any] | None = None,
                      *, deadline: float | None = None) -> tuple[int, Any]:
        """As call(), with the answer's HTTP status (some answers, e.g. mkdir's 201/207, are relayed)."""
        info = await self.proxy(proxy_name)
        url = info.manager_api.rstrip("/") + path
        ssl_opt: ssl.SSLContext | bool = True if info.ssl_verify else False
        headers = {AUTH_HEADER: info.secret}
        kwargs: dict[str, Any] = {"headers": headers, "ssl": ssl_opt}
        if body is not None:
            kwargs["data"] = json.dumps(body)
            headers["Content-Type"] = "application/json"
        if deadline is not None:  # longer than the default, for calls that do real work (delete, clone)
            kwargs["timeout"] = aiohttp.ClientTimeout(total=deadline, sock_connect=self._connect_timeout)
        try:
            async with self._http().request(method, url, **kwargs) as resp:
                raw = await read_bounded(resp, self._max_reply)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ProxyUnreachable(f"storage proxy {proxy_name!r} unreachable: {type(exc).__name__}") from exc
        if len(raw) > self._max_reply:
            raise ProxyUnreachable(f"storage proxy {proxy_name!r} answered more than {self._max_reply} bytes")
        parsed: Any = None
        if raw.strip():
            try:
                parsed = json.loads(raw)
            except ValueError:
                if status < 400:
                    raise ProxyUnreachable(f"storage proxy {proxy_name!r} answered malformed JSON") from None
        if status >= 400:
            raise ProxyRefused(status, _message(parsed, f"HTTP {status}"), parsed)
        return status, parsed


@dataclass(frozen=True)
class VolumeConfig:
    """The ``volumes/`` tree of etcd: proxies, enabled ownership types (``_types/user``,
    ``_types/group``; only ``user`` when none is set, as the original), the default host and
    which usage figures ``/folders/_/hosts`` exposes."""

    proxies: dict[str, ProxyInfo]
    types: tuple[str, ...]
    default_host: str | None
    exposed_volume_info: tuple[str, ...]


def parse_volume_config(flat: dict[str, str]) -> VolumeConfig:
    proxies = parse_proxies({k.removeprefix("proxies/"): v for k, v in flat.items() if k.startswith("proxies/")})
    types = tuple(sorted({k.removeprefix("_types/") for k in flat if k.startswith("_types/")} - {""}))
    exposed = tuple(s.strip() for s in flat.get("exposed_volume_info", "").split(",") if s.strip())
    return VolumeConfig(proxies=proxies, types=types or ("user",), default_host=flat.get("default_host") or None,
                        exposed_volume_info=exposed)


def parse_proxies(flat: dict[str, str]) -> dict[str, ProxyInfo]:
    """``{"<proxy>/manager_api": ..., ...}`` (keys under ``volumes/proxies/``) -> ProxyInfo per
    proxy that has at least a manager_api and a secret."""
    grouped: dict[str, dict[str, str]] = {}
    for key, value in flat.items():
        name, sep, field = key.partition("/")
        if sep and name:
            grouped.setdefault(name, {})[field] = value
    out: dict[str, ProxyInfo] = {}
    for name, fields in grouped.items():
        if not fields.get("manager_api") or not fields.get("secret"):
            continue
        sftp = tuple(s.strip() for s in fields.get("sftp_scaling_groups", "").split(",") if s.strip())
        out[name] = ProxyInfo(
            name=name, manager_api=fields["manager_api"], client_api=fields.get("client_api", ""),
            secret=fields["secret"], ssl_verify=fields.get("ssl_verify", "true").strip().lower() not in
            ("false", "0", "no", "off"), sftp_scaling_groups=sftp,
        )
    return out
