"""An optional local container registry: Debian's docker-registry (distribution 2.8) on
``registry_listen:registry_port`` (127.0.0.1:5000), run by systemd or supervisor, and registered
in etcd as the original keeps registries (``config/docker/registry/<quoted host:port>`` = URL,
``.../type`` = ``docker``), so ``backend.ai admin image rescan -r 127.0.0.1:5000`` reads it and
agents pull from it. Off unless the host's data sets ``registry.enabled`` (the catalog's ``enabled`` leaves the
role out otherwise).

The registry serves plain HTTP on loopback, which Docker accepts for 127.0.0.0/8 without any
daemon setting; no authentication (only local processes reach it). Sessions may use its images
once a domain lists it in ``allowed_docker_registries``.
"""

from __future__ import annotations

import shlex
from io import StringIO
from typing import Any
from urllib.parse import quote

from pyinfra.api import deploy
from pyinfra.operations import files

from . import _ops
from ._service import Service, ensure_service
from .catalog import PortUse, Role
from .settings import Settings

CONFIG = "/etc/docker/registry/config.yml"


def hostname(settings: Settings) -> str:
    return f"{settings.registry.listen}:{settings.registry.port}"


def config_text(settings: Settings) -> str:
    return (
        "# managed by bai-install; changes are overwritten\n"
        "version: 0.1\n"
        "log:\n  level: info\n  fields:\n    service: registry\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {settings.registry.data_dir}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: {hostname(settings)}\n"
        "  headers:\n    X-Content-Type-Options: [nosniff]\n"
    )


def service(settings: Settings) -> Service:
    return Service(
        name="registry",
        unit="docker-registry.service",
        command=f"/usr/bin/docker-registry serve {CONFIG}",
        user="docker-registry",
        ready=f"curl -fsS -o /dev/null --max-time 2 http://{hostname(settings)}/v2/",
        log_dir=settings.log_dir,
        directory=settings.registry.data_dir,
    )


def etcd_entries(settings: Settings) -> list[tuple[str, str]]:
    """(key, value) pairs registering the registry, as the original's etcd layout has them."""
    key = f"config/docker/registry/{quote(hostname(settings), safe='')}"
    return [(key, f"http://{hostname(settings)}"), (f"{key}/type", "docker")]


def _register_ops(settings: Settings) -> list[Any]:
    """Each key written (with etcdctl, which needs only etcd) when etcd holds another value."""
    etcdctl = f"ETCDCTL_API=3 etcdctl --endpoints={settings.etcd.endpoint} --dial-timeout=3s"
    ops = []
    for key, value in etcd_entries(settings):
        full = shlex.quote(f"/sorna/{settings.etcd.namespace}/{key}")
        ops.append(_ops.ensure(
            name=f"etcd key {key}",
            check=f'[ "$({etcdctl} get {full} --print-value-only)" = {shlex.quote(value)} ]',
            commands=[f"{etcdctl} put {full} {shlex.quote(value)} >/dev/null"],
            noop_message=f"{key} is current",
        ))
    return ops


@deploy("registry")
def registry(settings: Settings) -> None:
    _ops.packages(name="Install docker-registry", packages=["docker-registry", "curl", "etcd-client"])
    files.directory(name="Registry storage", path=settings.registry.data_dir, user="docker-registry",
                    group="docker-registry", mode="750")
    conf = files.put(name=f"Write {CONFIG}", src=StringIO(config_text(settings)), dest=CONFIG, mode="644")
    ensure_service(service(settings), configs=[conf], timeout=settings.ready_timeout)
    _register_ops(settings)


def ports(settings: Settings) -> list[PortUse]:
    return [PortUse(settings.registry.port, settings.registry.listen, "container registry")]


ROLE = Role(name="registry", groups=("manager",), deploy=registry, services=lambda s: [service(s)],
            ports=ports, enabled=lambda s: s.registry.enabled)
