"""The bai services: manager (config, DB migration, fixtures, etcd keys, service, client env
file) and agent (config, service). Both run from the venv that bootstrap.sh installed.

Every step is guarded, so a rerun on a converged node changes nothing:

* ``db upgrade`` runs only when the database is not at the migrations' head
  (``installer.probe db-at-head``);
* ``fixture populate`` runs when the client env file lacks the admin keypair, or right after a
  migration changed the database;
* each etcd key is written only when etcdctl reads a different value;
* services restart only when their config or their code changed (a stamp of the installed
  package's source is kept next to the config), or, for the agent, the Redis settings it reads
  from etcd (a digest is kept the same way).
"""

from __future__ import annotations

import shlex
from io import StringIO
from typing import Any

import tomli_w
from pyinfra.api import deploy
from pyinfra.operations import files

from . import _ops
from ._common import secret_expr, secrets_file
from ._service import Service, ensure_service
from .settings import Settings


def manager_config(settings: Settings) -> dict[str, Any]:
    return {
        "etcd": {"namespace": settings.etcd_namespace, "addr": settings.etcd_addr},
        "db": {
            "addr": f"{settings.db_host}:{settings.pg_port}",
            "name": settings.db_name,
            "user": settings.db_user,
            "password": settings.db_password,
            "pool-size": 8,
        },
        "manager": {
            "id": settings.manager_id,
            "service-addr": settings.manager_addr,
            "heartbeat-timeout": 40.0,
        },
        "logging": {"level": settings.log_level},
    }


def agent_config(settings: Settings) -> dict[str, Any]:
    return {
        "etcd": {"namespace": settings.etcd_namespace, "addr": settings.etcd_addr},
        "agent": {
            "id": settings.agent_id,
            "rpc-listen-addr": settings.agent_rpc_addr,
            "scaling-group": settings.scaling_group,
            "ipc-base-path": f"{settings.state_dir}/ipc",
            "heartbeat-interval": 5.0,
        },
        "container": {
            "port-range": list(settings.container_port_range),
            "bind-host": settings.container_bind_host,
        },
        "resource": {"reserved-cpu": 0, "reserved-mem": settings.reserved_mem},
        "logging": {"level": settings.log_level},
    }


def code_stamp() -> str:
    """A digest of the platform's source as installed here: an upgrade that changes code changes
    the stamp, and the services restart; a rerun with the same code restarts nothing. The
    checkout's location counts too: daemons started from another clone (a CI run's, since
    deleted) import their code and bind-mount the kernel runner from there."""
    import hashlib
    from pathlib import Path

    import bai

    root = Path(bai.__file__).parent
    digest = hashlib.sha256(str(root.resolve()).encode() + b"\0")
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest() + "\n"


def fixtures_stamp() -> str:
    """A digest of the initial fixtures' source (without the admin's secrets: none are in it)."""
    import hashlib
    from pathlib import Path

    from bai.manager.store import fixtures

    return hashlib.sha256(Path(fixtures.__file__).read_bytes()).hexdigest()


def redis_stamp(settings: Settings) -> str:
    """A digest (not the password itself) of the Redis settings the daemons read from etcd."""
    import hashlib

    text = f"{settings.redis_addr}\n{settings.redis_password}"
    return hashlib.sha256(text.encode()).hexdigest() + "\n"


def _stamp(settings: Settings, name: str) -> Any:
    return files.put(name=f"Record the {name}'s code version", src=StringIO(code_stamp()),
                     dest=f"{settings.state_dir}/{name}.code", mode="644")


def _toml(data: dict[str, Any]) -> str:
    return "# managed by bai-install; changes are overwritten\n" + tomli_w.dumps(data)


def unit_text(description: str, exec_start: str, log: str, after: str) -> str:
    return f"""# managed by bai-install
[Unit]
Description={description}
After=network-online.target {after}
Wants=network-online.target

[Service]
Type=simple
ExecStart={exec_start}
Restart=on-failure
RestartSec=5
TimeoutStopSec=15
KillSignal=SIGTERM
LimitNOFILE=512000
StandardOutput=append:{log}
StandardError=inherit

[Install]
WantedBy=multi-user.target
"""


def manager_service(settings: Settings) -> Service:
    cmd = f"{settings.bin('bai-manager')} start --config {settings.manager_toml}"
    return Service(
        name="manager",
        unit="bai-manager.service",
        command=cmd,
        ready=(f"{settings.bin('python')} -m installer.probe http-json "
               f"{shlex.quote(settings.endpoint + '/')}"),
        unit_text=unit_text("bai manager (Backend.AI API)", cmd, f"{settings.log_dir}/manager.log",
                            "postgresql.service redis-server.service etcd.service"),
        log_dir=settings.log_dir,
        stopwaitsecs=15,
    )


def agent_service(settings: Settings) -> Service:
    cmd = f"{settings.bin('bai-agent')} start --config {settings.agent_toml}"
    return Service(
        name="agent",
        unit="bai-agent.service",
        command=cmd,
        ready=f"{settings.bin('python')} -m installer.probe tcp {settings.agent_rpc_addr}",
        unit_text=unit_text("bai agent (Backend.AI compute node)", cmd,
                            f"{settings.log_dir}/agent.log", "docker.service"),
        log_dir=settings.log_dir,
        stopwaitsecs=30,
    )


def _precheck(settings: Settings, program: str) -> None:
    path = settings.bin(program)
    _ops.ensure(
        name=f"Check {program} is installed",
        check=f"test -x {path}",
        commands=[f"echo '{path} is missing: run installer/bootstrap.sh on this host' >&2; exit 1"],
        noop_message=f"{path} present",
    )


def etcd_key_ops(settings: Settings) -> list[Any]:
    """Write the etcd keys of CONTRACTS.md, each only when etcd holds another value. Plain values
    go through the manager CLI; secrets are piped from the secrets file into ``etcdctl put`` (it
    reads the value from stdin), so they never appear on a command line."""
    etcdctl = (f"ETCDCTL_API=3 etcdctl --endpoints={settings.etcd_endpoint} --dial-timeout=3s")
    cli = f"{settings.bin('bai-manager')} etcd put"
    plain = [
        ("config/redis/addr", shlex.quote(settings.redis_addr)),
        ("config/docker/image/auto_pull", "none"),
    ]
    secret = [
        ("config/redis/password", "redis_password"),
        ("config/agent/rpc-secret", "rpc_secret"),
    ]
    keys = [(key, value, f"{cli} {key} {value} --config {settings.manager_toml}")
            for key, value in plain]
    for key, name in secret:
        full = shlex.quote(f"/sorna/{settings.etcd_namespace}/{key}")
        value = secret_expr(settings, name)
        keys.append((key, value,
                     f"v={value}; test -n \"$v\"; printf %s \"$v\" | {etcdctl} put {full} >/dev/null"))
    ops = []
    for key, value, command in sorted(keys):
        full = f"/sorna/{settings.etcd_namespace}/{key}"
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
    for path in (settings.config_dir, settings.log_dir, settings.state_dir):
        files.directory(name=f"Directory {path}", path=path, mode="755")
    secrets_file(settings)
    conf = files.put(name="Write manager.toml", src=StringIO(_toml(manager_config(settings))),
                     dest=settings.manager_toml, mode="600", user="root", group="root")
    cli = settings.bin("bai-manager")
    py = settings.bin("python")
    migrate = _ops.ensure(
        name="Migrate the database (bai-manager db upgrade)",
        check=f"{py} -m installer.probe db-at-head --config {settings.manager_toml}",
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
            f"{cli} fixture populate --config {settings.manager_toml} --json > \"$out\" && "
            f"{py} -m installer.probe client-env \"$out\" --endpoint {shlex.quote(settings.endpoint)} "
            f"--out {env} --bin-dir {shlex.quote(settings.bin_dir)} && "
            f"printf '%s\\n' {version} > {fixtures} && chmod 644 {fixtures}"
        ],
        noop_message="fixtures populated, client env present",
        also_if=migrate.did_change,
    )
    keys = etcd_key_ops(settings)
    code = _stamp(settings, "manager")
    ensure_service(manager_service(settings), configs=[conf, migrate, code, *keys],
                   timeout=settings.ready_timeout)


@deploy("bai-agent")
def agent(settings: Settings) -> None:
    _precheck(settings, "bai-agent")
    for path in (settings.config_dir, settings.log_dir, f"{settings.state_dir}/ipc"):
        files.directory(name=f"Directory {path}", path=path, mode="755")
    conf = files.put(name="Write agent.toml", src=StringIO(_toml(agent_config(settings))),
                     dest=settings.agent_toml, mode="600", user="root", group="root")
    code = _stamp(settings, "agent")
    # The agent reads the Redis address and password from etcd at start: a new password
    # (e.g. the first run that sets one) must restart it, as it restarts the manager.
    redis = files.put(name="Record the Redis settings the agent uses",
                      src=StringIO(redis_stamp(settings)),
                      dest=f"{settings.state_dir}/agent.redis", mode="600")
    ensure_service(agent_service(settings), configs=[conf, code, redis],
                   timeout=settings.ready_timeout)
