"""Redis for the half-stack: Debian's redis-server, bound to loopback, with a password, run by
systemd or supervisor, restarted only when its config changed.

The password (``requirepass``) is generated once and kept in the secrets file like the database
one. It reaches Redis through a small included file (mode 640, root:redis) written from the
installer's memory, so it never appears on a command line; clients find it in etcd
(``config/redis/password``, written by the manager role) and the readiness check reads it from
the secrets file into ``REDISCLI_AUTH``.
"""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra.api import deploy
from pyinfra.operations import files

from . import _ops
from ._common import secret_expr, secrets_file
from ._service import Service, ensure_service, manager
from .catalog import PortUse, Role
from .settings import Settings

CONF = "/etc/redis/redis.conf"
AUTH_CONF = "/etc/redis/bai-auth.conf"


def auth_text(settings: Settings) -> str:
    return f"# managed by bai-install; changes are overwritten\nrequirepass {settings.redis.password}\n"


def cli(settings: Settings, *args: str) -> str:
    """A redis-cli command authenticated with the password of the secrets file (through the
    environment, not the command line)."""
    return (f"REDISCLI_AUTH={secret_expr(settings, 'redis_password')} redis-cli --no-auth-warning "
            f"-h {settings.redis.listen} -p {settings.redis.port} " + " ".join(map(shlex.quote, args)))


def service(settings: Settings) -> Service:
    return Service(
        name="redis",
        unit="redis-server.service",
        # Debian's config daemonizes and logs to a file; supervisor wants the foreground and stdout
        command=f'/usr/bin/redis-server {CONF} --daemonize no --supervised no --logfile ""',
        user="redis",
        ready=f'[ "$({cli(settings, "ping")})" = PONG ]',
        log_dir=settings.log_dir,
        stopwaitsecs=30,
    )


@deploy("redis")
def redis(settings: Settings) -> None:
    if not settings.redis.password:
        raise ValueError("redis_password is empty: the engine generates it (secrets file)")
    _ops.packages(name="Install redis-server", packages=["redis-server", "redis-tools"])
    secrets_file(settings)  # the readiness check reads the password from it
    configs = [
        files.line(name="Bind loopback only", path=CONF, line=r"^bind .*",
                   replace=f"bind {settings.redis.listen}"),
        files.line(name="Port", path=CONF, line=r"^port .*", replace=f"port {settings.redis.port}"),
        files.line(name="Max memory", path=CONF, line=r"^#? ?maxmemory <bytes>$|^maxmemory .*",
                   replace=f"maxmemory {settings.redis.maxmemory}"),
        files.put(name="Write the password file (requirepass)", src=StringIO(auth_text(settings)),
                  dest=AUTH_CONF, mode="640", user="root", group="redis"),
        # last line of the config: it wins over any requirepass above it
        files.line(name="Include the password file", path=CONF,
                   line=f"^include {AUTH_CONF.replace('.', '[.]')}$", replace=f"include {AUTH_CONF}"),
    ]
    if manager() == "supervisor":
        files.directory(name="Runtime directory", path="/run/redis", user="redis", group="redis",
                        mode="2755")
    ensure_service(service(settings), configs=configs, timeout=settings.ready_timeout)


def ports(settings: Settings) -> list[PortUse]:
    return [PortUse(settings.redis.port, settings.redis.listen, "Redis")]


ROLE = Role(name="redis", groups=("halfstack",), deploy=redis, services=lambda s: [service(s)],
            ports=ports)
