"""Plans: which roles and operations the installer would run, without running them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from installer import engine
from installer import inventory as inventory_mod

REPO = Path(__file__).resolve().parents[2]
ROLES = ["os_prep", "base", "postgresql", "redis", "etcd", "bai-manager", "app-proxy", "webserver", "conntrack",
         "docker", "accelerators", "kernel_image", "bai-agent", "storage-proxy"]


def _names(phase: engine.Phase) -> dict[str, list[str]]:
    return {host: [engine.role_name(r) for r in roles] for host, roles in phase.roles.items()}


def test_local_inventory_phases() -> None:
    inv = inventory_mod.load(REPO / "inventories" / "local.py")
    phases = engine.phases_for(inv)
    assert [(p.name, _names(p)) for p in phases] == [
        ("halfstack", {"@local": ["os_prep", "base", "postgresql", "redis", "etcd"]}),
        ("manager", {"@local": ["bai-manager", "app-proxy", "webserver"]}),
        ("agents", {"@local": ["conntrack", "docker", "accelerators", "kernel_image", "bai-agent"]}),
        ("storage", {"@local": ["storage-proxy"]}),
    ]


def test_multi_node_inventory_same_groups() -> None:
    inv = inventory_mod.load(REPO / "inventories" / "multi-node.py")
    assert set(inv.groups) == set(inventory_mod.GROUPS)
    phases = {p.name: _names(p) for p in engine.phases_for(inv)}
    assert phases["halfstack"] == {"db1": ["os_prep", "base", "postgresql", "redis", "etcd"]}
    assert phases["manager"] == {"mgr1": ["os_prep", "base", "bai-manager", "app-proxy", "webserver"]}
    assert phases["storage"] == {"st1": ["os_prep", "base", "storage-proxy"]}
    assert phases["agents"]["gpu1"] == ["os_prep", "base", "conntrack", "docker", "accelerators", "kernel_image",
                                        "bai-agent"]
    # shared data reaches every host, a host's own data wins
    assert inv.data["gpu2"]["etcd"]["addr"] == "10.0.0.5:2379"
    assert inv.data["db1"]["postgresql"] == {"host": "10.0.0.5", "listen": "10.0.0.5",
                                             "allow_cidrs": ["10.0.0.10/32"]}


@pytest.fixture(scope="module")
def local_plan() -> dict:
    """`bai-install install --dry-run --json` against this machine (@local): facts only."""
    r = subprocess.run(
        [sys.executable, "-m", "installer.cli", "install", "--dry-run", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=180,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def test_plan_names_each_roles_operations(local_plan: dict) -> None:
    assert local_plan["mode"] == "plan" and local_plan["ok"]
    plan = local_plan["plan"]
    roles_seen = [op["role"] for op in plan]
    assert sorted(set(roles_seen), key=roles_seen.index) == ROLES
    for op in plan:
        assert op["host"] == "@local"
        assert op["label"] == f"{op['role']} | {op['name']}"
    labels = {op["label"] for op in plan}
    for expected in [
        "os_prep | Write sysctl tuning",
        "os_prep | Service account bai (1100:1100)",
        "docker | Write /etc/docker/daemon.json (log limits, live-restore)",
        "postgresql | Install PostgreSQL",
        "postgresql | Role bai (LOGIN CREATEDB, password from the secrets file)",
        "postgresql | Database backend owned by bai",
        "redis | Bind loopback only",
        "redis | Write the password file (requirepass)",
        "redis | Include the password file",
        "base | Link the bai commands into /opt/bai/bin",
        "base | Put /opt/bai/bin on PATH for login shells",
        "etcd | Write /etc/default/etcd",
        "kernel_image | Build kernel image bai.local/stable/python:3.11-debian12",
        "bai-manager | System user bai-manager",
        "bai-manager | Write /etc/backend.ai/manager.toml",
        "bai-manager | No Docker socket access for bai-manager (overlay disabled)",
        "bai-manager | Migrate the database (bai-manager db upgrade)",
        "bai-manager | Populate fixtures and write the client env file",
        "bai-manager | etcd key config/redis/addr",
        "bai-manager | etcd key config/redis/password",
        "bai-agent | Record the Redis settings the agent uses",
        "bai-manager | etcd key config/agent/rpc-secret",
        "bai-manager | etcd key config/docker/image/auto_pull",
        "bai-manager | Wait for manager",
        "bai-agent | Write agent.toml",
        "bai-agent | Wait for agent",
    ]:
        assert expected in labels, expected
    # restarts are conditional on a config change of the same run
    restarts = [op for op in plan if op["name"].startswith("Restart ")]
    assert restarts and all(op["conditional"] for op in restarts)


def test_plan_has_a_readiness_wait_per_service(local_plan: dict) -> None:
    waits = {op["name"] for op in local_plan["plan"] if op["name"].startswith("Wait for ")}
    assert {"Wait for postgresql", "Wait for redis", "Wait for etcd", "Wait for manager",
            "Wait for agent", "Wait for storage-proxy", "Wait for app-proxy"} <= waits
