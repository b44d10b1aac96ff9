"""The stack's outputs -> the inventory ``bai-install install --from-stack`` reads.

The document has the shape of ``inventories/multi-node.py`` in JSON: the same group names
(``halfstack``, ``manager``, ``agents``, ``storage``), each a list of ``[name, {host data}]``
pairs, and the shared ``data``; the keys are ``roles.settings.Settings`` fields plus pyinfra's
``ssh_*`` connection keys. No secret goes in it: the managers read the database and Redis
passwords from the secrets file their first boot wrote (see userdata.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import security
from .config import StackConfig

FORMAT = "bai-inventory/1"


@dataclass(frozen=True)
class Machine:
    name: str
    instance_id: str
    private_ip: str
    groups: tuple[str, ...]


def document(cfg: StackConfig, machines: list[Machine], lb_dns: str, db_address: str = "",
             redis_address: str = "") -> dict[str, Any]:
    """The inventory as a JSON-able dict (plain values; the caller applies it on outputs)."""
    first = next(m for m in machines if "halfstack" in m.groups)
    managers = [m for m in machines if "manager" in m.groups]
    aio = cfg.topology == "all-in-one"
    shared: dict[str, Any] = {
        "ssh_user": "root",
        "etcd_addr": f"{first.private_ip}:{security.ETCD_CLIENT}",
        "storage_volume_path": cfg.storage_volume_path,
        "storage_client_url": f"http://{lb_dns}:{security.STORAGE_CLIENT}",
    }
    if cfg.managed:
        shared["db_host"] = db_address
        shared["redis_addr"] = f"{redis_address}:{security.REDIS}"
    else:
        shared["db_host"] = first.private_ip
        shared["redis_addr"] = f"{first.private_ip}:{security.REDIS}"

    def host_data(m: Machine) -> dict[str, Any]:
        data: dict[str, Any] = {"ssh_hostname": m.private_ip}
        if "halfstack" in m.groups:
            data["etcd_listen"] = m.private_ip
            if not cfg.managed:
                data["pg_listen"] = m.private_ip
                data["redis_listen"] = m.private_ip
                data["pg_allow_cidrs"] = [f"{x.private_ip}/32" for x in managers]
        if "manager" in m.groups:
            data["manager_id"] = m.instance_id
            data["manager_addr"] = f"{m.private_ip}:{security.MANAGER_API}"
            if cfg.app_proxy:
                # every manager host runs an app proxy (roles/app_proxy.py) registered at its
                # advertised address: the load balancer, which forwards to the first one
                first_port = security.APP_PROXY_CIRCUITS[0]
                data["app_proxy_id"] = f"{m.instance_id}-appproxy"
                data["app_proxy_bind_host"] = m.private_ip
                data["app_proxy_advertised_host"] = lb_dns
                data["app_proxy_api_port"] = security.APP_PROXY_API
                data["app_proxy_port_range"] = [first_port,
                                                first_port + max(cfg.app_proxy_circuits, 1) - 1]
        if "storage" in m.groups:
            data["storage_node_id"] = f"{m.instance_id}-storage" if aio else m.instance_id
            data["storage_client_addr"] = f"{m.private_ip}:{security.STORAGE_CLIENT}"
            data["storage_manager_addr"] = f"{m.private_ip}:{security.STORAGE_MANAGER}"
        if "agents" in m.groups:
            data["agent_id"] = m.instance_id
            data["agent_rpc_addr"] = f"{m.private_ip}:{security.AGENT_RPC}"
            data["container_bind_host"] = m.private_ip
        return data

    doc: dict[str, Any] = {"format": FORMAT, "data": shared}
    for group in ("halfstack", "manager", "agents", "storage"):
        doc[group] = [[m.name, host_data(m)] for m in machines if group in m.groups]
    return doc


def ssh_config(machines: list[Machine], bastion_ip: str, bastion_user: str = "admin") -> str:
    """Lines for ~/.ssh/config: pyinfra (and so bai-install) reads it and jumps through the
    bastion to the private addresses."""
    if not bastion_ip:
        return ""
    lines = ["# bai stack: append to ~/.ssh/config so that bai-install reaches the hosts",
             f"Host bai-bastion\n  HostName {bastion_ip}\n  User {bastion_user}"]
    for m in machines:
        lines.append(f"Host {m.private_ip}\n  User root\n  ProxyJump bai-bastion")
    return "\n".join(lines) + "\n"
