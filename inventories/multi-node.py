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
    # The optional roles below are written out but off ("enabled": False): loading this file
    # validates every key. Turn one on by setting "enabled": True.
    #
    # Shared storage (roles/nfs.py): the host with "serve" (mgr1 below) exports the volume
    # directory ("export", "" = storage_proxy.volume_path) to the "allow" networks; every other
    # host mounts server:export at storage_proxy.volume_path. transport "sshfs" instead of
    # "nfs" for kernels without NFS (a key pair derived from a generated secret).
    "nfs": {"enabled": False, "server": "10.0.0.10", "export": "", "allow": ["10.0.0.0/24"],
            "transport": "nfs", "options": "rw,hard,noatime,_netdev"},
    # Multi-node cluster sessions (roles/overlay.py): a Docker swarm initialised by the host
    # with "swarm_manager" (mgr1), joined by every other manager-group host as a swarm manager
    # and by every agent as a worker, and an attachable overlay network. Each host's
    # "advertise_addr" is its own address (below). Swarm mode needs docker.live_restore off.
    # "mtu": of the per-session overlays (576-9000; lower it where the hosts' network carries
    # less than 1500 bytes plus 50 of VXLAN).
    "overlay": {"enabled": False, "network": "bai-overlay", "subnet": "", "mtu": 1500},
    # Docker's own address pools hold about 30 local networks per engine, and every
    # multi-kernel session on a host takes one: "address_pools" (e.g. [{"base":
    # "10.201.0.0/16", "size": 24}] = 256 networks) goes into daemon.json's
    # default-address-pools. Changing it restarts dockerd: set it before sessions run (on swarm
    # members, live-restore off, running containers stop). [] = Docker's own pools.
    "docker": {"address_pools": []},
    # A private container registry (roles/registry.py) on mgr1: off loopback it serves TLS with
    # a CA of this installation (every agent trusts it; no insecure-registries) and asks for
    # credentials (user "username", the generated registry_password of the secrets file). The
    # kernel images are built on the "builder" agent only (an agent.id; "" = every agent) and
    # pushed as <listen or advertised_host>:<port>/<project>/...; the other agents pull them on
    # first use. The agents need these settings too, hence the shared data.
    "registry": {"enabled": False, "listen": "10.0.0.10", "port": 5000, "advertised_host": "",
                 "project": "stable", "username": "bai", "builder": "i-gpu1"},
}

halfstack = [("db1", {"ssh_hostname": DB,
                      "postgresql": {"listen": DB, "allow_cidrs": ["10.0.0.10/32"]},
                      "redis": {"listen": DB},
                      "etcd": {"listen": DB}})]
# The app proxy runs next to the manager; browsers are sent to app_proxy.advertised_host and it
# reaches the sessions' services on the agents' agent.container_bind_host.
manager = [("mgr1", {"ssh_hostname": "10.0.0.10",
                     "manager": {"id": "i-mgr1", "addr": "10.0.0.10:8081"},
                     "app_proxy": {"bind_host": "10.0.0.10", "advertised_host": "10.0.0.10"},
                     # (used once nfs / overlay are enabled in data above)
                     "nfs": {"serve": True},
                     "overlay": {"swarm_manager": True, "advertise_addr": "10.0.0.10"}})]
# The storage proxy: clients upload and download at storage_proxy.client_addr (or client_url
# when they reach it by another name), the manager calls storage_proxy.manager_addr.
storage = [("st1", {"ssh_hostname": "10.0.0.30",
                    "storage_proxy": {"node_id": "i-st1", "client_addr": "10.0.0.30:6021",
                                      "manager_addr": "10.0.0.30:6022"}})]
agents = [
    ("gpu1", {"ssh_hostname": "10.0.0.21",
              "agent": {"id": "i-gpu1", "rpc_addr": "10.0.0.21:6001",
                        "container_bind_host": "10.0.0.21"},
              "overlay": {"advertise_addr": "10.0.0.21"}}),
    ("gpu2", {"ssh_hostname": "10.0.0.22",
              "agent": {"id": "i-gpu2", "rpc_addr": "10.0.0.22:6001",
                        "container_bind_host": "10.0.0.22"},
              "overlay": {"advertise_addr": "10.0.0.22"}}),
]
