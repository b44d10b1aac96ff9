"""PostgreSQL for the half-stack: Debian's cluster <version>/main on loopback, the ``bai`` role
(LOGIN CREATEDB, password from the secrets file) and the ``backend`` database it owns.

HA (``postgresql.primary`` + ``postgresql.replicas``, see roles/_ha.py): the host whose
``listen`` is the primary runs it as above plus the replication role; each replica host is made
once with ``pg_basebackup -R`` from the primary (hot standby, streaming) and is left alone after
that. Every HA host gets the ``replication`` rules for the others and ``~postgres/.pgpass`` with
the replication password (derived from the database password, so no new secret is kept), so a
promoted replica can serve the others. Promotion is the operator's: ``pg_ctlcluster <version>
main promote`` on the replica, then swap ``postgresql.primary`` and ``postgresql.replicas`` in
the inventory and re-run. A replica host that no longer is a standby (promoted) or that holds
the application's database is never wiped: the role stops with a message instead.
"""

from __future__ import annotations

import hashlib
import hmac
import shlex
from io import StringIO
from typing import Any

from pyinfra.api import deploy
from pyinfra.operations import files

from . import _ops
from ._common import secret_expr, secrets_file
from ._service import Service, ensure_service, manager
from .catalog import PortUse, Role
from .settings import Settings


def conf_text(settings: Settings) -> str:
    # server flags from the original's install guide; loopback only
    lines = [
        "# managed by bai-install; changes are overwritten",
        f"listen_addresses = '{settings.postgresql.listen}'",
        f"port = {settings.postgresql.port}",
        "max_connections = 256",
        "deadlock_timeout = 10s",
        "idle_in_transaction_session_timeout = 60000",
    ]
    if settings.postgresql.primary:  # the same on the primary and the replicas (roles swap)
        lines += ["wal_level = replica", "max_wal_senders = 10", "wal_keep_size = 512MB",
                  "hot_standby = on", "hot_standby_feedback = on"]
    return "\n".join([*lines, ""])


DATA = "/var/lib/postgresql/{v}/main"
PGPASS = "/var/lib/postgresql/.pgpass"


def replication_password(settings: Settings) -> str:
    """Derived from the database password (HMAC), so HA needs no secret of its own."""
    key = settings.postgresql.password.encode()
    return hmac.new(key, b"bai-postgresql-replication", hashlib.sha256).hexdigest()


def pgpass_text(settings: Settings) -> str:
    p = settings.postgresql
    return f"*:*:replication:{p.replication_user}:{replication_password(settings)}\n"


def is_primary(settings: Settings) -> bool:
    p = settings.postgresql
    return not p.primary or p.listen == p.primary


def service(settings: Settings) -> Service:
    v = settings.postgresql.version
    return Service(
        name="postgresql",
        unit=f"postgresql@{v}-main.service",
        command=(f"/usr/lib/postgresql/{v}/bin/postgres -D /var/lib/postgresql/{v}/main "
                 f"-c config_file=/etc/postgresql/{v}/main/postgresql.conf"),
        user="postgres",
        ready=f"pg_isready -q -h {settings.postgresql.listen} -p {settings.postgresql.port}",
        stopsignal="INT",  # "fast" shutdown
        stopwaitsecs=60,
        log_dir=settings.log_dir,
        directory=f"/var/lib/postgresql/{v}/main",
    )


def psql(settings: Settings, sql: str, db: str = "postgres") -> str:
    """Run SQL as the postgres superuser over the local socket; prints tuples only."""
    return (f"runuser -u postgres -- psql -X -q -t -A -v ON_ERROR_STOP=1 -p {settings.postgresql.port} "
            f"-d {shlex.quote(db)} -c {shlex.quote(sql)}")


@deploy("postgresql")
def postgresql(settings: Settings) -> None:
    v = settings.postgresql.version
    user, db = settings.postgresql.user, settings.postgresql.database
    _ops.packages(name="Install PostgreSQL", packages=[f"postgresql-{v}", f"postgresql-client-{v}"])
    _ops.ensure(
        name=f"Create cluster {v}/main",
        check=f"test -f /var/lib/postgresql/{v}/main/PG_VERSION",
        commands=[f"pg_createcluster {v} main"],
        noop_message="cluster exists",
    )
    conf = files.put(name="Write conf.d/bai.conf", src=StringIO(conf_text(settings)),
                     dest=f"/etc/postgresql/{v}/main/conf.d/bai.conf", user="postgres",
                     group="postgres", mode="644")
    configs = [conf]
    for cidr in settings.postgresql.allow_cidrs:  # multi-node: the manager logs in over the network
        rule = f"host {db} {user} {cidr} scram-sha-256"
        configs.append(files.line(name=f"Allow {user}@{cidr}",
                                  path=f"/etc/postgresql/{v}/main/pg_hba.conf",
                                  line=f"^{rule.replace('.', '[.]')}$", replace=rule))
    if manager() == "supervisor":
        files.directory(name="Socket directory", path="/var/run/postgresql", user="postgres",
                        group="postgres", mode="2775")
    if settings.postgresql.primary:
        configs += _replication_access(settings)
        if not is_primary(settings):
            configs.append(_replica(settings))
    ensure_service(service(settings), configs=configs, timeout=settings.ready_timeout)
    if not is_primary(settings):
        return  # a standby: the role, the database and their rows come from the primary

    secrets_file(settings)
    pw = secret_expr(settings, "db_password")
    role_ok = psql(settings, f"SELECT 1 FROM pg_roles WHERE rolname = '{user}' "
                             "AND rolcanlogin AND rolcreatedb") + " | grep -qx 1"
    login_ok = (f"PGPASSWORD={pw} psql -X -q -t -A -h {settings.postgresql.listen} -p {settings.postgresql.port} "
                # the role's own database: a multi-node pg_hba rule admits the role to it only
                f"-U {user} -d {shlex.quote(db)} -c 'SELECT 1' | grep -qx 1")
    # The password reaches psql on stdin (an unquoted here-document that expands $PW; "\$\$"
    # keeps the DO block's dollar quotes literal), never on a command line.
    role_sql = (
        f"DO \\$\\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{user}') "
        f"THEN CREATE ROLE {user}; END IF; END \\$\\$;\n"
        f"ALTER ROLE {user} WITH LOGIN CREATEDB PASSWORD '$PW';"
    )
    _ops.ensure(
        name=f"Role {user} (LOGIN CREATEDB, password from the secrets file)",
        check=f"{role_ok} && {login_ok}",
        commands=[
            f"PW={pw}; test -n \"$PW\"; runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 "
            f"-p {settings.postgresql.port} -d postgres <<EOSQL\n{role_sql}\nEOSQL"
        ],
        noop_message=f"role {user} can log in",
    )
    db_ok = psql(settings, f"SELECT 1 FROM pg_database WHERE datname = '{db}' "
                           f"AND pg_get_userbyid(datdba) = '{user}'") + " | grep -qx 1"
    db_exists = psql(settings, f"SELECT 1 FROM pg_database WHERE datname = '{db}'") + " | grep -qx 1"
    _ops.ensure(
        name=f"Database {db} owned by {user}",
        check=db_ok,
        commands=[
            f"if {db_exists}; then {psql(settings, f'ALTER DATABASE {db} OWNER TO {user}')}; "
            f"else runuser -u postgres -- createdb -p {settings.postgresql.port} -O {user} {db}; fi"
        ],
        noop_message=f"database {db} exists",
    )
    if settings.postgresql.primary:
        _replication_role(settings)


def _replication_role(settings: Settings) -> None:
    """The primary: the role the replicas stream as (REPLICATION LOGIN, password from .pgpass,
    read by the shell, never on a command line). Checked by logging in as a replica would."""
    p = settings.postgresql
    r = p.replication_user
    login = (f"runuser -u postgres -- psql -X -q -t -A -d "
             f"{shlex.quote(f'host={p.listen} port={p.port} user={r} dbname=replication replication=true passfile={PGPASS}')}"
             " -c IDENTIFY_SYSTEM >/dev/null")
    pattern = shlex.quote(f"s/^[*]:[*]:replication:{r}:\\(.*\\)$/\\1/p")
    sql = (f"DO \\$\\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{r}') "
           f"THEN CREATE ROLE {r}; END IF; END \\$\\$;\n"
           f"ALTER ROLE {r} WITH REPLICATION LOGIN PASSWORD '$PW';")
    _ops.ensure(
        name=f"Replication role {r} (the replicas' login)",
        check=login,
        commands=[f"PW=\"$(sed -n {pattern} {PGPASS})\"; test -n \"$PW\"; runuser -u postgres -- "
                  f"psql -X -q -v ON_ERROR_STOP=1 -p {p.port} -d postgres <<EOSQL\n{sql}\nEOSQL"],
        noop_message=f"{r} can log in for replication",
    )


def _replication_access(settings: Settings) -> list[Any]:
    """HA, every host: the replication rules for each member and the .pgpass the replicas'
    pg_basebackup and walreceiver read (mode 600, written from the installer's memory)."""
    p, v = settings.postgresql, settings.postgresql.version
    ops: list[Any] = [files.put(name="Write ~postgres/.pgpass (replication password)",
                                src=StringIO(pgpass_text(settings)), dest=PGPASS, user="postgres",
                                group="postgres", mode="600")]
    for member in (p.primary, *p.replicas):
        rule = f"host replication {p.replication_user} {member}/32 scram-sha-256"
        ops.append(files.line(name=f"Allow replication from {member}",
                              path=f"/etc/postgresql/{v}/main/pg_hba.conf",
                              line=f"^{rule.replace('.', '[.]')}$", replace=rule))
    return ops


def _replica(settings: Settings) -> Any:
    """A replica host: once, its cluster becomes a copy of the primary's (pg_basebackup -R,
    retried until the primary lets the replication role in, within a deadline)."""
    p, v = settings.postgresql, settings.postgresql.version
    data = DATA.format(v=v)
    marker = shlex.quote(f"{settings.state_dir}/postgresql.replica")
    stop = (f"systemctl stop postgresql@{v}-main.service" if manager() == "systemd"
            else f"{_ops.SUPERVISORCTL} stop bai-postgresql >/dev/null 2>&1 || true")
    running_primary = (f"pg_isready -q -p {p.port} -h /var/run/postgresql && "
                       + psql(settings, "SELECT NOT pg_is_in_recovery() AND EXISTS (SELECT FROM "
                                        f"pg_database WHERE datname = '{p.database}')")
                       + " | grep -qx t")
    conninfo = (f"host={p.primary} port={p.port} user={p.replication_user} passfile={PGPASS} "
                "connect_timeout=5")
    backup = (f"rm -rf {data} && install -d -o postgres -g postgres -m 700 {data} && "
              f"runuser -u postgres -- pg_basebackup -w -d {shlex.quote(conninfo)} -D {data} -R "
              "-X stream -c fast")
    deadline = max(settings.ready_timeout, 60) * 3
    return _ops.ensure(
        name=f"Make this host a streaming replica of {p.primary} (first run only)",
        check=f"test -f {data}/standby.signal",
        commands=[
            f"if [ -f {marker} ]; then echo 'this replica was promoted (no standby.signal): swap "
            "postgresql.primary and postgresql.replicas in the inventory, or remove "
            f"{marker} to re-seed it from the primary' >&2; exit 1; fi",
            f"if {running_primary}; then echo 'this host runs a primary holding the database "
            f"{p.database}: refusing to replace it with a copy of {p.primary} (drop the cluster "
            "first to re-seed it as a replica)' >&2; exit 1; fi",
            stop,
            f"end=$(( $(date +%s) + {deadline} )); until {backup}; do "
            f"if [ $(date +%s) -ge $end ]; then echo 'pg_basebackup from {p.primary} failed until "
            f"the deadline ({deadline}s)' >&2; exit 1; fi; sleep 2; done",
            f"mkdir -p {shlex.quote(settings.state_dir)} && echo 'replica of {p.primary}' > {marker}",
        ],
        noop_message="a standby already",
    )


def ports(settings: Settings) -> list[PortUse]:
    return [PortUse(settings.postgresql.port, settings.postgresql.listen, "PostgreSQL")]


ROLE = Role(name="postgresql", groups=("halfstack",), deploy=postgresql,
            services=lambda s: [service(s)], ports=ports, enabled=lambda s: s.postgresql.enabled)
