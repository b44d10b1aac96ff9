"""The multi-node scenario, shared by tests/multinode/, bench/install.py and molecule's pytest twin:
one management host (half-stack, manager, storage proxy, app proxy) and two agent hosts, written
as a bai-install inventory and installed with ``bai-install install -i`` from this machine over
pyinfra's docker connector.

The inventory (nested settings, the same groups as inventories/multi-node.py)::

    data = {"redis": {"addr": "M:6379"}, "etcd": {"addr": "M:2379"},
            "kernel_image": {"jupyter_image": ""},
            "storage_proxy": {"volume_path": VOLUME},
            # shared storage served by the management host (sshfs: this kernel has no NFS)
            "nfs": {"enabled": True, "transport": "sshfs", "server": M, "allow": [NET]},
            "overlay": {"enabled": True}, "docker": {"live_restore": False}}
    halfstack = [(mgmt, {"redis": {"listen": M}, "etcd": {"listen": M}})]  # PostgreSQL: loopback
    manager = [(mgmt, {"manager": {"id": "i-mgmt", "addr": "M:8081"},
                       "app_proxy": {"bind_host": M, "advertised_host": M},
                       "nfs": {"serve": True},
                       "overlay": {"swarm_manager": True, "advertise_addr": M}})]
    storage = [(mgmt, {"storage_proxy": {"client_addr": "M:6021", "manager_addr": "M:6022"}})]
    agents = [(agN, {"agent": {"id": "i-agN", "rpc_addr": "AN:6001", "container_bind_host": AN},
                     "overlay": {"advertise_addr": AN}})]

(M, AN: the hosts' addresses on the test network, NET its subnet; ``mgmt``/``agN``:
``@docker/<container>``).
"""

from __future__ import annotations

import json
import os
import pprint
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fixtures.testhosts import REPO, TestHost

VENV_BIN = Path("/opt/bai/venv/bin")
VOLUME = "/mnt/vfroot/local"
AGENTS = ("ag1", "ag2")
HOSTS = ("mgmt", *AGENTS)


def subnet(network: str) -> str:
    return subprocess.run(["docker", "network", "inspect", "-f",
                           "{{(index .IPAM.Config 0).Subnet}}", network], check=True,
                          capture_output=True, text=True).stdout.strip()


def inventory_text(hosts: dict[str, TestHost], extra: dict[str, Any] | None = None,
                   net: str | None = None) -> str:
    """The scenario's inventory file; ``extra`` is merged into the shared ``data``; ``net``:
    the hosts' subnet (default: read from their Docker network)."""
    m = hosts["mgmt"]
    ma = m.address
    net = net or subnet(m.network)
    data: dict[str, Any] = {
        "redis": {"addr": f"{ma}:6379"},
        "etcd": {"addr": f"{ma}:2379"},
        # the agents get the python image docker-loaded; JupyterLab's is not needed here
        "kernel_image": {"jupyter_image": ""},
        "storage_proxy": {"volume_path": VOLUME},
        # shared storage served by the management host; sshfs, as this machine's kernel has
        # neither the NFS server nor the client (inventories for real hosts use "nfs")
        "nfs": {"enabled": True, "transport": "sshfs", "server": ma, "allow": [net]},
        "overlay": {"enabled": True},
        # swarm mode refuses a daemon with live-restore (the overlay role checks it)
        "docker": {"live_restore": False},
        **(extra or {}),
    }
    # PostgreSQL stays on loopback (the defaults): only the manager, on the same host, uses it;
    # Redis and etcd listen on the private address, for the agents and the storage proxy
    halfstack = [(m.target, {"redis": {"listen": ma}, "etcd": {"listen": ma}})]
    manager = [(m.target, {"manager": {"id": "i-mgmt", "addr": f"{ma}:8081"},
                           "app_proxy": {"bind_host": ma, "advertised_host": ma},
                           "nfs": {"serve": True},
                           "overlay": {"swarm_manager": True, "advertise_addr": ma}})]
    storage = [(m.target, {"storage_proxy": {"client_addr": f"{ma}:6021",
                                             "manager_addr": f"{ma}:6022"}})]
    agents = [(hosts[a].target, {"agent": {"id": f"i-{a}", "rpc_addr": f"{hosts[a].address}:6001",
                                           "container_bind_host": hosts[a].address},
                                 "overlay": {"advertise_addr": hosts[a].address}})
              for a in AGENTS]
    parts = [f"# written by tests/multinode/scenario.py\ndata = {pprint.pformat(data)}\n"]
    for group, value in (("halfstack", halfstack), ("manager", manager), ("storage", storage),
                         ("agents", agents)):
        parts.append(f"{group} = {pprint.pformat(value)}\n")
    return "\n".join(parts)


@dataclass
class InstallRun:
    seconds: float
    doc: dict[str, Any]
    stderr: str

    @property
    def ok(self) -> bool:
        return bool(self.doc.get("ok"))

    @property
    def problem(self) -> str:
        """Why it failed: the error, the failed operations, the failed preflight checks."""
        failed_checks = [c.get("message") for c in self.doc.get("preflight") or []
                         if isinstance(c, dict) and c.get("status") == "fail"]
        return "\n".join(str(x) for x in (self.doc.get("error"), self.doc.get("failed_ops"),
                                           *failed_checks, self.stderr[-4000:]) if x)


def install(inventory: Path, timeout: float = 900) -> InstallRun:
    """``bai-install install -i INVENTORY --non-interactive --json`` from this checkout."""
    t0 = time.monotonic()
    r = subprocess.run([str(VENV_BIN / "bai-install"), "install", "-i", str(inventory),
                        "--non-interactive", "--json"], cwd=REPO, capture_output=True, text=True,
                       timeout=timeout)
    seconds = time.monotonic() - t0
    try:
        doc = json.loads(r.stdout)
    except json.JSONDecodeError:
        doc = {"ok": False, "error": f"exit {r.returncode}, no JSON: {r.stdout[-2000:]}"}
    return InstallRun(seconds, doc, r.stderr)


def client_env(mgmt: TestHost) -> dict[str, str]:
    """This machine's environment plus the admin keypair and endpoint from the manager host's
    client env file (the installer wrote it there)."""
    text = mgmt.run("cat /etc/backend.ai/client.env", check=True).stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKEND_", "SORNA_"))}
    for line in text.splitlines():
        line = line.strip().removeprefix("export ")
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value.strip().strip("'\"")
    return env


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Our ``backend.ai`` CLI against the scenario's manager; raises on failure."""
    r = subprocess.run([str(VENV_BIN / "backend.ai"), *args], env=env, capture_output=True,
                       text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"backend.ai {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def wait_until(what: str, fn: Any, timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not reached within {timeout:.0f}s (last: {last})")
