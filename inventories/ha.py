"""HA example: the same group names as local.py and multi-node.py, with a three-host half-stack.

Each half-stack host (db1..db3) runs an etcd member and a Redis server with a Sentinel;
PostgreSQL runs as the primary on db1 and a streaming replica on db2 (db3 has none:
``postgresql.enabled = false``; list it in ``postgresql.replicas`` instead for a second
replica). Everything that describes the whole half-stack is in ``data`` (the same on every
host, checked when the inventory loads: roles/_ha.py); each host sets only its own listen
addresses.

What every component is told:

* ``[etcd] addr`` of every daemon: all three members ("10.0.0.5:2379,10.0.0.6:2379,...");
* etcd ``config/redis/sentinel`` (the three sentinels) and ``config/redis/service_name``, and
  the webserver's ``[session.redis] sentinel`` / ``service-name``: clients ask the sentinels
  for the current primary;
* the manager's ``[db] addr``: "10.0.0.5:5432,10.0.0.6:5432" (it uses whichever is
  read-write).

Failover: etcd and Redis fail over by themselves (one of three hosts may be down). PostgreSQL
promotion is the operator's: ``pg_ctlcluster 15 main promote`` on a replica, then swap
``postgresql.primary`` with that replica in ``postgresql.replicas`` and re-run ``bai-install
install -i inventories/ha.py`` (the manager reconnects to the new read-write server).

Two managers (mgr1, mgr2) each run a manager, an app proxy and a webserver. A load balancer in
front of them is out of scope: point one DNS name (or a load balancer) at both managers; both
app proxies advertise the same name ``apps.bai.example`` (a record you make), so that their
registration for the resource group ``default`` is the same from either host.

Every host needs a checkout of bai installed with ``installer/bootstrap.sh`` (it creates
/opt/bai/venv) before ``bai-install install -i inventories/ha.py`` runs.
"""

HALFSTACK = {"db1": "10.0.0.5", "db2": "10.0.0.6", "db3": "10.0.0.7"}
MANAGERS = {"mgr1": "10.0.0.10", "mgr2": "10.0.0.11"}
_db = list(HALFSTACK.values())

# applied to every host; a host's own dict wins
data = {
    "ssh_user": "root",
    "etcd": {"members": _db, "addr": ",".join(f"{a}:2379" for a in _db)},
    "redis": {"sentinel": [f"{a}:26379" for a in _db], "service_name": "mymaster",
              "primary": f"{_db[0]}:6379",
              # kept in etcd as config/redis/addr for clients without Sentinel support
              "addr": f"{_db[0]}:6379"},
    "postgresql": {"primary": _db[0], "replicas": [_db[1]],
                   # the managers log in over the network, to the primary and the replicas (and
                   # the role's own check logs in from the half-stack host itself)
                   "allow_cidrs": [f"{a}/32" for a in [*MANAGERS.values(), *_db]]},
    "app_proxy": {"advertised_host": "apps.bai.example"},
    "storage_proxy": {"volume_path": "/mnt/vfroot/local"},
    # Multi-node sessions across hosts (roles/overlay.py, off here): mgr1 ("swarm_manager")
    # initialises the swarm, mgr2 joins it as a swarm MANAGER (every manager-group host does:
    # only a swarm manager's engine can create a session's overlay, and either manager may
    # schedule it), the agents join as workers; every member needs docker.live_restore off and
    # its "advertise_addr" (below). Raft quorum: with 3 manager hosts one may be down; with 2,
    # losing either stops new session overlays until it is back (existing ones keep working).
    "overlay": {"enabled": False, "mtu": 1500},
}

halfstack = [(name, {"ssh_hostname": addr, "etcd": {"listen": addr}, "redis": {"listen": addr},
                     "postgresql": {"listen": addr} if name != "db3" else {"enabled": False}})
             for name, addr in HALFSTACK.items()]
manager = [(name, {"ssh_hostname": addr,
                   "manager": {"id": f"i-{name}", "addr": f"{addr}:8081"},
                   "app_proxy": {"bind_host": addr},
                   # (used once overlay is enabled in data above)
                   "overlay": {"swarm_manager": name == "mgr1", "advertise_addr": addr}})
           for name, addr in MANAGERS.items()]
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
