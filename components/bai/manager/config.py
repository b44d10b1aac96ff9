"""manager.toml as frozen pydantic models (kebab-case keys, as the original)."""

from __future__ import annotations

import socket
from pathlib import Path

from pydantic import Field

from bai.common.config import EtcdConfig, Section, find_config, load_config


class DBConfig(Section):
    type: str = "postgresql"
    addr: str = "127.0.0.1:5432"
    name: str = Field("backend", min_length=2, max_length=64)
    user: str = "bai"
    password: str = ""
    pool_size: int = Field(8, alias="pool-size", ge=1)
    max_overflow: int = Field(64, alias="max-overflow", ge=0)

    @property
    def dsn(self) -> str:
        return f"postgresql+asyncpg://{self.user}:{self.password}@{self.addr}/{self.name}"


class ManagerSection(Section):
    id: str = Field(default_factory=lambda: f"i-{socket.gethostname()}")
    service_addr: str = Field("127.0.0.1:8081", alias="service-addr")
    heartbeat_timeout: float = Field(40.0, alias="heartbeat-timeout", gt=0)
    max_request_size: int = Field(16 * 2**20, alias="max-request-size", gt=0)
    max_wsmsg_size: int = Field(16 * 2**20, alias="max-wsmsg-size", gt=0)
    #: How long a blocking session create waits when the client passes maxWaitSeconds=0.
    default_create_wait: float = Field(0, alias="default-create-wait", ge=0)


class LoggingConfig(Section):
    level: str = "INFO"


class DebugConfig(Section):
    enabled: bool = False


class ManagerConfig(Section):
    etcd: EtcdConfig = EtcdConfig()
    db: DBConfig = DBConfig()
    manager: ManagerSection = ManagerSection()
    logging: LoggingConfig = LoggingConfig()
    debug: DebugConfig = DebugConfig()

    @property
    def service_host_port(self) -> tuple[str, int]:
        host, _, port = self.manager.service_addr.rpartition(":")
        return host, int(port)


def load(path: str | Path | None = None) -> ManagerConfig:
    return load_config(ManagerConfig, find_config("manager", path))
