"""etcd for the half-stack: Debian's etcd-server, single member, loopback URLs only."""

from __future__ import annotations

from io import StringIO

from pyinfra.api import deploy
from pyinfra.operations import files

from . import _ops
from ._service import Service, ensure_service
from .settings import Settings

DEFAULTS = "/etc/default/etcd"


def _urls(settings: Settings) -> dict[str, str]:
    client = f"http://{settings.etcd_listen}:{settings.etcd_client_port}"
    peer = f"http://{settings.etcd_listen}:{settings.etcd_peer_port}"
    return {
        "name": settings.etcd_name,
        "data-dir": settings.etcd_data_dir,
        "listen-client-urls": client,
        "advertise-client-urls": client,
        "listen-peer-urls": peer,
        "initial-advertise-peer-urls": peer,
        "initial-cluster": f"{settings.etcd_name}={peer}",
        "auto-compaction-retention": "1",
    }


def defaults_text(settings: Settings) -> str:
    """/etc/default/etcd, read by Debian's etcd.service (ETCD_* variables)."""
    lines = ["# managed by bai-install; changes are overwritten"]
    for key, value in _urls(settings).items():
        lines.append(f'ETCD_{key.upper().replace("-", "_")}="{value}"')
    return "\n".join(lines) + "\n"


def service(settings: Settings) -> Service:
    flags = " ".join(f"--{k} {v}" for k, v in _urls(settings).items())
    return Service(
        name="etcd",
        unit="etcd.service",
        command=f"/usr/bin/etcd {flags}",
        user="etcd",
        ready=(f"ETCDCTL_API=3 etcdctl --endpoints=http://{settings.etcd_listen}:"
               f"{settings.etcd_client_port} --dial-timeout=2s endpoint health"),
        log_dir=settings.log_dir,
        directory="/var/lib/etcd",
    )


@deploy("etcd")
def etcd(settings: Settings) -> None:
    _ops.packages(name="Install etcd", packages=["etcd-server", "etcd-client"])
    files.directory(name="Data directory", path=settings.etcd_data_dir, user="etcd", group="etcd",
                    mode="700")
    conf = files.put(name="Write /etc/default/etcd", src=StringIO(defaults_text(settings)),
                     dest=DEFAULTS, mode="644")
    ensure_service(service(settings), configs=[conf], timeout=settings.ready_timeout)
