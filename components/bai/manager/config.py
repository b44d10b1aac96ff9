"""manager.toml as frozen pydantic models (kebab-case keys, as the original)."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field, field_validator
from sqlalchemy.engine import URL

from bai.common.config import Duration, EtcdConfig, Section, find_config, load_config
from bai.common.etcd import parse_addr_list
from bai.common.host_mounts import HostMountsConfig


class DBConfig(Section):
    type: str = "postgresql"
    #: ``host:port``, or a primary and its standbys comma-separated (``"pg1:5432,pg2:5432"``): the
    #: manager connects to whichever of them accepts writes (``target_session_attrs=read-write``),
    #: so after a standby is promoted new connections go to it.
    addr: str = "127.0.0.1:5432"
    name: str = Field("backend", min_length=2, max_length=64)
    user: str = "bai"
    password: str = ""
    pool_size: int = Field(8, alias="pool-size", ge=1)
    max_overflow: int = Field(64, alias="max-overflow", ge=0)

    @field_validator("addr")
    @classmethod
    def _hosts(cls, value: str) -> str:
        return ",".join(f"{host}:{port}" for host, port in parse_addr_list(value, 5432))

    @property
    def hosts(self) -> list[tuple[str, int]]:
        return parse_addr_list(self.addr, 5432)

    @property
    def dsn(self) -> str:
        """The SQLAlchemy URL (user and password escaped); several hosts go in its query, as
        SQLAlchemy's asyncpg dialect passes them on to asyncpg, with ``target_session_attrs``."""
        hosts = self.hosts
        if len(hosts) == 1:
            url = URL.create("postgresql+asyncpg", self.user, self.password, *hosts[0], self.name)
        else:
            query = {"host": [f"{h}:{p}" for h, p in hosts], "target_session_attrs": "read-write"}
            url = URL.create("postgresql+asyncpg", self.user, self.password, database=self.name, query=query)
        return url.render_as_string(hide_password=False)


class ManagerSection(Section):
    id: str = Field(default_factory=lambda: f"i-{socket.gethostname()}")
    service_addr: str = Field("127.0.0.1:8081", alias="service-addr")
    heartbeat_timeout: float = Field(40.0, alias="heartbeat-timeout", gt=0)
    max_request_size: int = Field(16 * 2**20, alias="max-request-size", gt=0)
    #: One file of POST /session/{ref}/upload (the whole request stays under max-request-size).
    max_upload_file_size: int = Field(16 * 2**20, alias="max-upload-file-size", gt=0)
    max_wsmsg_size: int = Field(16 * 2**20, alias="max-wsmsg-size", gt=0)
    #: Seconds between websocket pings; a client that has not answered within half of it is dropped.
    ws_heartbeat: float = Field(20.0, alias="ws-heartbeat", gt=0)
    #: A streaming client (websocket or SSE) that takes no data for this long is dropped.
    stream_send_timeout: float = Field(30.0, alias="stream-send-timeout", gt=0)
    #: How long a blocking session create waits when the client passes maxWaitSeconds=0 before
    #: answering status TIMEOUT (the session keeps starting); 0 waits without limit.
    default_create_wait: float = Field(120.0, alias="default-create-wait", ge=0)
    #: A session in SCHEDULED/PREPARING/PULLING or TERMINATING for longer than this is failed
    #: (CANCELLED, or TERMINATED after one more destroy attempt) and its slots are freed.
    stuck_session_timeout: float = Field(300.0, alias="stuck-session-timeout", gt=0)
    #: How often the stuck-session sweep runs.
    sweep_interval: float = Field(30.0, alias="sweep-interval", gt=0)
    #: How often running sessions are checked against their keypair policy's idle_timeout and
    #: max_session_lifetime (services/idle.py); activity stamps reach Redis at the same pace.
    idle_check_interval: float = Field(10.0, alias="idle-check-interval", gt=0)
    #: How often every agent's kernels are reconciled with the database (also done at once when
    #: an agent comes back or answers again after an RPC could not reach it).
    agent_sync_interval: float = Field(30.0, alias="agent-sync-interval", gt=0)
    #: Base deadline of an agent RPC (destroy gets twice this; ping/list 5/10 s at most).
    agent_rpc_timeout: float = Field(30.0, alias="agent-rpc-timeout", gt=0)
    agent_rpc_connect_timeout: float = Field(5.0, alias="agent-rpc-connect-timeout", gt=0)
    #: Socket timeout of Redis commands (blocking stream reads wait 1 s, well under it).
    redis_timeout: float = Field(10.0, alias="redis-timeout", gt=1)
    #: Deadline of each etcd call made after start-up (lease refreshes, registration).
    etcd_timeout: float = Field(10.0, alias="etcd-timeout", gt=0)
    #: Entries another manager received but left unacknowledged this long are re-claimed.
    event_claim_min_idle: float = Field(60.0, alias="event-claim-min-idle", gt=0)
    #: Attempts at an event whose handler meets a transient error (database or Redis down)
    #: before it is set aside on the ``events.dead`` stream.
    event_retries: int = Field(6, alias="event-retries", ge=1)
    #: Devices whose free amounts agent selection compares first, in this order (a device's
    #: sub-slots such as ``cuda.shares`` follow it; devices not listed come last).
    agent_selection_resource_priority: tuple[str, ...] = Field(
        ("cuda", "rocm", "tpu", "cpu", "mem"), alias="agent-selection-resource-priority", max_length=64)


class AuthConfig(Section):
    """``[auth]``: anonymous sign-up and the throttling of password checks."""

    #: ``POST /auth/signup`` creates accounts only when the operator turns it on (403 otherwise).
    signup_enabled: bool = Field(False, alias="signup-enabled")
    #: Keypair resource policy of signed-up users; it must exist and limit at least cpu and mem.
    signup_resource_policy: str = Field("signup-default", alias="signup-resource-policy", min_length=1)
    #: Failed logins (and sign-ups) allowed per client address and per user name in one window;
    #: past it, 429 with Retry-After and no password check at all.
    max_failed_attempts: int = Field(10, alias="max-failed-attempts", ge=1)
    #: The window of ``max-failed-attempts``, in seconds.
    failed_attempts_window: int = Field(60, alias="failed-attempts-window", ge=1)
    #: Password hashes (600k-round PBKDF2) computed at once; more requests wait their turn.
    max_concurrent_hashing: int = Field(2, alias="max-concurrent-hashing", ge=1)
    #: Requests waiting for a hashing slot beyond which further ones are refused with 429.
    max_hashing_queue: int = Field(32, alias="max-hashing-queue", ge=0)
    #: Peers (e.g. the webserver) whose ``X-Forwarded-For`` names the client address.
    trusted_proxies: frozenset[str] = Field(frozenset(), alias="trusted-proxies")
    #: How long a keypair replaced by ``POST /auth/rotate-keypair`` keeps working next to its
    #: successor before it is deactivated (0: at once).
    rotation_grace: Duration = Field(86400.0, alias="rotation-grace", ge=0)
    #: Shortest new password ``POST /auth/update-password`` accepts.
    password_min_length: int = Field(8, alias="password-min-length", ge=1)


class AuditConfig(Section):
    """``[audit]``: the audit log of mutations, admin calls and failed authentication."""

    #: Entries older than this are purged.
    retention: Duration = Field(90 * 86400.0, ge=60)
    #: How often the purge runs.
    purge_interval: Duration = Field(3600.0, alias="purge-interval", gt=0)
    #: Entries waiting for the database at most; past it the oldest waiting entry is dropped
    #: (counted, logged, and the count written to the log as an ``audit.dropped`` entry).
    queue_size: int = Field(2000, alias="queue-size", ge=1)


class GraphQLConfig(Section):
    """``[graphql]``: limits checked before a query is validated or run."""

    max_document_size: int = Field(32 * 1024, alias="max-document-size", ge=64)  # bytes of the query
    max_depth: int = Field(20, alias="max-depth", ge=1)  # nested selections; full introspection needs 15
    max_fields: int = Field(500, alias="max-fields", ge=1)  # fields selected, fragments expanded; introspection: 229
    max_aliases: int = Field(30, alias="max-aliases", ge=0)  # aliased fields, fragments expanded
    max_page_size: int = Field(100, alias="max-page-size", ge=1)  # most items a *_list query's limit may ask for


class LoggingConfig(Section):
    level: str = "INFO"


class DebugConfig(Section):
    enabled: bool = False


class ManagerConfig(Section):
    etcd: EtcdConfig = EtcdConfig()
    db: DBConfig = DBConfig()
    manager: ManagerSection = ManagerSection()
    auth: AuthConfig = AuthConfig()
    graphql: GraphQLConfig = GraphQLConfig()
    audit: AuditConfig = AuditConfig()
    logging: LoggingConfig = LoggingConfig()
    debug: DebugConfig = DebugConfig()
    host_mounts: HostMountsConfig = Field(HostMountsConfig(), alias="host-mounts")

    @property
    def service_host_port(self) -> tuple[str, int]:
        host, _, port = self.manager.service_addr.rpartition(":")
        return host, int(port)


def load(path: str | Path | None = None) -> ManagerConfig:
    return load_config(ManagerConfig, find_config("manager", path))
