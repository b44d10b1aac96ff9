"""The HA half-stack on three test hosts, installed with ``bai-install install -i`` (see
scenario.py for the inventory), then broken one piece at a time while the manager is used:

* etcd reports three healthy members; with the manager host's own member stopped, the manager
  still reads etcd (``POST /config/get``) and the database;
* a user created through the manager is on the PostgreSQL replica;
* the Redis primary stopped: Sentinel promotes a replica, and authenticated calls (each one goes
  through the Redis rate limiter) succeed again within a deadline; the old primary, started
  again, becomes a replica;
* a second install changes nothing and leaves the new Redis primary where Sentinel put it.

The tests run in this order and share the cluster (each leaves it whole again).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.testhosts import TestHost
from tests.multinode.scenario import InstallRun, cli, client_env, install, wait_until

from . import scenario

# host start and two installs of three half-stack hosts (one also the manager) on a shared
# 2-core machine, plus the failovers' deadlines
pytestmark = pytest.mark.timeout(1200)


@dataclass
class Cluster:
    hosts: dict[str, TestHost]
    inventory: Path
    first: InstallRun
    env: dict[str, str]

    def __getitem__(self, name: str) -> TestHost:
        return self.hosts[name]


@pytest.fixture(scope="module")
def cluster(test_hosts: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # the half-stack's packages come pre-installed (apt is not this test's subject)
    hosts: dict[str, TestHost] = test_hosts(list(scenario.HOSTS), halfstack_packages=True)
    inventory = tmp_path_factory.mktemp("ha") / "inventory.py"
    inventory.write_text(scenario.inventory_text(hosts))
    first = install(inventory)
    (inventory.parent / "first-install.log").write_text(first.stderr)
    (inventory.parent / "first-install.json").write_text(json.dumps(first.doc, indent=1))
    print(f"HA install: {first.seconds:.1f}s, {len(first.doc.get('changed_ops', []))} changed")
    if not first.ok:
        pytest.fail(f"first install failed: {first.problem}")
    yield Cluster(hosts, inventory, first, client_env(hosts["ha1"]))


def _config_get(env: dict[str, str], key: str) -> Any:
    async def call(api: Any) -> Any:
        return await api.request_json("POST", "/config/get", json_body={"key": key})

    return scenario.api(env, call)


def _gql_user(env: dict[str, str], email: str) -> Any:
    async def call(api: Any) -> Any:
        return await api.gql("query($e: String) { user(email: $e) { email } }", {"e": email})

    return scenario.api(env, call)


def _answers(env: dict[str, str]) -> bool:
    """An authenticated call that reads etcd (and the keypair from the database, and counts in
    Redis) succeeds, and a GraphQL query reads the database."""
    try:
        got = _config_get(env, "config/redis/service_name")
        user = _gql_user(env, "admin@lablup.com")
    except Exception as exc:  # noqa: BLE001 - the reason goes into the deadline's message
        raise AssertionError(f"{type(exc).__name__}: {exc}") from None
    return got.get("result") == scenario.SERVICE and user["user"]["email"] == "admin@lablup.com"


def test_etcd_has_three_healthy_members(cluster: Cluster) -> None:
    ha2 = cluster["ha2"]
    members = scenario.etcdctl(ha2, "member", "list")
    assert members.count(", started, ") == 3, members
    for n in scenario.HOSTS:
        assert f"http://{cluster[n].address}:2379" in members
    health = scenario.etcdctl(ha2, "endpoint", "health", "--cluster")
    assert health.count("is healthy") == 3, health


def test_the_manager_works_with_its_etcd_member_down(cluster: Cluster) -> None:
    ha1, ha2 = cluster["ha1"], cluster["ha2"]
    assert _answers(cluster.env)
    ha1.run("systemctl stop etcd.service", check=True)
    try:
        t0 = time.monotonic()
        wait_until("the manager answers with ha1's etcd member down",
                   lambda: _answers(cluster.env), 45, 0.5)
        print(f"manager answered {time.monotonic() - t0:.1f}s after ha1's etcd member stopped")
        health = scenario.etcdctl(ha2, "endpoint", "health", "--cluster")
        assert health.count("is healthy") == 2, health
    finally:
        ha1.run("systemctl start etcd.service", check=True, timeout=120)
    wait_until("three healthy members again",
               lambda: scenario.etcdctl(ha2, "endpoint", "health", "--cluster").count("is healthy") == 3,
               60)


def test_a_user_created_through_the_manager_is_on_the_replica(cluster: Cluster) -> None:
    ha2 = cluster["ha2"]
    assert scenario.psql(ha2, "SELECT pg_is_in_recovery()", db="postgres") == "t"
    status = scenario.psql(cluster["ha1"], "SELECT state FROM pg_stat_replication", db="postgres")
    assert status == "streaming", status
    email = f"ha-{uuid.uuid4().hex[:8]}@example.com"
    cli(cluster.env, "admin", "user", "add", "default", email, f"Pw-{uuid.uuid4().hex}")
    wait_until("the new user on the replica",
               lambda: scenario.psql(ha2, f"SELECT count(*) FROM users WHERE email = '{email}'") == "1",
               30, 0.2)


def test_redis_failover_keeps_the_manager_working(cluster: Cluster) -> None:
    ha1, ha2, ha3 = (cluster[n] for n in scenario.HOSTS)
    first = f"{ha1.address}:6379"
    assert scenario.sentinel_primary(ha2) == first
    wait_until("two replicas attached",
               lambda: scenario.redis_cli(ha1, 6379, "info", "replication").count("state=online") == 2, 30)
    ha1.run("systemctl stop redis-server.service", check=True)
    t0 = time.monotonic()
    new = wait_until("Sentinel promotes a replica",
                     lambda: (p := scenario.sentinel_primary(ha3)) not in ("", first) and p, 60, 0.2)
    promoted = time.monotonic() - t0
    assert new in (f"{ha2.address}:6379", f"{ha3.address}:6379")
    wait_until("the manager answers after the failover", lambda: _answers(cluster.env), 60, 0.5)
    print(f"Redis failover: promoted {new} after {promoted:.1f}s; manager answering after "
          f"{time.monotonic() - t0:.1f}s")
    ha1.run("systemctl start redis-server.service", check=True, timeout=60)
    wait_until("the old primary comes back as a replica", lambda: scenario.redis_role(ha1) == "slave", 60)


def test_rerun_changes_nothing_and_keeps_the_new_primary(cluster: Cluster) -> None:
    before = scenario.sentinel_primary(cluster["ha2"])
    second = install(cluster.inventory)
    changed = second.doc.get("changed_ops", [])
    print(f"HA re-run: {second.seconds:.1f}s, {len(changed)} changed")
    assert second.ok, second.problem
    assert changed == [], "\n".join(changed)
    assert second.doc["nothing_changed"] is True
    assert scenario.sentinel_primary(cluster["ha2"]) == before
    assert scenario.redis_role(cluster["ha1"]) == "slave"
    assert _answers(cluster.env)
