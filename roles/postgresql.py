"""PostgreSQL for the half-stack: Debian's cluster <version>/main on loopback, the ``bai`` role
(LOGIN CREATEDB, password from the secrets file) and the ``backend`` database it owns."""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra.api import deploy
from pyinfra.operations import files

from . import _ops
from ._common import secret_expr, secrets_file
from ._service import Service, ensure_service, manager
from .catalog import PortUse, Role
from .settings import Settings


def conf_text(settings: Settings) -> str:
    # server flags from the original's install guide; loopback only
    return "\n".join([
        "# managed by bai-install; changes are overwritten",
        f"listen_addresses = '{settings.postgresql.listen}'",
        f"port = {settings.postgresql.port}",
        "max_connections = 256",
        "deadlock_timeout = 10s",
        "idle_in_transaction_session_timeout = 60000",
        "",
    ])


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
    ensure_service(service(settings), configs=configs, timeout=settings.ready_timeout)

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


def ports(settings: Settings) -> list[PortUse]:
    return [PortUse(settings.postgresql.port, settings.postgresql.listen, "PostgreSQL")]


ROLE = Role(name="postgresql", groups=("halfstack",), deploy=postgresql,
            services=lambda s: [service(s)], ports=ports)
