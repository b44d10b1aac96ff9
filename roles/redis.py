"""Redis for the half-stack: Debian's redis-server, bound to loopback, with a password, run by
systemd or supervisor, restarted only when its config changed.

The password (``requirepass``) is generated once and kept in the secrets file like the database
one. It reaches Redis through a small included file (mode 640, root:redis) written from the
installer's memory, so it never appears on a command line; clients find it in etcd
(``config/redis/password``, written by the manager role) and the readiness check reads it from
the secrets file into ``REDISCLI_AUTH``.

HA (``redis.sentinel``, see roles/_ha.py): every half-stack host runs a Redis server and a
Sentinel (``redis-server --sentinel``, our unit/program ``bai-redis-sentinel``) with the same
password (``requirepass`` on both, ``masterauth`` on the servers, ``sentinel auth-pass``). The
first run makes the hosts other than ``redis.primary`` its replicas (``replicaof``) and seeds
each Sentinel's file. From then on Sentinel owns both: it rewrites the servers' redis.conf and
its own file on a failover (under systemd a drop-in lets redis-server write /etc/redis), and the
role never touches ``replicaof`` or the Sentinel file again (a marker in the state directory; the
seed is written only when absent), so a re-run after a failover keeps the new primary.
"""

from __future__ import annotations

import shlex
from io import StringIO
from typing import Any

from pyinfra.api import deploy
from pyinfra.operations import files, systemd

from . import _ops
from ._common import secret_expr, secrets_file
from ._service import Service, ensure_service, manager
from .catalog import PortUse, Role
from .settings import Settings

CONF = "/etc/redis/redis.conf"
AUTH_CONF = "/etc/redis/bai-auth.conf"
SENTINEL_CONF = "/etc/redis/bai-sentinel.conf"
#: systemd: Debian's unit mounts /etc read-only; Sentinel's CONFIG REWRITE must reach redis.conf
DROP_IN = "/etc/systemd/system/redis-server.service.d/bai-ha.conf"


def auth_text(settings: Settings) -> str:
    text = f"# managed by bai-install; changes are overwritten\nrequirepass {settings.redis.password}\n"
    if settings.redis.sentinel:  # any server may become a replica after a failover
        text += f"masterauth {settings.redis.password}\n"
    return text


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


def sentinel_seed(settings: Settings) -> str:
    """The Sentinel file's first text, with ``$PW`` where the password goes (expanded by the
    shell from the secrets file, never on a command line)."""
    r = settings.redis
    host, port = _split(r.primary)
    name = r.service_name
    return "\n".join([
        "# seeded by bai-install once; Redis Sentinel rewrites this file itself",
        f"port {r.sentinel_port}",
        f"bind {r.listen}",
        "daemonize no",
        'dir "/var/lib/redis"',
        'requirepass "$PW"',
        f"sentinel monitor {name} {host} {port} {r.quorum}",
        f"sentinel auth-pass {name} $PW",
        f"sentinel down-after-milliseconds {name} {r.down_after_ms}",
        f"sentinel failover-timeout {name} {r.failover_timeout_ms}",
        f"sentinel parallel-syncs {name} 1",
        "",
    ])


def sentinel_cli(settings: Settings, *args: str) -> str:
    """redis-cli against this host's Sentinel (password from the secrets file)."""
    return (f"REDISCLI_AUTH={secret_expr(settings, 'redis_password')} redis-cli --no-auth-warning "
            f"-h {settings.redis.listen} -p {settings.redis.sentinel_port} "
            + " ".join(map(shlex.quote, args)))


def sentinel_service(settings: Settings) -> Service:
    cmd = f"/usr/bin/redis-server {SENTINEL_CONF} --sentinel --daemonize no"
    return Service(
        name="redis-sentinel",
        unit="bai-redis-sentinel.service",
        command=cmd,
        user="redis",
        ready=f'[ "$({sentinel_cli(settings, "ping")})" = PONG ]',
        unit_text=("# managed by bai-install\n[Unit]\nDescription=Redis Sentinel (bai HA half-stack)\n"
                   "After=network-online.target redis-server.service\nWants=network-online.target\n\n"
                   f"[Service]\nType=simple\nUser=redis\nGroup=redis\nExecStart={cmd}\n"
                   "Restart=always\nRestartSec=2\nLimitNOFILE=65535\n\n"
                   "[Install]\nWantedBy=multi-user.target\n"),
        log_dir=settings.log_dir,
        directory="/var/lib/redis",
    )


def services(settings: Settings) -> list[Service]:
    return [service(settings), *([sentinel_service(settings)] if settings.redis.sentinel else [])]


def cli(settings: Settings, *args: str) -> str:
    """A redis-cli command authenticated with the password of the secrets file (through the
    environment, not the command line)."""
    return (f"REDISCLI_AUTH={secret_expr(settings, 'redis_password')} redis-cli --no-auth-warning "
            f"-h {settings.redis.listen} -p {settings.redis.port} " + " ".join(map(shlex.quote, args)))


def service(settings: Settings) -> Service:
    return Service(
        name="redis",
        unit="redis-server.service",
        # Debian's config daemonizes and logs to a file; supervisor wants the foreground and stdout
        command=f'/usr/bin/redis-server {CONF} --daemonize no --supervised no --logfile ""',
        user="redis",
        ready=f'[ "$({cli(settings, "ping")})" = PONG ]',
        log_dir=settings.log_dir,
        stopwaitsecs=30,
    )


@deploy("redis")
def redis(settings: Settings) -> None:
    if not settings.redis.password:
        raise ValueError("redis_password is empty: the engine generates it (secrets file)")
    _ops.packages(name="Install redis-server", packages=["redis-server", "redis-tools"])
    secrets_file(settings)  # the readiness check reads the password from it
    configs = [
        files.line(name="Bind loopback only", path=CONF, line=r"^bind .*",
                   replace=f"bind {settings.redis.listen}"),
        files.line(name="Port", path=CONF, line=r"^port .*", replace=f"port {settings.redis.port}"),
        files.line(name="Max memory", path=CONF, line=r"^#? ?maxmemory <bytes>$|^maxmemory .*",
                   replace=f"maxmemory {settings.redis.maxmemory}"),
        files.put(name="Write the password file (requirepass)", src=StringIO(auth_text(settings)),
                  dest=AUTH_CONF, mode="640", user="root", group="redis"),
        # last line of the config: it wins over any requirepass above it
        files.line(name="Include the password file", path=CONF,
                   line=f"^include {AUTH_CONF.replace('.', '[.]')}$", replace=f"include {AUTH_CONF}"),
    ]
    if manager() == "supervisor":
        files.directory(name="Runtime directory", path="/run/redis", user="redis", group="redis",
                        mode="2755")
    if settings.redis.sentinel:
        configs += _replication(settings)
    ensure_service(service(settings), configs=configs, timeout=settings.ready_timeout)
    if settings.redis.sentinel:
        _sentinel(settings)


def _replication(settings: Settings) -> list[Any]:
    """HA: the replicas' first ``replicaof``; the systemd drop-in that lets Sentinel rewrite
    redis.conf. Returns the ops whose change must restart redis-server."""
    r = settings.redis
    ops: list[Any] = []
    if manager() == "systemd":
        files.directory(name="redis-server drop-in directory", path=DROP_IN.rsplit("/", 1)[0],
                        mode="755")
        drop_in = files.put(name="Let Sentinel rewrite redis.conf (systemd drop-in)",
                            src=StringIO("# managed by bai-install\n[Service]\n"
                                         "ReadWritePaths=-/etc/redis\n"),
                            dest=DROP_IN, mode="644")
        systemd.daemon_reload(name="Reload systemd units", _if=drop_in.did_change)
        ops.append(drop_in)
    if f"{r.listen}:{r.port}" != r.primary:
        host, port = _split(r.primary)
        marker = shlex.quote(f"{settings.state_dir}/redis.replication")
        # Only once: afterwards Sentinel moves the primary and rewrites replicaof itself
        ops.append(_ops.ensure(
            name=f"Start as a replica of {r.primary} (first run only)",
            check=f"test -f {marker}",
            commands=[f"sed -i '/^replicaof /d; /^slaveof /d' {CONF} && "
                      f"echo 'replicaof {host} {port}' >> {CONF} && "
                      f"mkdir -p {shlex.quote(settings.state_dir)} && "
                      f"echo 'seeded as a replica of {r.primary}' > {marker}"],
            noop_message="replication was set up by an earlier run (Sentinel owns it now)",
        ))
    return ops


def _sentinel(settings: Settings) -> None:
    seed = _ops.ensure(
        name=f"Seed {SENTINEL_CONF} (only when absent: Sentinel rewrites it)",
        check=f"test -s {SENTINEL_CONF}",
        commands=[f"PW={secret_expr(settings, 'redis_password')}; test -n \"$PW\"; umask 027; "
                  f"tmp={SENTINEL_CONF}.seed; cat > \"$tmp\" <<EOSEED\n{sentinel_seed(settings)}EOSEED\n"
                  f"chown redis:redis \"$tmp\" && chmod 640 \"$tmp\" && mv \"$tmp\" {SENTINEL_CONF}"],
        noop_message="seeded by an earlier run",
    )
    r = settings.redis
    # the keys Sentinel keeps as written (it rewrites the rest: the primary, replicas, peers)
    configs = [
        seed,
        files.line(name="Sentinel port", path=SENTINEL_CONF, line=r"^port .*",
                   replace=f"port {r.sentinel_port}"),
        files.line(name="Sentinel bind", path=SENTINEL_CONF, line=r"^bind .*", replace=f"bind {r.listen}"),
    ]
    ensure_service(sentinel_service(settings), configs=configs, timeout=settings.ready_timeout)


def ports(settings: Settings) -> list[PortUse]:
    r = settings.redis
    sentinel = [PortUse(r.sentinel_port, r.listen, "Redis Sentinel")] if r.sentinel else []
    return [PortUse(r.port, r.listen, "Redis"), *sentinel]


ROLE = Role(name="redis", groups=("halfstack",), deploy=redis, services=services, ports=ports)
