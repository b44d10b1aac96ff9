"""Multi-node example: the same group names as local.py, different hosts (SSH targets).

Host data is nested like ``roles.settings.Settings`` (one section per component: ``postgresql``,
``redis``, ``etcd``, ``manager``, ``agent``, ``storage_proxy``, ``app_proxy`` ...) next to
pyinfra's connection keys (``ssh_hostname``, ``ssh_user`` ...). ``data`` applies to every host; a
host's own data is merged over it, section by section.

The half-stack services listen on the database host's private address, and the manager and
agents are told where to find them. Every host needs a checkout of bai installed with
``installer/bootstrap.sh`` (it creates /opt/bai/venv) before ``bai-install install -i`` runs.
"""

DB = "10.0.0.5"

# applied to every host; a host's own dict wins
data = {
    "ssh_user": "root",
    "postgresql": {"host": DB},
    "redis": {"addr": f"{DB}:6379"},
    "etcd": {"addr": f"{DB}:2379"},
    # the proxy's volume: the same directory (e.g. one NFS export) on the storage host and on
    # every agent, which bind-mounts folders from it into sessions
    "storage_proxy": {"volume_path": "/mnt/vfroot/local"},
}

halfstack = [("db1", {"ssh_hostname": DB,
                      "postgresql": {"listen": DB, "allow_cidrs": ["10.0.0.10/32"]},
                      "redis": {"listen": DB},
                      "etcd": {"listen": DB}})]
# The app proxy runs next to the manager; browsers are sent to app_proxy.advertised_host and it
# reaches the sessions' services on the agents' agent.container_bind_host.
manager = [("mgr1", {"ssh_hostname": "10.0.0.10",
                     "manager": {"id": "i-mgr1", "addr": "10.0.0.10:8081"},
                     "app_proxy": {"bind_host": "10.0.0.10", "advertised_host": "10.0.0.10"}})]
# The storage proxy: clients upload and download at storage_proxy.client_addr (or client_url
# when they reach it by another name), the manager calls storage_proxy.manager_addr.
storage = [("st1", {"ssh_hostname": "10.0.0.30",
                    "storage_proxy": {"node_id": "i-st1", "client_addr": "10.0.0.30:6021",
                                      "manager_addr": "10.0.0.30:6022"}})]
agents = [
    ("gpu1", {"ssh_hostname": "10.0.0.21",
              "agent": {"id": "i-gpu1", "rpc_addr": "10.0.0.21:6001",
                        "container_bind_host": "10.0.0.21"}}),
    ("gpu2", {"ssh_hostname": "10.0.0.22",
              "agent": {"id": "i-gpu2", "rpc_addr": "10.0.0.22:6001",
                        "container_bind_host": "10.0.0.22"}}),
]
