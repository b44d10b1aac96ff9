"""A session's services, opened for its owner: ``start-service`` through the resource group's app
proxy (token + advertised address), the websocket tunnels' target, and the list of apps.

The service itself is started on the agent by :func:`.sessions.services.start_service`; this
module adds what the app proxy needs around it: the session's owner
and resource group, the coordinator's address and token, and the error the original answers when
a resource group has no app proxy (503 "No coordinator configured for this resource group")."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StrictInt, StrictStr

from bai.appproxy.client import CoordinatorError, register_service
from bai.common.session_activity import Throttled
from bai.manager import errors
from bai.manager.store import app_proxies as store
from bai.manager.store import sessions as session_store
from bai.manager.store.keypairs import Requester

from .context import ManagerContext
from .sessions import services
from .sessions.activity import touch
from .sessions.lookup import get_one, resolve_owner, service_ports_for_client

__all__ = ["NO_COORDINATOR", "AppsQuery", "ServiceTarget", "StartService", "TunnelQuery", "apps",
           "start_service", "traffic_stamper", "tunnel_target"]

NO_COORDINATOR = "No coordinator configured for this resource group"
APP_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$"
ACCESS_KEY = r"^[A-Za-z0-9]+$"


class StartService(BaseModel):
    """``POST /session/{ref}/start-service`` (the original's body: envs and arguments as JSON strings)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra={"examples": [
        {"app": "jupyter"}, {"app": "ttyd", "arguments": "{\"-P\": \"12345\"}"}]})
    app: StrictStr = Field(validation_alias=AliasChoices("app", "service"), pattern=APP_NAME)
    port: StrictInt | None = Field(None, ge=1024, le=65535)
    envs: StrictStr | None = Field(None, max_length=65536)
    arguments: StrictStr | None = Field(None, max_length=65536)
    login_session_token: StrictStr | None = Field(None, max_length=1024)


class TunnelQuery(BaseModel):
    """``/stream/session/{ref}/tcpproxy`` and ``/httpproxy`` query string."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    app: str = Field(validation_alias=AliasChoices("app", "service"), pattern=APP_NAME)
    port: int | None = Field(None, ge=1024, le=65535)
    # (in the URL: aiohttp reads at most 8190 bytes of a request line)
    envs: str | None = Field(None, max_length=2048)
    arguments: str | None = Field(None, max_length=2048)
    owner_access_key: str | None = Field(None, pattern=ACCESS_KEY, max_length=64)


class AppsQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    owner_access_key: str | None = Field(None, pattern=ACCESS_KEY, max_length=64)


class ServiceTarget(BaseModel):
    kernel_host: str
    kernel_port: int
    protocol: str = "http"
    session_id: uuid.UUID | None = None


async def _coordinator(ctx: ManagerContext, requester: Requester, ref: str) -> Any:
    """The app proxy of the resource group the requester's session ``ref`` runs in (503 if none)."""
    async with ctx.db.connect() as conn:
        session = await get_one(conn, ref, requester.access_key)
        coordinator = await store.coordinator_of(conn, session.scaling_group_name or "")
    if coordinator is None or not coordinator.wsproxy_addr:
        raise errors.ServiceUnavailable(NO_COORDINATOR)
    return coordinator


async def start_service(ctx: ManagerContext, requester: Requester, ref: str, req: StartService) -> dict[str, str]:
    """The original's start-service: the app started on the agent, registered with the resource
    group's app proxy; ``{"token", "wsproxy_addr"}`` for the client to open it there."""
    coordinator = await _coordinator(ctx, requester, ref)
    target = await services.start_service(ctx, requester, ref, req.app, port=req.port, envs=req.envs,
                                          arguments=req.arguments)
    owner = {key: target[key] for key in ("user_uuid", "group_id", "access_key", "domain_name")}
    owner["id"] = target["session_id"]
    try:
        token, advertised = await register_service(
            coordinator.wsproxy_addr, coordinator.wsproxy_api_token or "", kernel_host=target["kernel_host"],
            kernel_port=target["kernel_port"], session=owner, login_session_token=req.login_session_token)
    except CoordinatorError as exc:
        raise errors.ServiceUnavailable(exc.msg) from None
    return {"token": token, "wsproxy_addr": advertised}


async def tunnel_target(ctx: ManagerContext, requester: Requester, ref: str, q: TunnelQuery) -> ServiceTarget:
    """Where a tcpproxy/httpproxy websocket of ``q.app`` goes (the service started if need be)."""
    found = await services.start_service(ctx, requester, ref, q.app, port=q.port, envs=q.envs,
                                         arguments=q.arguments, owner_access_key=q.owner_access_key)
    return ServiceTarget.model_validate(found)


def traffic_stamper(ctx: ManagerContext, target: ServiceTarget) -> Callable[[], None]:
    """What a tunnel calls for each chunk, either way: the session's activity (the idle timeout),
    stamped at most once a second."""
    if target.session_id is None:
        return lambda: None
    return Throttled(functools.partial(touch, ctx, target.session_id))


async def apps(ctx: ManagerContext, requester: Requester, ref: str, owner_access_key: str | None) -> list[dict[str, Any]]:
    """``GET /stream/session/{ref}/apps``: the main kernel's service ports, as clients read them."""
    owner = await resolve_owner(ctx, requester, owner_access_key)
    async with ctx.db.connect() as conn:
        session = await get_one(conn, ref, owner.access_key)
        kernels = await session_store.kernels_of(conn, session.id)
    main = next((k for k in kernels if k.cluster_role == "main"), kernels[0] if kernels else None)
    return service_ports_for_client(list(main.service_ports or ())) if main is not None else []
