"""The manager role: config, DB migration, fixtures, etcd keys, service, client env file. It runs
from the venv that bootstrap.sh installed.

Every step is guarded, so a rerun on a converged node changes nothing:

* ``db upgrade`` runs only when the database is not at the migrations' head
  (``installer.probe db-at-head``);
* ``fixture populate`` runs when the client env file lacks the admin keypair, or right after a
  migration changed the database;
* each etcd key is written only when etcdctl reads a different value;
* the service restarts only when its config or its code changed (roles/bai.py's code stamp),
  or when its Docker access changed.

Least privilege: the manager runs as the system account ``bai-manager`` (no login, no home; the
same helpers as the app proxy and the webserver), and manager.toml is root:bai-manager 640 (it
holds the database password). It needs no root: it reads its config, talks TCP to PostgreSQL,
Redis, etcd and the agents, and its output goes to its log through supervisord/systemd (they
open the log as root; the manager never opens a file for writing). The one exception is the
Docker socket, which the manager opens only for multi-node sessions' overlays
(bai.manager.services.cluster_networks): the account is in the ``docker`` group only where
``overlay.enabled`` is set, and taken out of it otherwise. Docker-group membership is
root-equivalent (whoever talks to the Docker API can start a privileged container that mounts
``/``), so it is granted only where the operator chose the overlay. Supplementary groups are
read when a process starts, so a change of membership restarts the manager.

The installer's own manager commands (``db upgrade``, ``fixture populate``, ``etcd put``) stay
root: they are the operator's one-shot steps, and ``fixture populate`` feeds the admin keypair
into the root-only client env file, which the daemon's account must not be able to read.
"""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra.api import deploy

from . import _ops
from ._common import secret_expr
from ._service import Service, ensure_service
from .bai import account_daemon_service, code_stamp_file, toml_text, unprivileged_daemon_files
from .bai import precheck as _precheck
from .catalog import PortUse, Role, host_port
from .settings import Settings

#: The system account the manager runs as.
USER = "bai-manager"
#: The group that may use the Docker socket (Debian's docker.io makes the socket root:docker 660).
DOCKER_GROUP = "docker"


def manager_config(settings: Settings) -> dict[str, Any]:
    return {
        "etcd": {"namespace": settings.etcd.namespace, "addr": settings.etcd.addr},
        "db": {
            "addr": settings.postgresql.addr,  # HA: "primary:port,replica:port"
            "name": settings.postgresql.database,
            "user": settings.postgresql.user,
            "password": settings.postgresql.password,
            "pool-size": 8,
        },
        "manager": {
            "id": settings.manager.id,
            "service-addr": settings.manager.addr,
            "heartbeat-timeout": 40.0,
        },
        "logging": {"level": settings.log_level},
    }


def fixtures_stamp() -> str:
    """A digest of the initial fixtures' source (without the admin's secrets: none are in it)."""
    import hashlib
    from pathlib import Path

    from bai.manager.store import fixtures

    return hashlib.sha256(Path(fixtures.__file__).read_bytes()).hexdigest()


def service(settings: Settings) -> Service:
    return account_daemon_service(settings, name="manager", description="bai manager (Backend.AI API)",
                                  config_path=settings.manager_toml,
                                  after="postgresql.service redis-server.service etcd.service", account=USER,
                                  ready_url=settings.endpoint + "/", expect=None)


def docker_access(settings: Settings) -> Any:
    """The account in the ``docker`` group where the overlay is enabled (the group is made when
    Docker is not installed yet: docker.io's own scripts keep an existing one), out of it
    elsewhere. Returns the operation (the service restarts when it changed)."""
    member = f"id -nG {USER} 2>/dev/null | tr ' ' '\\n' | grep -qx {DOCKER_GROUP}"
    if settings.overlay.enabled:
        return _ops.ensure(
            name=f"Docker socket access for {USER} (overlay enabled: group {DOCKER_GROUP})",
            check=member,
            commands=[f"getent group {DOCKER_GROUP} >/dev/null || groupadd --system {DOCKER_GROUP}",
                      f"usermod -aG {DOCKER_GROUP} {USER}"],
            noop_message=f"{USER} is in group {DOCKER_GROUP}",
        )
    return _ops.ensure(
        name=f"No Docker socket access for {USER} (overlay disabled)",
        check=f"! {{ {member}; }}",
        commands=[f"gpasswd -d {USER} {DOCKER_GROUP} >/dev/null"],
        noop_message=f"{USER} is not in group {DOCKER_GROUP}",
    )


def etcd_key_ops(settings: Settings) -> list[Any]:
    """Write the etcd keys of CONTRACTS.md, each only when etcd holds another value. Plain values
    go through the manager CLI; secrets are piped from the secrets file into ``etcdctl put`` (it
    reads the value from stdin), so they never appear on a command line."""
    etcdctl = (f"ETCDCTL_API=3 etcdctl --endpoints={settings.etcd.endpoint} --dial-timeout=3s")
    cli = f"{settings.bin('bai-manager')} etcd put"
    plain = [
        ("config/redis/addr", shlex.quote(settings.redis.addr)),
        ("config/docker/image/auto_pull", "none"),
    ]
    if settings.redis.sentinel:  # HA: the daemons ask the sentinels for the primary
        plain += [("config/redis/sentinel", shlex.quote(",".join(settings.redis.sentinel))),
                  ("config/redis/service_name", shlex.quote(settings.redis.service_name))]
    secret = [
        ("config/redis/password", "redis_password"),
        ("config/agent/rpc-secret", "rpc_secret"),
    ]
    keys = [(key, value, f"{cli} {key} {value} --config {settings.manager_toml}")
            for key, value in plain]
    for key, name in secret:
        full = shlex.quote(f"/sorna/{settings.etcd.namespace}/{key}")
        value = secret_expr(settings, name)
        keys.append((key, value,
                     f"v={value}; test -n \"$v\"; printf %s \"$v\" | {etcdctl} put {full} >/dev/null"))
    ops = []
    for key, value, command in sorted(keys):
        full = f"/sorna/{settings.etcd.namespace}/{key}"
        read = f"{etcdctl} get {shlex.quote(full)} --print-value-only"
        ops.append(_ops.ensure(
            name=f"etcd key {key}",
            check=f'v="$({read})"; [ -n "$v" ] && [ "$v" = {value} ]',
            commands=[command],
            noop_message=f"{key} is current",
        ))
    return ops


@deploy("bai-manager")
def manager(settings: Settings) -> None:
    _ops.packages(name="Install etcd client", packages=["etcd-client"])
    _precheck(settings, "bai-manager")
    # (an upgrade of a root-run install: the config's owner, group and mode change here, the
    # unit or program gets the account, and the manager restarts as it)
    conf, _ = unprivileged_daemon_files(settings, account=USER, label="manager", stamp=None,
                                        config_path=settings.manager_toml,
                                        config_text=toml_text(manager_config(settings)))
    docker = docker_access(settings)
    cli = settings.bin("bai-manager")
    py = settings.bin("python")
    at_head = f"{py} -m installer.probe db-at-head --config {settings.manager_toml}"
    migrate = _ops.ensure(
        name="Migrate the database (bai-manager db upgrade)",
        check=at_head,
        # several managers (HA) may migrate at once: `db upgrade` takes an advisory lock, so the
        # second waits for the first and then finds the schema at head (a failing migration fails
        # at once)
        commands=[f"{cli} db upgrade --config {settings.manager_toml}"],
        noop_message="database at head",
    )
    env = shlex.quote(settings.client_env)
    # populate also reruns once after the fixtures themselves changed (e.g. a new default grant
    # for existing rows): the stamp is written only after it succeeded
    fixtures = shlex.quote(f"{settings.state_dir}/fixtures.version")
    version = shlex.quote(fixtures_stamp())
    _ops.ensure(
        name="Populate fixtures and write the client env file",
        # (an env file from before the PATH line existed is rewritten: populate is idempotent and
        # answers the same admin keypair)
        check=(f"grep -q '^export BACKEND_ACCESS_KEY=.' {env} && "
               f"grep -q '^export BACKEND_SECRET_KEY=.' {env} && "
               f"grep -qxF {shlex.quote(settings.path_line)} {env} && "
               f"grep -qxF {version} {fixtures}"),
        commands=[
            "umask 077; out=$(mktemp); trap 'rm -f \"$out\"' EXIT; "
            # (a second try: another manager (HA) may have been inserting the same rows)
            f"{{ {cli} fixture populate --config {settings.manager_toml} --json > \"$out\" || "
            f"{cli} fixture populate --config {settings.manager_toml} --json > \"$out\"; }} && "
            f"{py} -m installer.probe client-env \"$out\" --endpoint {shlex.quote(settings.endpoint)} "
            f"--out {env} --bin-dir {shlex.quote(settings.bin_dir)} && "
            f"printf '%s\\n' {version} > {fixtures} && chmod 644 {fixtures}"
        ],
        noop_message="fixtures populated, client env present",
        also_if=migrate.did_change,
    )
    keys = etcd_key_ops(settings)
    # (recorded last: a run that fails before the restart records nothing, so the next one restarts)
    code = code_stamp_file(settings, "manager")
    ensure_service(service(settings), configs=[conf, migrate, code, docker, *keys],
                   timeout=settings.ready_timeout)


def ports(settings: Settings) -> list[PortUse]:
    host, port = host_port(settings.manager.addr)
    return [PortUse(port, host, "manager API")]


#: (older name)
manager_service = service

ROLE = Role(name="bai-manager", groups=("manager",), deploy=manager, services=lambda s: [service(s)],
            ports=ports)
