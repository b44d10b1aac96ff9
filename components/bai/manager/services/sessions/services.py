"""Starting a session's service port (JupyterLab, the web terminal, ...) on demand, for the
``start-service`` endpoint and the app proxy built on it.

:func:`start_service` checks who asks (the session's owner, or an admin acting for the owner
with ``owner_access_key``), that the session runs and has the service, has the main kernel's
agent start it (``start_service`` RPC: the runner runs the image's service definition and
waits until it listens) and answers where it can be reached: the agent's bind host and the
host port published for the service's container port.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bai.common.agent_rpc import AgentError
from bai.manager import errors
from bai.manager.store.keypairs import Requester

from ..context import ManagerContext
from .lookup import running_main

__all__ = ["start_service"]


def _options(value: Mapping[str, Any] | str | None, what: str) -> dict[str, Any]:
    """``envs``/``arguments`` as an object; the original's clients send them as JSON text."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise errors.InvalidAPIParameters(f"{what} must be a JSON object") from None
    if not isinstance(value, Mapping):
        raise errors.InvalidAPIParameters(f"{what} must be a JSON object")
    return dict(value)


async def start_service(ctx: ManagerContext, requester: Requester, ref: str, app: str, *,
                        port: int | None = None, envs: Mapping[str, Any] | str | None = None,
                        arguments: Mapping[str, Any] | str | None = None,
                        owner_access_key: str | None = None) -> dict[str, Any]:
    """Start service ``app`` of session ``ref`` (if it is not running already) and say where it
    listens: ``{"kernel_host", "kernel_port", "protocol", "container_port", "status": "started" |
    "running", "session_id", "kernel_id", "user_uuid", "group_id", "access_key", "domain_name"}``.

    ``port`` picks one of a multi-port service's container ports (default: its first). 404 for a
    session the requester may not see, 400 when it is not running, for an unknown service (the
    message lists the session's services), a port the service does not have, or arguments/envs
    its definition does not allow; 500 when the service fails to start (the runner's reason)."""
    env_values, arg_values = _options(envs, "envs"), _options(arguments, "arguments")
    owner, row, main = await running_main(ctx, requester, ref, owner_access_key)
    services = [sp for sp in main.service_ports or [] if isinstance(sp, dict)]
    found = next((sp for sp in services if sp.get("name") == app), None)
    if found is None:
        names = [str(sp.get("name")) for sp in services]
        raise errors.InvalidAPIParameters(
            f"The session has no service {app!r} (its services: {', '.join(names) or 'none'}).",
            data={"services": names})
    container_ports = list(found.get("container_ports") or [])
    host_ports = list(found.get("host_ports") or [])
    index = 0
    if port is not None:
        if port not in container_ports:
            raise errors.InvalidAPIParameters(
                f"Service {app!r} has no port {port} (its ports: {', '.join(map(str, container_ports))}).")
        index = container_ports.index(port)
    if index >= len(host_ports):
        raise errors.InternalServerError(f"Service {app!r} has no published host port.")
    status = "running"
    if found.get("protocol") != "preopen":  # a preopen port is served by the session's own code
        try:
            result = await ctx.agents.get(main.agent_addr).start_service(
                str(main.id), app, arguments=arg_values, envs=env_values)
        except AgentError as exc:
            if exc.status == 400:
                raise errors.InvalidAPIParameters(exc.msg or exc.title) from exc
            raise errors.InternalServerError(f"Cannot start service {app!r}: {exc.msg or exc.title}") from exc
        status = str(result.get("status"))
        if status not in ("started", "running"):
            raise errors.InternalServerError(
                f"Service {app!r} failed to start: {result.get('error') or 'no reason given'}",
                data={"service": app, "error": result.get("error")})
    return {
        "kernel_host": main.kernel_host or "127.0.0.1", "kernel_port": int(host_ports[index]),
        "protocol": str(found.get("protocol")), "container_port": int(container_ports[index]),
        "status": status, "session_id": str(row.id), "kernel_id": str(main.id),
        "user_uuid": str(row.user_uuid), "group_id": str(row.group_id), "access_key": str(row.access_key),
        "domain_name": str(row.domain_name),
    }
