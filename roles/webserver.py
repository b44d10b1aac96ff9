"""The webserver (``bai-webserver``): the web UI and its signed API proxy, next to each manager.

* ``/etc/backend.ai/webserver.toml`` (root:bai-webserver, mode 640: it holds the Redis password)
  from the settings: the local manager, the cluster's Redis (browser logins live there, so every
  manager's webserver knows every login), the storage proxy and app proxy origins the UI's
  Content-Security-Policy allows.
* Debian's ``libjs-xterm`` and ``node-xterm`` (the browser terminal; the webserver bundles them).
* The webserver runs as the unprivileged system user ``bai-webserver``; it restarts only when its
  config or the installed code changed, and the role waits until ``/server/login-check`` answers.
* The admin (``admin@lablup.com``) gets the generated ``webserver_admin_password`` (secrets file)
  as their password, and the client env file gets ``BAI_WEB_ENDPOINT``, ``BACKEND_USER_ID`` and
  ``BACKEND_PASSWORD`` (mode 600): ``python -m bai.webserver.install admin-login`` checks both with
  the manager's own login and changes nothing when they hold; the password is read from the
  secrets file, never passed on a command line.
"""

from __future__ import annotations

import shlex
from typing import Any
from urllib.parse import urlsplit

from pyinfra.api.deploy import deploy

from . import _ops
from ._service import Service, ensure_service
from .bai import account_daemon_service, precheck, toml_text, unprivileged_daemon_files
from .catalog import PortUse, Role
from .settings import Settings

USER = "bai-webserver"
PACKAGES = ["libjs-xterm", "node-xterm"]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def config_path(settings: Settings) -> str:
    return f"{settings.config_dir}/webserver.toml"


def config(settings: Settings) -> dict[str, Any]:
    """webserver.toml, exactly the keys the webserver reads."""
    w = settings.webserver
    return {
        "service": {"ip": w.ip, "port": w.port},
        "api": {"domain": "default", "endpoint": settings.manager.endpoint},
        "session": {
            "redis": {"addr": settings.redis.addr, "db": w.redis_db, "password": settings.redis.password,
                      # HA: logins live on whichever server the sentinels name the primary
                      **({"sentinel": list(settings.redis.sentinel),
                          "service-name": settings.redis.service_name} if settings.redis.sentinel else {})},
            "max_age": w.max_age,
            "idle_timeout": w.idle_timeout,
        },
        "security": {"csp_connect_src": sorted({_origin(settings.storage_proxy.client_endpoint),
                                                _origin(settings.app_proxy.endpoint)})},
        "logging": {"level": settings.log_level},
    }


def config_text(settings: Settings) -> str:
    return toml_text(config(settings))


def _local_url(settings: Settings) -> str:
    w = settings.webserver
    host = "127.0.0.1" if w.ip in ("0.0.0.0", "::", "") else w.ip
    return f"http://{host}:{w.port}"


def service(settings: Settings) -> Service:
    return account_daemon_service(settings, name="webserver", description="bai webserver (web UI and API proxy)",
                                  config_path=config_path(settings), after="bai-manager.service", account=USER,
                                  ready_url=_local_url(settings) + "/server/login-check", expect="authenticated=False")


def admin_login_command(settings: Settings, check: bool) -> str:
    return " ".join([
        settings.bin("python"), "-m", "bai.webserver.install", "admin-login",
        "--manager", shlex.quote(settings.manager.endpoint),
        "--secrets", shlex.quote(settings.secrets_path),
        "--client-env", shlex.quote(settings.client_env),
        "--web", shlex.quote(settings.webserver.endpoint),
        *(["--check"] if check else []),
    ])


@deploy("webserver")
def webserver(settings: Settings) -> None:
    precheck(settings, "bai-webserver")
    _ops.packages(name="Install the browser terminal (xterm.js)", packages=PACKAGES)
    conf, code = unprivileged_daemon_files(settings, account=USER, label="webserver", stamp="webserver",
                                           config_path=config_path(settings), config_text=config_text(settings))
    ensure_service(service(settings), configs=[conf, code], timeout=settings.ready_timeout)
    _ops.ensure(name="Give the admin a web login and write it into the client env file",
                check=admin_login_command(settings, check=True), commands=[admin_login_command(settings, check=False)],
                noop_message=f"admin@lablup.com logs in at {settings.webserver.endpoint}")


def ports(settings: Settings) -> list[PortUse]:
    return [PortUse(settings.webserver.port, settings.webserver.ip, "web UI and API proxy")]


ROLE = Role(name="webserver", groups=("manager",), deploy=webserver, services=lambda s: [service(s)], ports=ports)
