"""The app proxy (``bai-app-proxy``): its config, its service, and its registration as the
resource group's app proxy (the original's ``wsproxy_addr`` / ``wsproxy_api_token``).

* ``/etc/backend.ai/app-proxy.toml`` (root:bai-appproxy, mode 640: it holds the three keys) from
  the settings; the keys (``app_proxy_jwt_key`` signs start-service tokens,
  ``app_proxy_permit_key`` the browsers' per-app permits, ``app_proxy_api_secret`` is what the
  manager sends) are generated once and kept in the secrets file like the others.
* The proxy runs as the unprivileged system user ``bai-appproxy`` (it needs no root: its ports
  are above 1024 and it reads only its config); it restarts only when its config or the
  installed code changed, and the role waits until ``GET /status`` answers ``healthy``.
* Registration runs on the manager's host, after the manager role (the database is migrated and
  has the resource group): ``python -m bai.appproxy.register`` reads the secret from the proxy's
  config, so it never appears on a command line, and changes nothing when already registered.
"""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra.api import deploy

from . import _ops
from ._service import Service, ensure_service
from .bai import account_daemon_service, precheck, toml_text, unprivileged_daemon_files
from .catalog import PortUse, Role
from .settings import Settings

USER = "bai-appproxy"


def config(settings: Settings) -> dict[str, Any]:
    """app-proxy.toml, exactly the keys the proxy reads."""
    return {
        "etcd": {"namespace": settings.etcd.namespace, "addr": settings.etcd.addr},
        "app-proxy": {
            "id": settings.app_proxy.id,
            "bind-host": settings.app_proxy.bind_host,
            "advertised-host": settings.app_proxy.advertised_host,
            "bind-api-port": settings.app_proxy.api_port,
            "bind-proxy-port-range": list(settings.app_proxy.port_range),
            "jwt-encrypt-key": settings.app_proxy.jwt_key,
            "permit-hash-key": settings.app_proxy.permit_key,
            "api-secret": settings.app_proxy.api_secret,
            "token-ttl": settings.app_proxy.token_ttl,
            "cookie-ttl": settings.app_proxy.cookie_ttl,
        },
        "logging": {"level": settings.log_level},
    }


def config_text(settings: Settings) -> str:
    return toml_text(config(settings))


def _local_status_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.app_proxy.bind_host in ("0.0.0.0", "") else settings.app_proxy.bind_host
    return f"http://{host}:{settings.app_proxy.api_port}/status"


def service(settings: Settings) -> Service:
    return account_daemon_service(settings, name="app-proxy", description="bai app proxy (sessions' web apps)",
                                  config_path=settings.app_proxy_toml, after="etcd.service", account=USER,
                                  ready_url=_local_status_url(settings), expect="status=healthy")


def register_command(settings: Settings, check: bool) -> str:
    return " ".join([
        settings.bin("python"), "-m", "bai.appproxy.register",
        "--manager-config", shlex.quote(settings.manager_toml),
        "--app-proxy-config", shlex.quote(settings.app_proxy_toml),
        "--scaling-group", shlex.quote(settings.app_proxy.scaling_group),
        "--url", shlex.quote(settings.app_proxy.endpoint),
        *(["--check"] if check else []),
    ])


@deploy("app-proxy")
def app_proxy(settings: Settings) -> None:
    precheck(settings, "bai-app-proxy")
    conf, code = unprivileged_daemon_files(settings, account=USER, label="app proxy", stamp="app-proxy",
                                           config_path=settings.app_proxy_toml, config_text=config_text(settings))
    ensure_service(service(settings), configs=[conf, code], timeout=settings.ready_timeout)
    _ops.ensure(name=f"Register the app proxy with resource group {settings.app_proxy.scaling_group}",
                check=register_command(settings, check=True), commands=[register_command(settings, check=False)],
                noop_message=f"{settings.app_proxy.scaling_group} uses {settings.app_proxy.endpoint}")


def ports(settings: Settings) -> list[PortUse]:
    a = settings.app_proxy
    lo, hi = a.port_range
    return [PortUse(a.api_port, a.bind_host, "app proxy API"),
            PortUse(lo, a.bind_host, "app proxy circuits (one per open app)", last=hi)]


ROLE = Role(name="app-proxy", groups=("manager",), deploy=app_proxy, services=lambda s: [service(s)],
            ports=ports)
