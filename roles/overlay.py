"""The overlay network for multi-node cluster sessions: a Docker swarm whose manager is the host
marked ``overlay.swarm_manager`` (a manager-group host), every agent joined as a worker, and one
attachable overlay network (``overlay.network``) that containers on any member can use.

Optional: runs only where ``overlay.enabled`` (off by default; single-node clusters need none).

* The swarm manager: Docker running (Debian's docker.io), ``docker swarm init`` unless the engine
  already is in a swarm, the attachable overlay network unless it exists, then the etcd keys
  through which the agents join, in the original's layout: ``sgroup/<group>/swarm-manager/host``
  (``<addr>:2377``) and ``sgroup/<group>/swarm-worker/token`` (each written only when etcd holds
  another value; the token is piped into etcdctl, never on a command line), and
  ``config/network/overlay/enabled = true``: the manager (on this host, root, so it reaches the
  local Docker engine, the swarm manager) then creates a ``bai-multinode-<session id>`` overlay
  for each multi-node session whose kernels are on several hosts (MTU: etcd
  ``config/network/overlay/mtu``, 1500 when unset) and removes it when the session ends.
* Every other host of the role (the agents): ``docker swarm join`` with the token read from etcd
  at that moment, unless its engine already is a swarm member.

Swarm mode refuses a Docker daemon with ``live-restore`` on: members must keep it off.
The phases run manager before agents, so the keys exist when an agent joins. Ports between the
members: 2377/tcp (manager), 7946/tcp+udp, 4789/udp (VXLAN).
"""

from __future__ import annotations

import shlex

from pyinfra.api import deploy

from . import _ops
from ._service import ensure_service
from .catalog import PortUse, Role
from .docker import service as docker_service
from .settings import Settings

SWARM_PORT = 2377
SWARM_STATE = "docker info --format '{{.Swarm.LocalNodeState}}'"
#: What tells the manager to make per-session overlays (bai.manager.services.cluster_networks).
OVERLAY_ENABLED_KEY = "config/network/overlay/enabled"


def _etcdctl(settings: Settings) -> str:
    return f"ETCDCTL_API=3 etcdctl --endpoints={settings.etcd.endpoint} --dial-timeout=3s"


def etcd_key(settings: Settings, name: str) -> str:
    """The full etcd key of ``swarm-manager/host`` or ``swarm-worker/token``."""
    return f"/sorna/{settings.etcd.namespace}/sgroup/{settings.agent.scaling_group}/{name}"


def manager_addr(settings: Settings) -> str:
    return f"{settings.overlay.advertise_addr}:{SWARM_PORT}"


def _in_swarm() -> str:
    return f'[ "$({SWARM_STATE})" = active ]'


def _swarm_manager(settings: Settings) -> None:
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
    token_key = shlex.quote(etcd_key(settings, "swarm-worker/token"))
    token = '"$(docker swarm join-token -q worker)"'
    _ops.ensure(
        name="etcd key swarm-worker/token",
        check=f'[ "$({etcdctl} get {token_key} --print-value-only)" = {token} ]',
        commands=[f"docker swarm join-token -q worker | tr -d '\\n' | {etcdctl} put {token_key} "
                  ">/dev/null"],
        noop_message="current",
    )
    _overlay_enabled_key(settings)


def _overlay_enabled_key(settings: Settings) -> None:
    etcdctl = _etcdctl(settings)
    key = shlex.quote(f"/sorna/{settings.etcd.namespace}/{OVERLAY_ENABLED_KEY}")
    _ops.ensure(
        name=f"etcd key {OVERLAY_ENABLED_KEY}",
        check=f'[ "$({etcdctl} get {key} --print-value-only)" = true ]',
        commands=[f"{etcdctl} put {key} true >/dev/null"],
        noop_message="current",
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


def check(settings: Settings) -> None:
    """Refuse a half-configured host before any operation is prepared."""
    if settings.overlay.swarm_manager and not settings.overlay.advertise_addr:
        raise ValueError("overlay.advertise_addr: the swarm manager's address (as the agents "
                         "reach it) is required on the host with overlay.swarm_manager")
    docker = getattr(settings, "docker", None)
    if getattr(docker, "live_restore", False):
        raise ValueError("docker.live_restore: swarm mode refuses a Docker daemon with "
                         "live-restore; set it false on the overlay's hosts")


@deploy("overlay")
def overlay(settings: Settings) -> None:
    check(settings)
    _ops.packages(name="Install docker.io and the etcd client",
                  packages=["docker.io", "etcd-client"])
    ensure_service(docker_service(settings), timeout=settings.ready_timeout)
    if settings.overlay.swarm_manager:
        _swarm_manager(settings)
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
