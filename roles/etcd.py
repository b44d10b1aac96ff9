"""etcd for the half-stack: Debian's etcd-server, single member, loopback URLs only."""

from __future__ import annotations

from io import StringIO

from pyinfra.api import deploy
from pyinfra.operations import files

from . import _ops
from ._service import Service, ensure_service
from .catalog import PortUse, Role
from .settings import Settings

DEFAULTS = "/etc/default/etcd"


def _urls(settings: Settings) -> dict[str, str]:
    e = settings.etcd
    client = f"http://{e.listen}:{e.client_port}"
    peer = f"http://{e.listen}:{e.peer_port}"
    return {
        "name": e.name,
        "data-dir": e.data_dir,
        "listen-client-urls": client,
        "advertise-client-urls": client,
        "listen-peer-urls": peer,
        "initial-advertise-peer-urls": peer,
        "initial-cluster": f"{e.name}={peer}",
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
        ready=(f"ETCDCTL_API=3 etcdctl --endpoints=http://{settings.etcd.listen}:"
               f"{settings.etcd.client_port} --dial-timeout=2s endpoint health"),
        log_dir=settings.log_dir,
        directory="/var/lib/etcd",
    )


@deploy("etcd")
def etcd(settings: Settings) -> None:
    _ops.packages(name="Install etcd", packages=["etcd-server", "etcd-client"])
    files.directory(name="Data directory", path=settings.etcd.data_dir, user="etcd", group="etcd",
                    mode="700")
    conf = files.put(name="Write /etc/default/etcd", src=StringIO(defaults_text(settings)),
                     dest=DEFAULTS, mode="644")
    ensure_service(service(settings), configs=[conf], timeout=settings.ready_timeout)


def ports(settings: Settings) -> list[PortUse]:
    e = settings.etcd
    return [PortUse(e.client_port, e.listen, "etcd clients"), PortUse(e.peer_port, e.listen, "etcd peers")]


ROLE = Role(name="etcd", groups=("halfstack",), deploy=etcd, services=lambda s: [service(s)], ports=ports)
