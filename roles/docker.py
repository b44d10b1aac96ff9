"""Docker Engine for agents: Debian's docker.io.

Under systemd: Debian's docker.service, running and enabled. Without systemd: a supervisor
program runs dockerd, unless a Docker engine already answers ``docker info`` (one started by
other means is left alone; one we started before stays ours).
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from . import _ops
from ._facts import Check
from ._service import Service, ensure_service, manager
from .catalog import Role
from .settings import Settings


def service(settings: Settings) -> Service:
    return Service(
        name="dockerd",
        unit="docker.service",
        command="/usr/sbin/dockerd",
        ready="docker info",
        stopwaitsecs=60,
        log_dir=settings.log_dir,
    )


@deploy("docker")
def docker(settings: Settings) -> None:
    svc = service(settings)
    if manager() == "supervisor":
        ours = host.get_fact(Check, cmd=f"test -f {svc.program_path}")
        if not ours and host.get_fact(Check, cmd="docker info"):
            _ops.wait_ready(name="Docker engine (already running, not managed here)",
                            service="docker", check="docker info", timeout=10)
            return
    _ops.packages(name="Install docker.io", packages=["docker.io"])
    ensure_service(svc, timeout=settings.ready_timeout)


ROLE = Role(name="docker", groups=("agents",), deploy=docker, services=lambda s: [service(s)])
