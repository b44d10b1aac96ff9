"""Typed settings every role takes, built from inventory host data plus the generated secrets.

Settings are nested per component: ``settings.postgresql.port``, ``settings.manager.addr``, ...
One section model per component (a frozen pydantic model, unknown keys refused); the paths and
the log level every component shares stay at the top (``settings.config_dir``). Defaults are the
all-in-one values of ``components/CONTRACTS.md``. Inventory host data is nested the same way and
overrides any field per host::

    ("db1", {"postgresql": {"listen": "10.0.0.5"}, "redis": {"maxmemory": "1gb"}})

:func:`check_host_data` validates host data up front and names the host and the key path of each
problem; roles never read host data themselves.

Adding a section: a ``class FooSettings(Section)`` with defaults, then one field
``foo: FooSettings = FooSettings()`` on :class:`Settings`. A generated secret: a field of the
section left ``""`` plus one line in :data:`SECRETS` (its name in the secrets file -> its path).
"""

from __future__ import annotations

import secrets as _secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SECRETS_PATH = "/etc/backend.ai/secrets.toml"
#: The venv's commands a user types; linked into ``Settings.bin_dir``.
COMMANDS = ("backend.ai", "bai-install", "bai-manager", "bai-agent")
#: Host data keys that are pyinfra's, not ours (connector data and global arguments).
CONNECTOR_PREFIXES = ("ssh_", "docker_", "local_", "winrm_", "chroot_", "podman_", "_")


class Section(BaseModel):
    """Base of every settings section: frozen, unknown keys refused (a typo is an error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class OsSettings(Section):
    """OS preparation (roles/os_prep.py, every host; conntrack.py, agents)."""

    user: str = "bai"  # the service account
    uid: int = Field(1100, ge=1, le=2**31 - 2)
    gid: int = Field(1100, ge=1, le=2**31 - 2)
    nofile: int = Field(512000, ge=1024)  # open files, soft and hard (root and the account)
    nproc: int = Field(65536, ge=1024)
    #: systemd hosts outside a container: run systemd-timesyncd unless another NTP daemon is
    #: installed; elsewhere the clock is only reported
    time_sync: bool = True
    #: agents: the conntrack table and timeouts of the original's guide (needs nf_conntrack)
    conntrack: bool = True


class PostgresqlSettings(Section):
    """Debian's cluster ``<version>/main`` and the database the manager uses."""

    version: int = 15
    listen: str = "127.0.0.1"
    port: int = 5432
    host: str = "127.0.0.1"  # how the manager reaches the database
    database: str = "backend"
    user: str = "bai"
    password: str = ""  # generated (secrets file: db_password)
    allow_cidrs: tuple[str, ...] = ()  # remote managers allowed to log in as `user`
    #: HA (the same on every host): the primary's address; the half-stack host whose ``listen``
    #: it is runs the primary. "" = one server at ``host``.
    primary: str = ""
    #: HA: the streaming replicas' addresses (half-stack hosts' ``listen``); the manager's
    #: ``[db] addr`` lists the primary and them (it connects to whichever is read-write).
    replicas: tuple[str, ...] = ()
    #: HA: the role the replicas stream as (its password derives from ``password``)
    replication_user: str = "replicator"
    #: False: this half-stack host runs no PostgreSQL (HA: a third etcd + Redis host)
    enabled: bool = True

    @model_validator(mode="after")
    def _replication(self) -> PostgresqlSettings:
        if self.replicas and not self.primary:
            raise ValueError("postgresql.replicas without postgresql.primary: a replica needs "
                             "the primary's address")
        if self.primary and self.primary in self.replicas:
            raise ValueError(f"postgresql.primary {self.primary} is also in postgresql.replicas")
        if len(set(self.replicas)) != len(self.replicas):
            raise ValueError("postgresql.replicas lists an address twice")
        return self

    @property
    def addr(self) -> str:
        """The manager's ``[db] addr``: ``host:port``, or (HA) the primary's and each replica's,
        comma-separated."""
        if self.primary:
            return ",".join(f"{h}:{self.port}" for h in (self.primary, *self.replicas))
        return f"{self.host}:{self.port}"


class RedisSettings(Section):
    listen: str = "127.0.0.1"
    port: int = 6379
    addr: str = "127.0.0.1:6379"  # what goes into etcd config/redis/addr
    maxmemory: str = "512mb"
    password: str = ""  # generated (secrets file: redis_password); etcd config/redis/password
    #: HA (the same on every host): every Sentinel's "host:port" (one on each half-stack host:
    #: its ``listen``:``sentinel_port``); etcd config/redis/sentinel. () = no Sentinel.
    sentinel: tuple[str, ...] = ()
    service_name: str = "mymaster"  # the name Sentinel monitors the primary as
    sentinel_port: int = 26379
    quorum: int = Field(2, ge=1)  # sentinels that must agree the primary is down
    #: HA: the first primary's "host:port" (the other half-stack hosts start as its replicas);
    #: after that Sentinel decides, and a re-run never moves the primary back
    primary: str = ""
    down_after_ms: int = Field(5000, ge=100)  # unanswered this long: the primary is down
    failover_timeout_ms: int = Field(60000, ge=1000)

    @model_validator(mode="after")
    def _sentinel(self) -> RedisSettings:
        if self.sentinel:
            if len(set(self.sentinel)) != len(self.sentinel):
                raise ValueError("redis.sentinel lists an address twice")
            if self.quorum > len(self.sentinel):
                raise ValueError(f"redis.quorum {self.quorum} is more than the "
                                 f"{len(self.sentinel)} sentinel(s) of redis.sentinel")
            if not self.primary:
                raise ValueError("redis.sentinel without redis.primary: Sentinel needs the first "
                                 "primary's host:port")
        elif self.primary:
            raise ValueError("redis.primary without redis.sentinel: replicas are run with "
                             "Sentinel only (list the sentinels)")
        return self


class EtcdSettings(Section):
    listen: str = "127.0.0.1"
    client_port: int = 2379
    peer_port: int = 2380
    name: str = "default"
    data_dir: str = "/var/lib/etcd/default"
    addr: str = "127.0.0.1:2379"  # how the daemons reach etcd (HA: "h1:2379,h2:2379,h3:2379")
    namespace: str = "local"
    #: HA (the same on every host): every member's address (a half-stack host's ``listen``),
    #: 3 or 5 of them; each member is named after its address. () = one member, ``name``.
    members: tuple[str, ...] = ()
    cluster_token: str = "bai-etcd"  # initial-cluster-token (read only when the cluster is made)

    @field_validator("members")
    @classmethod
    def _odd_members(cls, members: tuple[str, ...]) -> tuple[str, ...]:
        if members and (len(members) % 2 == 0 or len(members) < 3):
            raise ValueError(f"{len(members)} members: an etcd cluster needs an odd number, 3 or "
                             "more (an even one tolerates no more failures than one member less)")
        if len(set(members)) != len(members):
            raise ValueError("a member is listed twice")
        return members

    @property
    def endpoint(self) -> str:
        """etcdctl's ``--endpoints`` (every address of ``addr``)."""
        return ",".join(f"http://{a.strip()}" for a in self.addr.split(",") if a.strip())


class ManagerSettings(Section):
    id: str = "i-local"
    addr: str = "127.0.0.1:8081"

    @property
    def endpoint(self) -> str:
        return f"http://{self.addr}"


class AgentSettings(Section):
    id: str = "i-local"
    rpc_addr: str = "127.0.0.1:6001"
    scaling_group: str = "default"
    container_port_range: tuple[int, int] = (30000, 31000)
    container_bind_host: str = "127.0.0.1"
    reserved_mem: str = "512m"
    rpc_secret: str = ""  # generated (secrets file: rpc_secret); etcd config/agent/rpc-secret


class AddressPool(Section):
    """One entry of daemon.json's ``default-address-pools``: local networks of prefix length
    ``size`` carved from ``base`` (e.g. base 10.201.0.0/16, size 24: 256 networks)."""

    base: str
    size: int = Field(ge=1, le=128)

    @model_validator(mode="after")
    def _fits(self) -> AddressPool:
        import ipaddress

        try:
            net = ipaddress.ip_network(self.base)
        except ValueError as exc:
            raise ValueError(f"base {self.base!r} is not a network in CIDR form ({exc})") from None
        if not net.prefixlen <= self.size <= net.max_prefixlen:
            raise ValueError(f"size {self.size} must lie between the prefix length of base "
                             f"({net.prefixlen}) and {net.max_prefixlen}")
        return self


class DockerSettings(Section):
    """The Docker engine of agents (roles/docker.py): what goes into /etc/docker/daemon.json (keys
    set there by hand are kept)."""

    #: containers keep running while dockerd restarts (incompatible with swarm mode: hosts that
    #: join a swarm need it off)
    live_restore: bool = True
    log_max_size: str = "100m"  # json-file log of each container, per file
    log_max_file: int = Field(3, ge=1, le=100)
    storage_driver: str = ""  # "" = Docker's own choice (overlay2)
    #: daemon.json ``default-address-pools`` when set; () = Docker's own pools (room for about
    #: 30 local networks per engine; each multi-kernel session on a host takes one). Changing it
    #: restarts dockerd: set it before sessions run (swarm members, live-restore off, lose them)
    address_pools: tuple[AddressPool, ...] = ()


class AcceleratorSettings(Section):
    """GPUs on agents (roles/accelerators.py)."""

    #: auto: use NVIDIA GPUs where found; on: require them; off: never load the CUDA plugin
    cuda: Literal["auto", "on", "off"] = "auto"
    #: discrete: whole GPUs (cuda.device); fractional: cuda.shares through NVIDIA MPS
    cuda_mode: Literal["discrete", "fractional"] = "discrete"
    cuda_unit_mem: str = ""  # fractional: device memory of one share ("" = the plugin's 2 GiB)
    min_driver: str = "525.60.13"  # the oldest driver accepted (CUDA 12.0's minimum on Linux)
    #: the mock accelerator instead (CPU-only test clusters): make-believe cuda devices
    mock: bool = False
    mock_devices: int = Field(2, ge=1, le=64)
    mock_memory: str = "16g"
    mock_mode: Literal["discrete", "fractional"] = "discrete"


class KernelImageSettings(Section):
    image: str = "bai.local/stable/python:3.11-debian12"
    rootfs_cache: str = "/var/cache/bai/rootfs-python-bookworm"
    #: The JupyterLab image (layered on the python rootfs); "" builds none.
    jupyter_image: str = "bai.local/stable/python-jupyter:3.11-debian12"
    jupyter_rootfs_cache: str = "/var/cache/bai/rootfs-python-jupyter-bookworm"


class RegistrySettings(Section):
    """The optional container registry (roles/registry.py; off unless ``enabled``). On loopback
    it serves plain HTTP without credentials; on any other address (or with ``tls``) it serves
    TLS with a certificate of the installer's own CA and asks for ``username``/``password``.
    Agents with ``enabled`` push the kernel images to it (roles/kernel_image.py)."""

    enabled: bool = False
    listen: str = "127.0.0.1"
    port: int = 5000
    data_dir: str = "/var/lib/docker-registry"
    #: the name or address the agents and the manager reach it at ("" = ``listen``; required
    #: when ``listen`` is a wildcard); the server certificate is made for it
    advertised_host: str = ""
    tls: bool = False  # TLS and credentials on loopback too (always on elsewhere)
    username: str = "bai"
    password: str = ""  # generated (secrets file: registry_password)
    project: str = "stable"  # kernel images are pushed as <host:port>/<project>/<name>:<tag>
    #: the agent (its ``agent.id``) that builds the kernel images and pushes them; the other
    #: agents pull them on first use. "" = every agent builds and pushes its own
    builder: str = ""
    ca_seed: str = ""  # generated (registry_ca_seed): the CA's and the server's keys derive from it

    @model_validator(mode="after")
    def _reachable_name(self) -> RegistrySettings:
        if self.enabled and self.listen in ("0.0.0.0", "::", "") and not self.advertised_host:
            raise ValueError(f"registry.advertised_host is required when registry.listen is "
                             f"{self.listen!r} (the name or address agents reach it at)")
        return self


class StorageProxySettings(Section):
    """One proxy named ``name`` serving one volume; folders are ``<name>:<volume_name>``."""

    node_id: str = "i-storage-local"
    name: str = "local"
    client_addr: str = "127.0.0.1:6021"  # client-facing API (tus upload, download)
    manager_addr: str = "127.0.0.1:6022"  # manager-facing API
    client_url: str = ""  # what clients are sent to; "" = http://<client_addr>
    volume_name: str = "volume1"
    volume_backend: str = "vfs"
    volume_path: str = "/var/lib/bai/vfroot/local"  # the same path on every agent
    session_expire: int = 86400  # seconds a client upload/download token lives
    max_upload_size: int = 107374182400
    scandir_limit: int = 1000
    exposed_volume_info: str = "percentage"
    secret: str = ""  # generated (storage_secret): HS256 key of the client-facing tokens
    manager_secret: str = ""  # generated (storage_manager_secret): X-BackendAI-Storage-Auth-Token

    @property
    def client_endpoint(self) -> str:
        return self.client_url or f"http://{self.client_addr}"

    @property
    def manager_endpoint(self) -> str:
        return f"http://{self.manager_addr}"


class AppProxySettings(Section):
    """Opens sessions' web apps; registered as the ``wsproxy_addr`` of ``scaling_group``."""

    id: str = "i-appproxy-local"
    scaling_group: str = "default"
    bind_host: str = "127.0.0.1"
    advertised_host: str = "127.0.0.1"  # what browsers and clients are sent to
    api_port: int = 5050
    port_range: tuple[int, int] = (10200, 10300)  # one port per open app (circuit)
    token_ttl: int = 300  # seconds a start-service token may be used
    cookie_ttl: int = 14400  # seconds a browser's permit for an app lasts (then: reopen it)
    jwt_key: str = ""  # generated (app_proxy_jwt_key): HS256 key of the start-service tokens
    permit_key: str = ""  # generated (app_proxy_permit_key): key of the circuits' permits
    api_secret: str = ""  # generated (app_proxy_api_secret): the group's wsproxy_api_token

    @property
    def endpoint(self) -> str:
        return f"http://{self.advertised_host}:{self.api_port}"


class NfsSettings(Section):
    """Shared storage for the folders' volume (roles/nfs.py; off unless ``enabled``): the host
    with ``serve`` exports ``export`` (a manager-group host, or none: an external server), every
    other host mounts ``server``:``export`` at ``storage_proxy.volume_path``."""

    enabled: bool = False
    serve: bool = False  # this host exports the directory
    server: str = ""  # the address the other hosts mount from
    export: str = ""  # the exported directory; "" = storage_proxy.volume_path
    allow: tuple[str, ...] = ()  # client networks (CIDRs) allowed to mount
    #: "sshfs": user-space (FUSE, Debian's sshfs + openssh-server) for kernels without NFS
    transport: Literal["nfs", "sshfs"] = "nfs"
    options: str = "rw,hard,noatime,_netdev"  # NFS mount options
    key: str = ""  # generated (shared_storage_key): seed of the sshfs key pair


class OverlaySettings(Section):
    """The Docker swarm and its attachable overlay network for multi-node cluster sessions
    (roles/overlay.py; off unless ``enabled``)."""

    enabled: bool = False
    #: this host initialises the swarm (one manager-group host); the other manager-group hosts
    #: join it as swarm managers too, agents as workers
    swarm_manager: bool = False
    #: this host's address for swarm traffic (required on every manager-group host)
    advertise_addr: str = ""
    network: str = "bai-overlay"
    subnet: str = ""  # "" = Docker's choice
    #: MTU of the per-session overlays (etcd config/network/overlay/mtu, read by the manager):
    #: lower it where the hosts' own network carries less than 1500 + 50 bytes of VXLAN
    mtu: int = Field(1500, ge=576, le=9000)


class WebserverSettings(Section):
    """The web UI and its signed API proxy (roles/webserver.py), next to each manager."""

    ip: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""  # what users open; "" = http://<ip>:<port> (127.0.0.1 for 0.0.0.0)
    redis_db: int = 5  # browser logins, in the cluster's Redis (shared by every manager's webserver)
    idle_timeout: int = 43200  # seconds without a request that end a login
    max_age: int = 604800  # seconds a login lasts at most
    admin_password: str = ""  # generated (webserver_admin_password): admin@lablup.com's password

    @property
    def endpoint(self) -> str:
        host = "127.0.0.1" if self.ip in ("0.0.0.0", "::", "") else self.ip
        return self.public_url.rstrip("/") or f"http://{host}:{self.port}"


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # where things live (shared by every component)
    venv: str = "/opt/bai/venv"
    # holds only links to our commands (COMMANDS), put on PATH by /etc/profile.d/bai.sh and by
    # the client env file (the whole venv/bin would shadow python, pip, ...)
    bin_dir: str = "/opt/bai/bin"
    config_dir: str = "/etc/backend.ai"
    state_dir: str = "/var/lib/bai"
    log_dir: str = "/var/log/bai"
    log_level: str = "INFO"
    # service readiness deadlines, seconds
    ready_timeout: int = 60

    os: OsSettings = OsSettings()
    postgresql: PostgresqlSettings = PostgresqlSettings()
    redis: RedisSettings = RedisSettings()
    etcd: EtcdSettings = EtcdSettings()
    manager: ManagerSettings = ManagerSettings()
    agent: AgentSettings = AgentSettings()
    docker: DockerSettings = DockerSettings()
    accelerators: AcceleratorSettings = AcceleratorSettings()
    kernel_image: KernelImageSettings = KernelImageSettings()
    registry: RegistrySettings = RegistrySettings()
    storage_proxy: StorageProxySettings = StorageProxySettings()
    app_proxy: AppProxySettings = AppProxySettings()
    webserver: WebserverSettings = WebserverSettings()
    nfs: NfsSettings = NfsSettings()
    overlay: OverlaySettings = OverlaySettings()

    @property
    def manager_toml(self) -> str:
        return f"{self.config_dir}/manager.toml"

    @property
    def agent_toml(self) -> str:
        return f"{self.config_dir}/agent.toml"

    @property
    def client_env(self) -> str:
        return f"{self.config_dir}/client.env"

    @property
    def secrets_path(self) -> str:
        return f"{self.config_dir}/secrets.toml"

    @property
    def storage_proxy_toml(self) -> str:
        return f"{self.config_dir}/storage-proxy.toml"

    @property
    def app_proxy_toml(self) -> str:
        return f"{self.config_dir}/app-proxy.toml"

    @property
    def path_line(self) -> str:
        return path_line(self.bin_dir)

    @property
    def endpoint(self) -> str:
        """The manager's API, as clients use it."""
        return self.manager.endpoint

    def bin(self, name: str) -> str:
        return f"{self.venv}/bin/{name}"


#: Generated secrets: their key in the secrets file -> (section, field) they fill. Generated once
#: and reused on every later run; never taken from an inventory.
SECRETS: dict[str, tuple[str, str]] = {
    "db_password": ("postgresql", "password"),
    "rpc_secret": ("agent", "rpc_secret"),
    "redis_password": ("redis", "password"),
    "storage_secret": ("storage_proxy", "secret"),
    "storage_manager_secret": ("storage_proxy", "manager_secret"),
    "app_proxy_jwt_key": ("app_proxy", "jwt_key"),
    "app_proxy_permit_key": ("app_proxy", "permit_key"),
    "app_proxy_api_secret": ("app_proxy", "api_secret"),
    "webserver_admin_password": ("webserver", "admin_password"),
    "shared_storage_key": ("nfs", "key"),
    "registry_password": ("registry", "password"),
    "registry_ca_seed": ("registry", "ca_seed"),
}
SECRET_KEYS = tuple(SECRETS)

#: The flat host data keys of inventories written before settings were nested -> their path now.
#: Within the release line that nested them (26.12) they are read as their new path with a
#: :class:`FlatKeyWarning` naming it; the next line refuses them (see :func:`nest_flat_keys`).
RENAMED: dict[str, str] = {
    "pg_version": "postgresql.version", "pg_listen": "postgresql.listen",
    "pg_port": "postgresql.port", "db_host": "postgresql.host", "db_name": "postgresql.database",
    "db_user": "postgresql.user", "pg_allow_cidrs": "postgresql.allow_cidrs",
    "redis_listen": "redis.listen", "redis_port": "redis.port", "redis_addr": "redis.addr",
    "redis_maxmemory": "redis.maxmemory",
    "etcd_listen": "etcd.listen", "etcd_client_port": "etcd.client_port",
    "etcd_peer_port": "etcd.peer_port", "etcd_name": "etcd.name", "etcd_data_dir": "etcd.data_dir",
    "etcd_addr": "etcd.addr", "etcd_namespace": "etcd.namespace",
    "manager_id": "manager.id", "manager_addr": "manager.addr",
    "agent_id": "agent.id", "agent_rpc_addr": "agent.rpc_addr", "scaling_group": "agent.scaling_group",
    "container_port_range": "agent.container_port_range",
    "container_bind_host": "agent.container_bind_host", "reserved_mem": "agent.reserved_mem",
    "kernel_image": "kernel_image.image", "kernel_rootfs_cache": "kernel_image.rootfs_cache",
    "jupyter_image": "kernel_image.jupyter_image",
    "jupyter_rootfs_cache": "kernel_image.jupyter_rootfs_cache",
    "registry_enabled": "registry.enabled", "registry_listen": "registry.listen",
    "registry_port": "registry.port", "registry_data_dir": "registry.data_dir",
    "storage_node_id": "storage_proxy.node_id", "storage_proxy_name": "storage_proxy.name",
    "storage_client_addr": "storage_proxy.client_addr",
    "storage_manager_addr": "storage_proxy.manager_addr",
    "storage_client_url": "storage_proxy.client_url",
    "storage_volume_name": "storage_proxy.volume_name",
    "storage_volume_backend": "storage_proxy.volume_backend",
    "storage_volume_path": "storage_proxy.volume_path",
    "storage_session_expire": "storage_proxy.session_expire",
    "storage_max_upload_size": "storage_proxy.max_upload_size",
    "storage_scandir_limit": "storage_proxy.scandir_limit",
    "storage_exposed_volume_info": "storage_proxy.exposed_volume_info",
    "app_proxy_id": "app_proxy.id", "app_proxy_bind_host": "app_proxy.bind_host",
    "app_proxy_advertised_host": "app_proxy.advertised_host",
    "app_proxy_api_port": "app_proxy.api_port", "app_proxy_port_range": "app_proxy.port_range",
    "app_proxy_token_ttl": "app_proxy.token_ttl", "app_proxy_cookie_ttl": "app_proxy.cookie_ttl",
}


class SettingsError(ValueError):
    """Host data that does not make valid settings; ``problems`` are ``"key.path: message"``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def path_line(bin_dir: str) -> str:
    """A shell line that puts ``bin_dir`` first on PATH, once (sourcing it twice is a no-op)."""
    return f'case ":$PATH:" in *":{bin_dir}:"*) ;; *) PATH="{bin_dir}:$PATH"; export PATH ;; esac'


def generate_secrets(existing: dict[str, str]) -> dict[str, str]:
    """Return ``existing`` completed with fresh values for any missing secret."""
    out = dict(existing)
    for key in SECRET_KEYS:
        if not out.get(key):
            # url-safe alphabet: no quoting needed in SQL, TOML or shell
            out[key] = _secrets.token_urlsafe(24)
    return out


def secret_values(settings: Settings) -> dict[str, str]:
    """{secrets file key: value} of ``settings`` (what the secrets file holds)."""
    return {key: getattr(getattr(settings, section), name)
            for key, (section, name) in SECRETS.items()}


def render_secrets(values: dict[str, str]) -> str:
    lines = ["# Generated once by bai-install and reused on every run. Keep private (mode 600)."]
    lines += [f'{key} = "{values[key]}"' for key in sorted(values)]
    return "\n".join(lines) + "\n"


def parse_secrets(text: str) -> dict[str, str]:
    """Parse the flat ``key = "value"`` file written by :func:`render_secrets`."""
    import tomllib

    try:
        data: dict[str, Any] = tomllib.loads(text) if text.strip() else {}
    except tomllib.TOMLDecodeError:
        return {}
    return {k: str(v) for k, v in data.items() if isinstance(v, str)}


def is_connector_key(key: str) -> bool:
    """A pyinfra key (``ssh_user``, ``_sudo`` ...) that host data may carry next to ours."""
    return key.startswith(CONNECTOR_PREFIXES)


def _secret_paths() -> set[tuple[str, str]]:
    return set(SECRETS.values())


class FlatKeyWarning(UserWarning):
    """Host data uses an old flat key (inventories of 26.12.0 and before): read as its nested
    path within the 26.12 line; the next release line refuses it."""


#: The last release line that reads the old flat keys (with a :class:`FlatKeyWarning`).
FLAT_KEYS_READ_UNTIL = "26.12"
_FLAT_WARNED: set[str] = set()


def nest_flat_keys(host_data: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """``host_data`` with each old flat key (:data:`RENAMED`) moved to its nested path, a warning
    per moved key naming that path, and a problem per flat key whose path is also given nested
    with another value. (``kernel_image`` is a flat key as a string, a section as a dict.)"""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in host_data.items()
                           if not (k in RENAMED and not isinstance(v, dict))}
    warnings_: list[str] = []
    problems: list[str] = []
    for key, value in host_data.items():
        if key not in RENAMED or isinstance(value, dict):
            continue
        section, name = RENAMED[key].split(".", 1)
        nested = out.get(section)
        if not isinstance(nested, dict):
            nested = out[section] = {} if nested is None else nested
        if not isinstance(nested, dict):
            continue  # the section itself is malformed: validation names it
        if name in nested and nested[name] != value:
            problems.append(f"{key}: an old flat key for {RENAMED[key]}, which is given too with "
                            "another value; keep the nested one")
            continue
        nested[name] = value
        warnings_.append(f"{key}: an old flat key, read as {RENAMED[key]}; nest it (release lines "
                         f"after {FLAT_KEYS_READ_UNTIL} refuse flat keys)")
    return out, warnings_, problems


def check_host_data(host_data: dict[str, Any]) -> list[str]:
    """Every problem of ``host_data`` as ``"key.path: message"`` (empty when it is valid):
    unknown keys, secrets (they live in the secrets file), values of the wrong type or shape.
    An old flat key is read as its nested path with a :class:`FlatKeyWarning` naming it."""
    import warnings

    host_data, moved, problems = nest_flat_keys(host_data)
    for message in moved:
        if message not in _FLAT_WARNED:  # once per process, not once per caller
            _FLAT_WARNED.add(message)
            warnings.warn(message, FlatKeyWarning, stacklevel=2)
    ours: dict[str, Any] = {}
    sections = {name for name, f in Settings.model_fields.items()
                if isinstance(f.annotation, type) and issubclass(f.annotation, Section)}
    secret_paths = _secret_paths()
    for key, value in host_data.items():
        if not isinstance(key, str):
            problems.append(f"{key!r}: keys must be strings")
        elif key in sections and isinstance(value, dict):
            for name in value:
                if (key, name) in secret_paths:
                    problems.append(f"{key}.{name}: a generated secret; it lives in the hosts' "
                                    "secrets file, not in an inventory")
            ours[key] = {n: v for n, v in value.items() if (key, n) not in secret_paths}
        elif key in SECRETS:
            section, name = SECRETS[key]
            problems.append(f"{key}: a generated secret ({section}.{name}); it lives in the "
                            "hosts' secrets file, not in an inventory")
        elif is_connector_key(key):
            continue
        else:
            ours[key] = value
    try:
        Settings.model_validate(ours)
    except ValidationError as exc:
        for err in exc.errors():
            path = ".".join(str(p) for p in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{path}: {msg}")
    return problems


def build(host_data: dict[str, Any], secrets: dict[str, str]) -> Settings:
    """Settings of one host: its data (pyinfra's own keys left out) plus the secrets. Raises
    :class:`SettingsError` naming each bad key path."""
    problems = check_host_data(host_data)
    if problems:
        raise SettingsError(problems)
    values: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v)
                              for k, v in nest_flat_keys(host_data)[0].items()
                              if not is_connector_key(k)}
    for key, (section, name) in SECRETS.items():
        if secrets.get(key):
            values.setdefault(section, {})
            values[section] = {**values[section], name: secrets[key]}
    return Settings.model_validate(values)
