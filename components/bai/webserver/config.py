"""webserver.toml as frozen pydantic models.

Section and key names follow the original's ``webserver.conf`` where they apply (snake_case:
``[service] ip/port/ssl_*``, ``[api] domain/endpoint``, ``[session] redis/max_age/login_block_time/
login_allowed_fail_count``); what is ours is documented next to each key. The installer writes
this file (mode 600: it holds the Redis password); the names are a contract with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from bai.common.config import ByteSize, Duration, Section, find_config, load_config
from bai.common.redis import DEFAULT_SERVICE_NAME, RedisTarget, SentinelAddrs, ServiceName

Port = Annotated[int, Field(ge=1, le=65535)]

STATIC_DIR = Path(__file__).parent / "static"


class ServiceSection(Section):
    """``[service]``: where browsers reach the webserver."""

    ip: str = Field("127.0.0.1", min_length=1)
    port: Port = 8080
    ssl_enabled: bool = False
    ssl_cert: Path | None = None
    ssl_privkey: Path | None = None
    #: The scheme browsers use when a TLS-terminating proxy sits in front ("https" makes cookies
    #: Secure and is the scheme expected in Origin headers); default: https when ssl_enabled.
    force_endpoint_protocol: Literal["http", "https"] | None = None
    #: Peers whose X-Forwarded-For names the client (a reverse proxy in front of us).
    trusted_proxies: frozenset[str] = frozenset()
    #: Origins (scheme://host[:port]) besides our own that may send state-changing requests.
    allowed_origins: frozenset[str] = frozenset()
    #: Bytes of one request body through /func/ (413 above).
    max_body_size: ByteSize = Field(16 * 2**20, gt=0)
    #: Bytes of one websocket message through /func/ and /pipe/ (closed with 1009 above).
    max_wsmsg_size: ByteSize = Field(16 * 2**20, gt=0)
    ws_heartbeat: Duration = Field(20.0, gt=0)
    #: Requests relayed to the manager at once (503 above): bounds sockets and memory.
    max_concurrent_requests: int = Field(1024, ge=1)
    #: The web UI's files (index.html, static assets).
    static_path: Path = STATIC_DIR
    #: Debian's libjs-xterm, served under /vendor/xterm/.
    xterm_path: Path = Path("/usr/share/javascript/xterm")

    @model_validator(mode="after")
    def _tls(self) -> ServiceSection:
        if self.ssl_enabled and (self.ssl_cert is None or self.ssl_privkey is None):
            raise ValueError("ssl_enabled needs ssl_cert and ssl_privkey")
        return self

    @property
    def scheme(self) -> str:
        return self.force_endpoint_protocol or ("https" if self.ssl_enabled else "http")


class ApiSection(Section):
    """``[api]``: the manager we front."""

    domain: str = Field("default", min_length=1)
    #: The manager's URL; the original allows a comma list, of which the first is used.
    endpoint: str = "http://127.0.0.1:8081"
    ssl_verify: bool = True
    #: Seconds to connect to the manager.
    connect_timeout: Duration = Field(10.0, gt=0)
    #: Seconds the manager may stay silent while an answer is awaited or read (SSE streams are
    #: exempt: they idle as long as the browser keeps them).
    read_timeout: Duration = Field(300.0, gt=0)

    @field_validator("endpoint")
    @classmethod
    def _first(cls, value: str) -> str:
        first = value.split(",")[0].strip().rstrip("/")
        if not first.startswith(("http://", "https://")):
            raise ValueError("endpoint must be an http:// or https:// URL")
        return first


class RedisSection(Section):
    """``[session.redis]``: one Redis server (``addr``), or the primary Redis Sentinel names."""

    addr: str = "127.0.0.1:6379"
    db: int = Field(5, ge=0, le=15)
    password: str | None = None
    #: The sentinels' ``"host:port"`` (a list, or one comma-separated string); when set, ``addr``
    #: is not used and logins live on whichever server the sentinels name the primary.
    sentinel: SentinelAddrs = ()
    #: The name the sentinels monitor the primary under (``service_name`` is read too).
    service_name: ServiceName = Field(DEFAULT_SERVICE_NAME, validation_alias=AliasChoices("service-name", "service_name"))

    @property
    def target(self) -> RedisTarget:
        """Where the logins' Redis is (for :func:`bai.common.redis.open_redis_target`)."""
        return RedisTarget(addr=self.addr, password=self.password, sentinel=self.sentinel,
                           service_name=self.service_name)


class SessionSection(Section):
    """``[session]``: browser sessions (Redis) and login throttling."""

    redis: RedisSection = RedisSection()
    #: Seconds a login lasts at most (the original's default: a week).
    max_age: Duration = Field(604800.0, gt=0)
    #: Seconds without a request after which a login ends (ours).
    idle_timeout: Duration = Field(43200.0, gt=0)
    #: Seconds a user id / client address stays blocked after too many failed logins.
    login_block_time: Duration = Field(1200.0, gt=0)
    #: Failed logins per user id within login_block_time before it is blocked (429).
    login_allowed_fail_count: int = Field(10, ge=1)
    #: Failed logins per client address within login_block_time before it is blocked (ours).
    login_allowed_fail_count_per_addr: int = Field(50, ge=1)
    #: Logins (any outcome) in flight at once; more answer 429 (each costs the manager a hash).
    max_concurrent_logins: int = Field(16, ge=1)
    flush_on_startup: bool = False
    cookie_name: str = Field("AIOHTTP_SESSION", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    same_site: Literal["Lax", "Strict"] = "Lax"


class SecuritySection(Section):
    """``[security]`` (ours): the Content-Security-Policy's extra sources."""

    #: Origins the UI may fetch from or open sockets to besides its own (the app proxy, the
    #: storage proxy's client API for uploads and downloads).
    csp_connect_src: tuple[str, ...] = ()
    #: Origins the UI may show in frames (none by default).
    csp_frame_src: tuple[str, ...] = ()

    @field_validator("csp_connect_src", "csp_frame_src")
    @classmethod
    def _sources(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for v in values:
            if not v or any(c in v for c in ";,'\" \t\r\n"):
                raise ValueError(f"not a CSP source: {v!r}")
        return values


class LoggingConfig(Section):
    level: str = "INFO"


class WebserverConfig(Section):
    service: ServiceSection = ServiceSection()
    api: ApiSection = ApiSection()
    session: SessionSection = SessionSection()
    security: SecuritySection = SecuritySection()
    logging: LoggingConfig = LoggingConfig()


def load(path: str | Path | None = None) -> WebserverConfig:
    return load_config(WebserverConfig, find_config("webserver", path))
