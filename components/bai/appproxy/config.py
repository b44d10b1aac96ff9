"""app-proxy.toml as frozen pydantic models (kebab-case keys; the original's wsproxy.toml names).

The installer writes this file; the names here are a contract with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from bai.common.config import ByteSize, Duration, EtcdConfig, Section, find_config, load_config

Port = Annotated[int, Field(ge=1, le=65535)]


class ProxySection(Section):
    """``[app-proxy]``."""

    id: str = Field("i-appproxy-local", min_length=1)
    #: Where the coordinator API and the circuits listen.
    bind_host: str = Field("127.0.0.1", alias="bind-host", min_length=1)
    #: The host browsers and clients are sent to (circuit URLs, /status advertise_address).
    advertised_host: str = Field("127.0.0.1", alias="advertised-host", min_length=1)
    bind_api_port: Port = Field(5050, alias="bind-api-port")
    #: The API port clients reach (behind a port mapping); default: bind-api-port.
    advertised_api_port: Port | None = Field(None, alias="advertised-api-port")
    #: Circuits listen on ports from this range, both ends included; one port per circuit.
    bind_proxy_port_range: tuple[Port, Port] = Field((10200, 10300), alias="bind-proxy-port-range")
    protocol: Literal["http"] = "http"
    #: HS256 key of the tokens /v2/conf hands out (the manager passes them to users).
    jwt_encrypt_key: str = Field(alias="jwt-encrypt-key", min_length=32)
    #: HS256 key of the per-circuit tickets and browser cookies.
    permit_hash_key: str = Field(alias="permit-hash-key", min_length=32)
    #: What the manager sends in X-BackendAI-Token: the resource group's ``wsproxy_api_token``.
    api_secret: str = Field(alias="api-secret", min_length=16)
    #: Seconds a /v2/conf token may be used to open a circuit.
    token_ttl: Duration = Field(300.0, alias="token-ttl", gt=0, le=86400)
    #: Seconds a browser's circuit cookie stays valid (the circuit itself lives as long as its session).
    cookie_ttl: Duration = Field(14400.0, alias="cookie-ttl", gt=0)
    #: Bytes of one proxied HTTP request body (413 above).
    max_body_size: ByteSize = Field(2**30, alias="max-body-size", gt=0)
    #: Bytes of one websocket message in either direction (closed with 1009 above).
    max_wsmsg_size: ByteSize = Field(16 * 2**20, alias="max-wsmsg-size", gt=0)
    #: Websocket ping interval towards browsers and services.
    ws_heartbeat: Duration = Field(20.0, alias="ws-heartbeat", gt=0)
    #: Seconds to connect to a service.
    connect_timeout: Duration = Field(10.0, alias="connect-timeout", gt=0)
    #: Seconds a service may stay silent while an HTTP answer is awaited or read.
    read_timeout: Duration = Field(300.0, alias="read-timeout", gt=0)
    #: Seconds a TCP connection (either way) or a stalled writer may idle before it is closed.
    idle_timeout: Duration = Field(3600.0, alias="idle-timeout", gt=0)
    #: A circuit nobody has used for this long is closed (its port freed; the user reopens the app).
    circuit_idle_timeout: Duration = Field(3600.0, alias="circuit-idle-timeout", gt=0)
    #: Requests and connections a circuit serves at once (503 / refused above).
    max_connections_per_circuit: int = Field(256, alias="max-connections-per-circuit", ge=1)
    #: Follow the manager's session events (Redis, found through etcd) to end circuits with their session.
    watch_sessions: bool = Field(True, alias="watch-sessions")
    #: How often the traffic through circuits is written to Redis as the sessions' activity (the
    #: manager's idle timeout; needs watch-sessions, whose Redis it uses).
    activity_flush: Duration = Field(10.0, alias="activity-flush", gt=0, le=600)

    @model_validator(mode="after")
    def _range(self) -> ProxySection:
        low, high = self.bind_proxy_port_range
        if low > high:
            raise ValueError("bind-proxy-port-range: the first port is above the second")
        if low <= self.bind_api_port <= high:
            raise ValueError("bind-api-port lies inside bind-proxy-port-range")
        return self

    @property
    def api_url(self) -> str:
        return f"http://{self.advertised_host}:{self.advertised_api_port or self.bind_api_port}"


class LoggingConfig(Section):
    level: str = "INFO"


class AppProxyConfig(Section):
    etcd: EtcdConfig = EtcdConfig()
    app_proxy: ProxySection = Field(alias="app-proxy")
    logging: LoggingConfig = LoggingConfig()


def load(path: str | Path | None = None) -> AppProxyConfig:
    return load_config(AppProxyConfig, find_config("app-proxy", path))
