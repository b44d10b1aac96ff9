"""Redis for the half-stack: Debian's redis-server, bound to loopback, run by systemd or
supervisor, restarted only when its config changed."""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import files

from . import _ops
from ._service import Service, ensure_service, manager
from .settings import Settings

CONF = "/etc/redis/redis.conf"


def service(settings: Settings) -> Service:
    return Service(
        name="redis",
        unit="redis-server.service",
        # Debian's config daemonizes and logs to a file; supervisor wants the foreground and stdout
        command=f'/usr/bin/redis-server {CONF} --daemonize no --supervised no --logfile ""',
        user="redis",
        ready=f'[ "$(redis-cli -h {settings.redis_listen} -p {settings.redis_port} ping)" = PONG ]',
        log_dir=settings.log_dir,
        stopwaitsecs=30,
    )


@deploy("redis")
def redis(settings: Settings) -> None:
    _ops.packages(name="Install redis-server", packages=["redis-server", "redis-tools"])
    configs = [
        files.line(name="Bind loopback only", path=CONF, line=r"^bind .*",
                   replace=f"bind {settings.redis_listen}"),
        files.line(name="Port", path=CONF, line=r"^port .*", replace=f"port {settings.redis_port}"),
        files.line(name="Max memory", path=CONF, line=r"^#? ?maxmemory <bytes>$|^maxmemory .*",
                   replace=f"maxmemory {settings.redis_maxmemory}"),
    ]
    if manager() == "supervisor":
        files.directory(name="Runtime directory", path="/run/redis", user="redis", group="redis",
                        mode="2755")
    ensure_service(service(settings), configs=configs, timeout=settings.ready_timeout)
