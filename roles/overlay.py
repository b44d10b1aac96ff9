"""The overlay network for multi-node cluster sessions: a Docker swarm initialised by the host
marked ``overlay.swarm_manager`` (a manager-group host), every other manager-group host joined as
a swarm manager too, every agent joined as a worker, and one attachable overlay network
(``overlay.network``) that containers on any member can use.

Optional: runs only where ``overlay.enabled`` (off by default; single-node clusters need none).

* The initialising host: Docker running (Debian's docker.io), ``docker swarm init`` unless the
  engine already is in a swarm, the attachable overlay network unless it exists, then the etcd
  keys through which the others join, in the original's layout: ``sgroup/<group>/swarm-manager/
  host`` (``<addr>:2377``), ``sgroup/<group>/swarm-worker/token`` and ``sgroup/<group>/
  swarm-manager/token`` (each written only when etcd holds another value; a token is piped into
  etcdctl, never on a command line), ``config/network/overlay/mtu`` (``overlay.mtu``) and
  ``config/network/overlay/enabled = true``: a manager (in the docker group, so it reaches the local Docker
  engine) then creates a ``bai-multinode-<session id>`` overlay for each multi-node session whose
  kernels are on several hosts and removes it when the session ends -- which only a swarm
  MANAGER engine can do, hence:
* The other manager-group hosts (HA managers): joined as swarm managers with the manager token
  read from etcd (the join goes to the Docker API over its socket with the token on stdin, never
  on a command line). They run in the same phase as the initialising host, so each waits for the
  keys (deadline ``ready_timeout``). A manager-group host whose engine already is a swarm worker
  is refused with what to do (``docker node promote`` it on a swarm manager, or ``docker swarm
  leave`` on it) -- a worker cannot promote itself.
* Every other host of the role (the agents): ``docker swarm join`` with the worker token read
  from etcd at that moment, unless its engine already is a swarm member.

Raft quorum: swarm managers need a majority up to change the swarm. With 3 manager hosts one may
be down; with 2, losing either stops the creation (and removal) of session overlays until it is
back -- overlays that exist keep working. A manager that cannot create overlays leaves
cross-host multi-node sessions to one that can (bai.manager.services.cluster_networks).

Swarm mode refuses a Docker daemon with ``live-restore`` on: members (managers included) must
keep it off. Ports between the members: 2377/tcp (managers), 7946/tcp+udp, 4789/udp (VXLAN).
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import deploy

from . import _ops
from ._service import ensure_service
from .catalog import PortUse, Role
from .docker import service as docker_service
from .settings import Settings

SWARM_PORT = 2377
SWARM_STATE = "docker info --format '{{.Swarm.LocalNodeState}}'"
#: "active false" on a swarm worker, "active true" on a swarm manager
SWARM_CONTROL = "docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}'"
#: What tells the manager to make per-session overlays (bai.manager.services.cluster_networks).
OVERLAY_ENABLED_KEY = "config/network/overlay/enabled"
#: The MTU of those overlays (the manager reads it; 1500 when unset).
OVERLAY_MTU_KEY = "config/network/overlay/mtu"
DOCKER_SOCKET = "/var/run/docker.sock"


def _etcdctl(settings: Settings) -> str:
    return f"ETCDCTL_API=3 etcdctl --endpoints={settings.etcd.endpoint} --dial-timeout=3s"


def etcd_key(settings: Settings, name: str) -> str:
    """The full etcd key of ``swarm-manager/host`` or ``swarm-worker/token``."""
    return f"/sorna/{settings.etcd.namespace}/sgroup/{settings.agent.scaling_group}/{name}"


def manager_addr(settings: Settings) -> str:
    return f"{settings.overlay.advertise_addr}:{SWARM_PORT}"


def _in_swarm() -> str:
    return f'[ "$({SWARM_STATE})" = active ]'


def member_kind(settings: Settings, groups: list[str] | tuple[str, ...]) -> str:
    """``init`` (``overlay.swarm_manager``), ``manager`` (another manager-group host) or
    ``worker``; ``groups``: the host's inventory groups (pyinfra's ``host.groups``)."""
    if settings.overlay.swarm_manager:
        return "init"
    return "manager" if "manager" in groups else "worker"


def _not_a_worker(settings: Settings) -> None:
    """A host that must be a swarm manager but whose engine is a worker: refused, saying what to
    do (a worker cannot promote itself; leaving would detach its containers from overlays)."""
    host_key = shlex.quote(etcd_key(settings, "swarm-manager/host"))
    _ops.ensure(
        name="Refuse a swarm worker where a swarm manager is wanted",
        check=f'[ "$({SWARM_CONTROL})" != "active false" ]',
        commands=[f"echo \"this host's Docker engine is a swarm worker, but manager-group hosts "
                  f"must be swarm managers: run 'docker node promote $(docker info --format "
                  f"'{{{{.Swarm.NodeID}}}}')' on a swarm manager ($({_etcdctl(settings)} get "
                  f"{host_key} --print-value-only)), or 'docker swarm leave' here, then re-run\" "
                  ">&2; exit 1"],
        noop_message="not a swarm worker",
    )


def _swarm_init(settings: Settings) -> None:
    o = settings.overlay
    _ops.ensure(
        name="Initialise the Docker swarm",
        check=_in_swarm(),
        commands=[f"docker swarm init --advertise-addr {shlex.quote(o.advertise_addr)} "
                  f"--listen-addr {shlex.quote(manager_addr(settings))} >/dev/null"],
        noop_message="this engine is a swarm member",
    )
    net = shlex.quote(o.network)
    subnet = f" --subnet {shlex.quote(o.subnet)}" if o.subnet else ""
    _ops.ensure(
        name=f"Attachable overlay network {o.network}",
        check=f"docker network inspect {net} --format '{{{{.Driver}}}}' 2>/dev/null | grep -qx overlay",
        commands=[f"docker network create --driver overlay --attachable{subnet} "
                  f"--label ai.backend.cluster-network=1 {net} >/dev/null"],
        noop_message="network exists",
    )
    etcdctl = _etcdctl(settings)
    host_key = shlex.quote(etcd_key(settings, "swarm-manager/host"))
    addr = shlex.quote(manager_addr(settings))
    _ops.ensure(
        name="etcd key swarm-manager/host",
        check=f'[ "$({etcdctl} get {host_key} --print-value-only)" = {addr} ]',
        commands=[f"{etcdctl} put {host_key} -- {addr} >/dev/null"],
        noop_message="current",
    )
    for kind, name in (("worker", "swarm-worker/token"), ("manager", "swarm-manager/token")):
        token_key = shlex.quote(etcd_key(settings, name))
        token = f'"$(docker swarm join-token -q {kind})"'
        _ops.ensure(
            name=f"etcd key {name}",
            check=f'[ "$({etcdctl} get {token_key} --print-value-only)" = {token} ]',
            commands=[f"docker swarm join-token -q {kind} | tr -d '\\n' | {etcdctl} put "
                      f"{token_key} >/dev/null"],
            noop_message="current",
        )
    _config_key(settings, OVERLAY_MTU_KEY, str(o.mtu))
    _config_key(settings, OVERLAY_ENABLED_KEY, "true")


def _config_key(settings: Settings, name: str, value: str) -> None:
    etcdctl = _etcdctl(settings)
    key = shlex.quote(f"/sorna/{settings.etcd.namespace}/{name}")
    _ops.ensure(
        name=f"etcd key {name}",
        check=f'[ "$({etcdctl} get {key} --print-value-only)" = {shlex.quote(value)} ]',
        commands=[f"{etcdctl} put {key} -- {shlex.quote(value)} >/dev/null"],
        noop_message="current",
    )


def join_as_manager_command(settings: Settings, timeout: int) -> str:
    """Wait (up to ``timeout`` s) for the manager token and address in etcd, then join through
    the Docker API with the token on stdin (printf is a shell builtin: no process shows it). A
    join refused with a stale token is tried again until the initialising host has put the
    current one."""
    etcdctl = _etcdctl(settings)
    token_key = shlex.quote(etcd_key(settings, "swarm-manager/token"))
    host_key = shlex.quote(etcd_key(settings, "swarm-manager/host"))
    adv = shlex.quote(settings.overlay.advertise_addr)
    listen = shlex.quote(manager_addr(settings))
    body = ('{"ListenAddr":"%s","AdvertiseAddr":"%s","RemoteAddrs":["%s"],'
            '"JoinToken":"%s"}')
    return (
        f"end=$(( $(date +%s) + {int(timeout)} )); last='no swarm manager token in etcd: is the "
        "host with overlay.swarm_manager being installed (manager phase)?'; "
        "while :; do "
        f"token=$({etcdctl} get {token_key} --print-value-only 2>/dev/null || true); "
        f"addr=$({etcdctl} get {host_key} --print-value-only 2>/dev/null || true); "
        'if [ -n "$token" ] && [ -n "$addr" ]; then '
        f"if last=$(printf {shlex.quote(body)} {listen} {adv} \"$addr\" \"$token\" | "
        f"curl -sS --fail-with-body --max-time 60 --unix-socket {DOCKER_SOCKET} "
        "-H 'Content-Type: application/json' --data-binary @- http://localhost/swarm/join 2>&1); "
        "then exit 0; fi; fi; "
        '[ "$(date +%s)" -lt "$end" ] || { echo "cannot join the swarm as a manager '
        f'(deadline {int(timeout)}s): $last" >&2; exit 1; }}; '
        "sleep 1; done"
    )


def _swarm_join_manager(settings: Settings) -> None:
    _not_a_worker(settings)
    _ops.ensure(
        name="Join the Docker swarm as a manager",
        check=_in_swarm(),
        commands=[join_as_manager_command(settings, settings.ready_timeout)],
        noop_message="this engine is a swarm member",
    )


def _swarm_worker(settings: Settings) -> None:
    etcdctl = _etcdctl(settings)
    token_key = shlex.quote(etcd_key(settings, "swarm-worker/token"))
    host_key = shlex.quote(etcd_key(settings, "swarm-manager/host"))
    advertise = (f" --advertise-addr {shlex.quote(settings.overlay.advertise_addr)}"
                 if settings.overlay.advertise_addr else "")
    _ops.ensure(
        name="Join the Docker swarm",
        check=_in_swarm(),
        commands=[
            f"set -e; token=$({etcdctl} get {token_key} --print-value-only); "
            f"addr=$({etcdctl} get {host_key} --print-value-only); "
            'if [ -z "$token" ] || [ -z "$addr" ]; then echo "no swarm join token in etcd: is the '
            'host with overlay.swarm_manager installed (manager phase)?" >&2; exit 1; fi; '
            f'docker swarm join{advertise} --token "$token" "$addr" >/dev/null'
        ],
        noop_message="this engine is a swarm member",
    )


def check(settings: Settings, kind: str = "worker") -> None:
    """Refuse a half-configured host before any operation is prepared (``kind``: what
    :func:`member_kind` says the host is)."""
    if settings.overlay.swarm_manager and not settings.overlay.advertise_addr:
        raise ValueError("overlay.advertise_addr: the swarm manager's address (as the agents "
                         "reach it) is required on the host with overlay.swarm_manager")
    if kind == "manager" and not settings.overlay.advertise_addr:
        raise ValueError("overlay.advertise_addr: a manager-group host joins the swarm as a "
                         "manager, which needs its address as the other members reach it")
    docker = getattr(settings, "docker", None)
    if getattr(docker, "live_restore", False):
        raise ValueError("docker.live_restore: swarm mode refuses a Docker daemon with "
                         "live-restore; set it false on the overlay's hosts")


@deploy("overlay")
def overlay(settings: Settings) -> None:
    # the engine runs a role in the phase of the host's first group and names that group:
    # "manager" for every manager-group host (installer/engine.py)
    kind = member_kind(settings, tuple(host.groups))
    check(settings, kind)
    _ops.packages(name="Install docker.io and the etcd client",
                  packages=["docker.io", "etcd-client"])
    ensure_service(docker_service(settings), timeout=settings.ready_timeout)
    if kind == "init":
        _not_a_worker(settings)
        _swarm_init(settings)
    elif kind == "manager":
        _swarm_join_manager(settings)
    else:
        _swarm_worker(settings)


def ports(settings: Settings) -> list[PortUse]:
    bind = settings.overlay.advertise_addr or "0.0.0.0"
    uses = [PortUse(7946, bind, "swarm gossip"), PortUse(7946, bind, "swarm gossip", "udp"),
            PortUse(4789, bind, "swarm overlay (VXLAN)", "udp")]
    if settings.overlay.swarm_manager:
        uses.insert(0, PortUse(SWARM_PORT, bind, "swarm manager"))
    return uses


ROLE = Role(name="overlay", groups=("manager", "agents"), deploy=overlay, ports=ports,
            # dockerd holds the swarm's ports (and is what the manager host runs for the swarm)
            services=lambda s: [docker_service(s)], enabled=lambda s: s.overlay.enabled)
