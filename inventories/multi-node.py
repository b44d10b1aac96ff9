"""Multi-node example: the same group names as local.py, different hosts (SSH targets).

The half-stack services listen on the database host's private address, and the manager and
agents are told where to find them. Every host needs a checkout of bai installed with
``installer/bootstrap.sh`` (it creates /opt/bai/venv) before ``bai-install install -i`` runs.
"""

DB = "10.0.0.5"

# applied to every host; a host's own dict wins
data = {
    "db_host": DB,
    "redis_addr": f"{DB}:6379",
    "etcd_addr": f"{DB}:2379",
    "ssh_user": "root",
    # the proxy's volume: the same directory (e.g. one NFS export) on the storage host and on
    # every agent, which bind-mounts folders from it into sessions
    "storage_volume_path": "/mnt/vfroot/local",
}

halfstack = [("db1", {"ssh_hostname": DB, "pg_listen": DB, "redis_listen": DB, "etcd_listen": DB,
                      "pg_allow_cidrs": ["10.0.0.10/32"]})]
# The app proxy runs next to the manager; browsers are sent to app_proxy_advertised_host and it
# reaches the sessions' services on the agents' container_bind_host.
manager = [("mgr1", {"ssh_hostname": "10.0.0.10", "manager_id": "i-mgr1",
                     "manager_addr": "10.0.0.10:8081", "app_proxy_bind_host": "10.0.0.10",
                     "app_proxy_advertised_host": "10.0.0.10"})]
# The storage proxy: clients upload and download at storage_client_addr (or storage_client_url
# when they reach it by another name), the manager calls storage_manager_addr.
storage = [("st1", {"ssh_hostname": "10.0.0.30", "storage_node_id": "i-st1",
                    "storage_client_addr": "10.0.0.30:6021", "storage_manager_addr": "10.0.0.30:6022"})]
agents = [
    ("gpu1", {"ssh_hostname": "10.0.0.21", "agent_id": "i-gpu1",
              "agent_rpc_addr": "10.0.0.21:6001", "container_bind_host": "10.0.0.21"}),
    ("gpu2", {"ssh_hostname": "10.0.0.22", "agent_id": "i-gpu2",
              "agent_rpc_addr": "10.0.0.22:6001", "container_bind_host": "10.0.0.22"}),
]
