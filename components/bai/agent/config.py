"""agent.toml as frozen pydantic models (kebab-case keys, as the original)."""

from __future__ import annotations

import socket
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator

from bai.common.config import EtcdConfig, Section, find_config, load_config
from bai.common.host_mounts import HostMountsConfig
from bai.common.types import ResourceSlots, parse_binary_size


class AgentSection(Section):
    id: str = Field(default_factory=lambda: f"i-{socket.gethostname()}", min_length=1)
    rpc_listen_addr: str = Field("127.0.0.1:6001", alias="rpc-listen-addr")
    scaling_group: str = Field("default", alias="scaling-group")
    region: str | None = None
    ipc_base_path: Path = Field(Path("/var/lib/bai/ipc"), alias="ipc-base-path")
    #: Where ``POST /session/{ref}/commit`` leaves image tars: ``<path>/<owner e-mail>/<file>.tar``.
    image_commit_path: Path = Field(Path("/var/lib/bai/commit"), alias="image-commit-path")
    #: Compute plugins (entry points of ``bai.compute_plugins``) to load: None = every registered
    #: one except opt-in ones (``mock``); ``cpu`` and ``mem`` are always loaded.
    allow_compute_plugins: tuple[str, ...] | None = Field(None, alias="allow-compute-plugins")
    block_compute_plugins: tuple[str, ...] = Field((), alias="block-compute-plugins")
    heartbeat_interval: float = Field(5.0, alias="heartbeat-interval", gt=0)
    kernel_creation_concurrency: int = Field(4, alias="kernel-creation-concurrency", ge=1, le=32)
    #: ``docker`` runs kernels in containers; ``dummy`` (tests and benchmarks only) runs nothing
    #: and answers as if it had (:mod:`bai.agent.dummy`, configured by ``[dummy]``).
    backend: Literal["docker", "dummy"] = "docker"


#: The ``work`` user baked into the kernel image (roles/files/build-kernel-image.sh).
KERNEL_UID = KERNEL_GID = 1000


class ContainerSection(Section):
    port_range: tuple[int, int] = Field((30000, 31000), alias="port-range")
    bind_host: str = Field("127.0.0.1", alias="bind-host")
    #: How long a new container may take until its kernel runner connects.
    runner_start_timeout: float = Field(30.0, alias="runner-start-timeout", gt=0)
    #: Who runs everything in a kernel container (never root: 0 is refused).
    kernel_uid: int = Field(KERNEL_UID, alias="kernel-uid", ge=1)
    kernel_gid: int = Field(KERNEL_GID, alias="kernel-gid", ge=1)
    #: Processes (and threads) a container may have at once: a fork bomb stops there.
    pids_limit: int = Field(4096, alias="pids-limit", ge=16)
    #: json-file log rotation of each container: at most ``log-max-files`` of ``log-max-size``.
    log_max_size: int = Field(10 * 2**20, alias="log-max-size", ge=2**16)
    log_max_files: int = Field(3, alias="log-max-files", ge=1, le=100)
    #: Unread console output one run may hold on the agent; beyond it the oldest is dropped.
    output_buffer_size: int = Field(4 * 2**20, alias="output-buffer-size", ge=2**12)

    @field_validator("log_max_size", "output_buffer_size", mode="before")
    @classmethod
    def _size(cls, value: object) -> int:
        return parse_binary_size(value)  # type: ignore[arg-type]


class ResourceSection(Section):
    reserved_cpu: Decimal = Field(Decimal(0), alias="reserved-cpu", ge=0)
    reserved_mem: int = Field(512 * 2**20, alias="reserved-mem", ge=0)
    #: CPU cores (ids as in /proc/cpuinfo) kernels never get; ``reserved-cpu`` reserves that
    #: many more (rounded up), the lowest-numbered of the rest.
    reserved_cores: tuple[int, ...] = Field((), alias="reserved-cores")
    #: Which plugins' devices are allocated first (plugins not named come after, by name).
    allocation_order: tuple[str, ...] = Field(("cuda", "rocm", "tpu", "cpu", "mem"), alias="allocation-order")

    @field_validator("reserved_mem", mode="before")
    @classmethod
    def _size(cls, value: object) -> int:
        return parse_binary_size(value)  # type: ignore[arg-type]


DUMMY_DEFAULT_SLOTS: dict[str, str | int | float] = {"cpu": 8, "mem": "16g"}


class DummySection(Section):
    """The dummy backend's make-believe (``[agent] backend = "dummy"``): what it reports as its
    capacity, and how long creating and destroying a kernel pretends to take."""

    slots: dict[str, str | int | float] = Field(default_factory=lambda: dict(DUMMY_DEFAULT_SLOTS))
    create_delay: float = Field(0.05, alias="create-delay", ge=0, le=60)
    destroy_delay: float = Field(0.0, alias="destroy-delay", ge=0, le=60)

    @field_validator("slots")
    @classmethod
    def _slots(cls, value: dict[str, str | int | float]) -> dict[str, str | int | float]:
        if "cpu" not in value or "mem" not in value:
            raise ValueError("[dummy] slots needs at least cpu and mem")
        dummy_capacity(value)  # raises ValueError on a bad amount
        return value

    def capacity(self) -> ResourceSlots:
        return dummy_capacity(self.slots)


def dummy_capacity(raw: dict[str, str | int | float]) -> ResourceSlots:
    """``{cpu=8, mem="16g", "cuda.device"=2}`` as Decimals (``mem`` and ``*.mem`` take sizes)."""
    out: ResourceSlots = {}
    for slot, amount in raw.items():
        if not slot or len(slot) > 64:
            raise ValueError(f"bad slot name {slot!r}")
        try:
            value = Decimal(parse_binary_size(amount)) if slot == "mem" or slot.endswith(".mem") \
                else Decimal(str(amount))
        except (ArithmeticError, ValueError) as exc:
            raise ValueError(f"bad amount for slot {slot}: {amount!r}") from exc
        if not value.is_finite() or value < 0:
            raise ValueError(f"bad amount for slot {slot}: {amount!r}")
        out[slot] = value
    return out


class LoggingConfig(Section):
    level: str = "INFO"


class DebugConfig(Section):
    enabled: bool = False


class AgentConfig(Section):
    etcd: EtcdConfig = Field(default_factory=lambda: EtcdConfig.model_validate({}))
    agent: AgentSection = Field(default_factory=lambda: AgentSection.model_validate({}))
    container: ContainerSection = Field(default_factory=lambda: ContainerSection.model_validate({}))
    resource: ResourceSection = Field(default_factory=lambda: ResourceSection.model_validate({}))
    logging: LoggingConfig = Field(default_factory=lambda: LoggingConfig.model_validate({}))
    debug: DebugConfig = Field(default_factory=lambda: DebugConfig.model_validate({}))
    dummy: DummySection = Field(default_factory=lambda: DummySection.model_validate({}))
    host_mounts: HostMountsConfig = Field(default_factory=lambda: HostMountsConfig.model_validate({}),
                                          alias="host-mounts")
    #: ``[plugins.<key>]``: each compute plugin's own settings (e.g. ``[plugins.mock] config-path``).
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: The file this was read from (:func:`load`; None when built in code): the agent keeps a
    #: resource group the manager moves it to there (bai.agent.config_file).
    _source_path: Path | None = PrivateAttr(default=None)

    @property
    def source_path(self) -> Path | None:
        return self._source_path

    @property
    def rpc_host_port(self) -> tuple[str, int]:
        host, _, port = self.agent.rpc_listen_addr.rpartition(":")
        return host or "127.0.0.1", int(port)


def load(path: str | Path | None = None) -> AgentConfig:
    source = find_config("agent", path)
    config = load_config(AgentConfig, source)
    config._source_path = source.absolute()
    return config
