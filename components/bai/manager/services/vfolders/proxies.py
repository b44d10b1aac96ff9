"""The storage proxies as the manager's services see them: one pooled client per manager (kept
in the context), the ``volumes/`` configuration from etcd, and proxy failures mapped to the
manager's API errors (an unreachable proxy is 503; a proxy's 4xx is the matching 4xx)."""

from __future__ import annotations

from typing import Any

from bai.common.storage_client import (
    ProxyInfo,
    ProxyRefused,
    ProxyUnknown,
    ProxyUnreachable,
    StorageProxyClient,
    VolumeConfig,
)
from bai.manager import errors
from bai.manager.services.context import ManagerContext

_KEY = "storage_proxies"


def client(ctx: ManagerContext) -> StorageProxyClient:
    """This manager's client of the storage proxies (made on first use, closed by close())."""
    found = ctx.extra.get(_KEY)
    if not isinstance(found, StorageProxyClient):
        found = ctx.extra[_KEY] = StorageProxyClient(ctx.etcd)
    return found


async def close(ctx: ManagerContext) -> None:
    found = ctx.extra.pop(_KEY, None)
    if isinstance(found, StorageProxyClient):
        await found.close()


def split_host(host: str) -> tuple[str, str]:
    """``"<proxy>:<volume>"`` -> (proxy, volume), split at the first colon."""
    proxy, sep, volume = host.partition(":")
    if not sep or not proxy or not volume:
        raise errors.InvalidAPIParameters(f"invalid storage host {host!r} (expected <proxy>:<volume>)")
    return proxy, volume


async def volume_config(ctx: ManagerContext) -> VolumeConfig:
    try:
        return await client(ctx).volume_config()
    except ProxyUnreachable as exc:
        raise errors.ServiceUnavailable(str(exc)) from None


async def proxy_info(ctx: ManagerContext, proxy: str) -> ProxyInfo:
    config = await volume_config(ctx)
    found = config.proxies.get(proxy)
    if found is None:
        raise errors.StorageProxyUnavailable(f"storage proxy {proxy!r} is not configured")
    return found


async def call(ctx: ManagerContext, proxy: str, method: str, path: str, body: dict[str, Any] | None = None,
               *, deadline: float | None = None, not_found: type[errors.ApiError] = errors.VFolderFileNotFound,
               ) -> Any:
    """One manager-facing call; proxy failures become the manager's errors."""
    return (await request(ctx, proxy, method, path, body, deadline=deadline, not_found=not_found))[1]


async def request(ctx: ManagerContext, proxy: str, method: str, path: str, body: dict[str, Any] | None = None,
                  *, deadline: float | None = None, not_found: type[errors.ApiError] = errors.VFolderFileNotFound,
                  ) -> tuple[int, Any]:
    """As call(), with the proxy's HTTP status."""
    try:
        return await client(ctx).request(proxy, method, path, body, deadline=deadline)
    except ProxyUnknown:
        raise errors.StorageProxyUnavailable(f"storage proxy {proxy!r} is not configured") from None
    except ProxyUnreachable:
        raise errors.StorageProxyUnavailable(
            f"storage proxy {proxy!r} is unreachable; nothing was changed, try again later") from None
    except ProxyRefused as exc:
        raise refused(exc, not_found) from None


def refused(exc: ProxyRefused, not_found: type[errors.ApiError]) -> errors.ApiError:
    """A proxy's error answer as the manager's error of the same class (4xx stays 4xx)."""
    msg = exc.message
    status = exc.status
    problem = exc.body.get("type") if isinstance(exc.body, dict) else None
    if isinstance(problem, str) and problem.endswith("/quota-exceeded"):
        return errors.QuotaExceeded(msg)
    if status == 403:  # our shared secret was refused: the operator's problem, not the client's
        return errors.StorageProxyFailed("the storage proxy refused the manager's credentials")
    if status == 404:
        return not_found(msg)
    if status == 409:
        return errors.VFolderFileConflict(msg)
    if status == 413:
        return errors.RequestTooLarge(msg)
    if status in (412, 507):
        return errors.QuotaExceeded(msg)
    if 400 <= status < 500:
        return errors.VFolderOperationFailed(msg)
    return errors.StorageProxyFailed(msg)
