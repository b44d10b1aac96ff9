"""storage-proxy.toml as frozen pydantic models (kebab-case keys, as the original).

The installer writes this file; the names here are a contract with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from bai.common.config import ByteSize, Duration, EtcdConfig, Section, find_config, load_config


def _host_port(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not HOST:PORT: {addr!r}")
    return host, int(port)


class ProxySection(Section):
    """``[storage-proxy]``."""

    node_id: str = Field("i-storage-local", alias="node-id", min_length=1)
    #: HS256 key of the client-facing JWTs (upload and download tokens).
    secret: str = Field(min_length=16)
    #: Seconds a token, and so an upload session, lives.
    session_expire: Duration = Field(86400.0, alias="session-expire", gt=0)
    #: The largest file one upload may declare.
    max_upload_size: ByteSize = Field(100 * 2**30, alias="max-upload-size", gt=0)
    #: Most entries one directory listing answers.
    scandir_limit: int = Field(1000, alias="scandir-limit", ge=1, le=100_000)
    #: The uid/gid sessions run as (the agent's kernel-uid/kernel-gid): folders, and the files and
    #: directories the proxy writes into them, are owned by it so sessions can write to what they
    #: mount. Applied only when the proxy runs as root.
    kernel_uid: int = Field(1000, alias="kernel-uid", ge=0)
    kernel_gid: int = Field(1000, alias="kernel-gid", ge=0)
    #: How long a quota scope's computed usage is reused before the scope is walked again.
    usage_cache_ttl: Duration = Field(2.0, alias="usage-cache-ttl", ge=0)


class ApiEndpoint(Section):
    service_addr: str = Field(alias="service-addr")

    @field_validator("service_addr")
    @classmethod
    def _valid_addr(cls, value: str) -> str:
        _host_port(value)
        return value

    @property
    def host_port(self) -> tuple[str, int]:
        return _host_port(self.service_addr)


class ClientApi(ApiEndpoint):
    """``[api.client]``: tus uploads and downloads, authorised by the JWTs."""

    service_addr: str = Field("127.0.0.1:6021", alias="service-addr")


class ManagerApi(ApiEndpoint):
    """``[api.manager]``: the manager's calls, authorised by the shared secret."""

    service_addr: str = Field("127.0.0.1:6022", alias="service-addr")
    #: What the manager sends in ``X-BackendAI-Storage-Auth-Token``.
    secret: str = Field(min_length=16)


class ApiSection(Section):
    client: ClientApi = ClientApi()
    manager: ManagerApi


class VolumeConfig(Section):
    """``[volume.<name>]``: one volume this proxy serves."""

    #: Only the plain-filesystem backend so far; quota is enforced by a usage check on upload.
    backend: Literal["vfs"] = "vfs"
    path: Path
    fsprefix: str = ""
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError("a volume path must be absolute")
        return value


class LoggingConfig(Section):
    level: str = "INFO"


class StorageProxyConfig(Section):
    etcd: EtcdConfig = EtcdConfig()
    storage_proxy: ProxySection = Field(alias="storage-proxy")
    api: ApiSection
    volume: dict[str, VolumeConfig] = Field(default_factory=dict)
    logging: LoggingConfig = LoggingConfig()

    @field_validator("volume")
    @classmethod
    def _volume_names(cls, value: dict[str, VolumeConfig]) -> dict[str, VolumeConfig]:
        for name in value:
            if not name or "/" in name or ":" in name or name.startswith("."):
                raise ValueError(f"bad volume name {name!r}")
        return value


def load(path: str | Path | None = None) -> StorageProxyConfig:
    return load_config(StorageProxyConfig, find_config("storage-proxy", path))
