"""etcd for the half-stack: Debian's etcd-server.

One half-stack host: a single member on loopback (the default). HA (``etcd.members``, the same
list on every host, see roles/_ha.py): each half-stack host is the member listening on its
``etcd.listen`` (clients there and on loopback), named after that address, and the members make
the cluster together the first time they start (``initial-cluster-state=new``). etcd reads the
``initial-*`` settings only while its data directory is empty, so a re-run (identical file) or a
restart never makes a new cluster; adding a member to a running cluster is ``etcdctl member
add`` by hand (then ``initial-cluster-state=existing`` on the new one), not a re-run.
"""

from __future__ import annotations

from io import StringIO

from pyinfra.api import deploy
from pyinfra.operations import files, systemd

from . import _ops
from ._ha import etcd_member_name
from ._service import Service, ensure_service, manager
from .catalog import PortUse, Role
from .settings import Settings

DEFAULTS = "/etc/default/etcd"
DROP_IN = "/etc/systemd/system/etcd.service.d/bai-cluster.conf"
#: HA: how long a member waits for the others the first time (hosts install independently, and
#: a member is ready only once a majority runs: Debian's unit would give up after 90 s)
CLUSTER_START_TIMEOUT = 600


def _urls(settings: Settings) -> dict[str, str]:
    e = settings.etcd
    if e.members:
        return _cluster_urls(settings)
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


def _cluster_urls(settings: Settings) -> dict[str, str]:
    e = settings.etcd
    if e.listen not in e.members:
        raise ValueError(f"etcd.listen {e.listen} is not one of etcd.members {e.members}")
    peer = f"http://{e.listen}:{e.peer_port}"
    return {
        "name": etcd_member_name(e.listen),
        "data-dir": e.data_dir,
        # loopback too: this host's own etcdctl and daemons may use 127.0.0.1
        "listen-client-urls": f"http://{e.listen}:{e.client_port},http://127.0.0.1:{e.client_port}",
        "advertise-client-urls": f"http://{e.listen}:{e.client_port}",
        "listen-peer-urls": peer,
        "initial-advertise-peer-urls": peer,
        "initial-cluster": ",".join(f"{etcd_member_name(m)}=http://{m}:{e.peer_port}"
                                    for m in e.members),
        "initial-cluster-token": e.cluster_token,
        "initial-cluster-state": "new",
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
    configs = [conf]
    timeout = settings.ready_timeout
    if settings.etcd.members:
        timeout = max(timeout, CLUSTER_START_TIMEOUT)
        if manager() == "systemd":
            files.directory(name="etcd drop-in directory", path=DROP_IN.rsplit("/", 1)[0], mode="755")
            drop_in = files.put(name="Let a member wait for its peers (systemd drop-in)",
                                src=StringIO("# managed by bai-install\n[Service]\n"
                                             f"TimeoutStartSec={CLUSTER_START_TIMEOUT}\n"),
                                dest=DROP_IN, mode="644")
            systemd.daemon_reload(name="Reload systemd units", _if=drop_in.did_change)
            configs.append(drop_in)
    ensure_service(service(settings), configs=configs, timeout=timeout)


def ports(settings: Settings) -> list[PortUse]:
    e = settings.etcd
    local = [PortUse(e.client_port, "127.0.0.1", "etcd clients (loopback)")] if e.members else []
    return [PortUse(e.client_port, e.listen, "etcd clients"), PortUse(e.peer_port, e.listen, "etcd peers"),
            *local]


ROLE = Role(name="etcd", groups=("halfstack",), deploy=etcd, services=lambda s: [service(s)], ports=ports)
