"""Typed settings every role takes, built from inventory host data plus the generated secrets.

Defaults are the all-in-one values of ``components/CONTRACTS.md``. An inventory overrides any
field per host (``("db1", {"pg_listen": "10.0.0.5"})``); roles never read host data themselves.
"""

from __future__ import annotations

import secrets as _secrets
from typing import Any

from pydantic import BaseModel, ConfigDict

SECRETS_PATH = "/etc/backend.ai/secrets.toml"
#: Keys kept in the secrets file; generated once, reused on every later run.
SECRET_KEYS = ("db_password", "rpc_secret", "redis_password", "storage_secret",
               "storage_manager_secret", "app_proxy_jwt_key", "app_proxy_permit_key", "app_proxy_api_secret")
#: The venv's commands a user types; linked into ``Settings.bin_dir``.
COMMANDS = ("backend.ai", "bai-install", "bai-manager", "bai-agent")


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # where things live
    venv: str = "/opt/bai/venv"
    # holds only links to our commands (COMMANDS), put on PATH by /etc/profile.d/bai.sh and by
    # the client env file (the whole venv/bin would shadow python, pip, ...)
    bin_dir: str = "/opt/bai/bin"
    config_dir: str = "/etc/backend.ai"
    state_dir: str = "/var/lib/bai"
    log_dir: str = "/var/log/bai"

    # PostgreSQL (Debian's cluster <pg_version>/main)
    pg_version: int = 15
    pg_listen: str = "127.0.0.1"
    pg_port: int = 5432
    db_host: str = "127.0.0.1"  # how the manager reaches the database
    db_name: str = "backend"
    db_user: str = "bai"
    db_password: str = ""
    pg_allow_cidrs: tuple[str, ...] = ()  # remote managers allowed to log in as db_user

    # Redis
    redis_listen: str = "127.0.0.1"
    redis_port: int = 6379
    redis_addr: str = "127.0.0.1:6379"  # what goes into etcd config/redis/addr
    redis_maxmemory: str = "512mb"
    redis_password: str = ""  # generated (secrets file); requirepass, etcd config/redis/password

    # etcd
    etcd_listen: str = "127.0.0.1"
    etcd_client_port: int = 2379
    etcd_peer_port: int = 2380
    etcd_name: str = "default"
    etcd_data_dir: str = "/var/lib/etcd/default"
    etcd_addr: str = "127.0.0.1:2379"  # how manager/agents reach etcd
    etcd_namespace: str = "local"

    # manager / agent
    manager_id: str = "i-local"
    manager_addr: str = "127.0.0.1:8081"
    agent_id: str = "i-local"
    agent_rpc_addr: str = "127.0.0.1:6001"
    scaling_group: str = "default"
    container_port_range: tuple[int, int] = (30000, 31000)
    container_bind_host: str = "127.0.0.1"
    reserved_mem: str = "512m"
    log_level: str = "INFO"
    rpc_secret: str = ""

    # kernel image
    kernel_image: str = "bai.local/stable/python:3.11-debian12"
    kernel_rootfs_cache: str = "/var/cache/bai/rootfs-python-bookworm"
    #: The JupyterLab image (layered on the python rootfs); "" builds none.
    jupyter_image: str = "bai.local/stable/python-jupyter:3.11-debian12"
    jupyter_rootfs_cache: str = "/var/cache/bai/rootfs-python-jupyter-bookworm"

    # optional local container registry (roles/registry.py; off unless registry_enabled)
    registry_enabled: bool = False
    registry_listen: str = "127.0.0.1"
    registry_port: int = 5000
    registry_data_dir: str = "/var/lib/docker-registry"

    # storage proxy (roles/storage_proxy.py): one proxy named storage_proxy_name serving one
    # volume; folders are addressed as "<proxy>:<volume>" (local:volume1)
    storage_node_id: str = "i-storage-local"
    storage_proxy_name: str = "local"
    storage_client_addr: str = "127.0.0.1:6021"  # client-facing API (tus upload, download)
    storage_manager_addr: str = "127.0.0.1:6022"  # manager-facing API
    storage_client_url: str = ""  # what clients are sent to; "" = http://<storage_client_addr>
    storage_volume_name: str = "volume1"
    storage_volume_backend: str = "vfs"
    storage_volume_path: str = "/var/lib/bai/vfroot/local"  # the same path on every agent
    storage_session_expire: int = 86400  # seconds a client upload/download token lives
    storage_max_upload_size: int = 107374182400
    storage_scandir_limit: int = 1000
    storage_exposed_volume_info: str = "percentage"
    storage_secret: str = ""  # generated: HS256 key of the client-facing tokens
    storage_manager_secret: str = ""  # generated: X-BackendAI-Storage-Auth-Token

    # app proxy (roles/app_proxy.py): opens sessions' web apps; registered as the wsproxy_addr of
    # the resource group scaling_group
    app_proxy_id: str = "i-appproxy-local"
    app_proxy_bind_host: str = "127.0.0.1"
    app_proxy_advertised_host: str = "127.0.0.1"  # what browsers and clients are sent to
    app_proxy_api_port: int = 5050
    app_proxy_port_range: tuple[int, int] = (10200, 10300)  # one port per open app (circuit)
    app_proxy_token_ttl: int = 300  # seconds a start-service token may be used
    app_proxy_cookie_ttl: int = 14400  # seconds a browser's permit for an app lasts (then: reopen it)
    app_proxy_jwt_key: str = ""  # generated: HS256 key of the start-service tokens
    app_proxy_permit_key: str = ""  # generated: HS256 key of the circuits' tickets and cookies
    app_proxy_api_secret: str = ""  # generated: the resource group's wsproxy_api_token

    # service readiness deadlines, seconds
    ready_timeout: int = 60

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
    def app_proxy_endpoint(self) -> str:
        return f"http://{self.app_proxy_advertised_host}:{self.app_proxy_api_port}"

    @property
    def storage_client_endpoint(self) -> str:
        return self.storage_client_url or f"http://{self.storage_client_addr}"

    @property
    def storage_manager_endpoint(self) -> str:
        return f"http://{self.storage_manager_addr}"

    @property
    def path_line(self) -> str:
        return path_line(self.bin_dir)

    @property
    def endpoint(self) -> str:
        return f"http://{self.manager_addr}"

    @property
    def etcd_endpoint(self) -> str:
        return f"http://{self.etcd_addr}"

    def bin(self, name: str) -> str:
        return f"{self.venv}/bin/{name}"


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


def build(host_data: dict[str, Any], secrets: dict[str, str]) -> Settings:
    fields = set(Settings.model_fields)
    values = {k: v for k, v in host_data.items() if k in fields}
    values.update({k: v for k, v in secrets.items() if k in SECRET_KEYS})
    return Settings(**values)
