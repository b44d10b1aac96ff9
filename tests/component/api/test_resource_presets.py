"""GET /resource/presets and POST /resource/check-presets on a whole node (real agent, real
Docker): the captured shapes (wire/02, wire/03) with real numbers: the agent's free capacity, a
keypair policy's limits, what a running session holds, and which presets fit."""

from __future__ import annotations

import json
import secrets
import uuid
from decimal import Decimal
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from bai.manager.store import fixtures
from bai.manager.store import tables as t

from .conftest import HmacAuth, LiveNode

TIMEOUT = 30
PROBS = "https://api.backend.ai/probs/"
GIB = 2**30


def _gql(node: LiveNode, query: str, variables: dict[str, Any]) -> Any:
    reply = requests.post(f"{node.url}/admin/gql", json={"query": query, "variables": variables}, auth=node.auth,
                          timeout=TIMEOUT)
    assert reply.status_code == 200 and "errors" not in reply.json(), reply.text
    return reply.json()["data"]


@pytest.fixture(scope="module")
def tight(live_node: LiveNode) -> HmacAuth:
    """A user whose keypair policy allows 1 CPU and 1 GiB in all (LIMITED: nothing else), and the
    presets the tests check: one that fits that policy, one that does not, one no agent can hold."""
    _gql(live_node, "mutation($n: String!, $p: CreateKeyPairResourcePolicyInput!) { "
                    "create_keypair_resource_policy(name: $n, props: $p) { ok } }",
         {"n": "one-cpu", "p": {"default_for_unspecified": "LIMITED", "max_concurrent_sessions": 2,
                                "max_containers_per_session": 1, "idle_timeout": 0,
                                "total_resource_slots": json.dumps({"cpu": "1", "mem": "1g"})}})
    for name, slots, shmem in (("fits", {"cpu": "1", "mem": "512m"}, "64m"),
                               ("two-cpus", {"cpu": "2", "mem": "512m"}, None),
                               ("huge", {"cpu": "4096", "mem": "64g"}, None)):
        _gql(live_node, "mutation($n: String!, $p: CreateResourcePresetInput!) { "
                        "create_resource_preset(name: $n, props: $p) { ok } }",
             {"n": name, "p": {"resource_slots": json.dumps(slots), "shared_memory": shmem}})
    ak, sk = fixtures.generate_keypair()

    async def add_user() -> None:
        async with live_node.db.begin() as conn:
            uid = uuid.uuid4()
            group = await conn.scalar(sa.select(t.groups.c.id).where(t.groups.c.name == "default",
                                                                    t.groups.c.domain_name == "default"))
            await conn.execute(sa.insert(t.users).values(
                uuid=uid, username="tight", email="tight@example.com", status="active", domain_name="default",
                role="user", main_access_key=ak))
            await conn.execute(sa.insert(t.keypairs).values(
                access_key=ak, secret_key=sk, user_id="tight@example.com", user=uid, is_active=True,
                rate_limit=10000, resource_policy="one-cpu"))
            await conn.execute(sa.insert(t.association_groups_users).values(user_id=uid, group_id=group))

    live_node.run(add_user())
    return HmacAuth(ak, sk)


def _free_capacity(node: LiveNode) -> dict[str, Decimal]:
    """Σ (available - occupied) over the ALIVE, schedulable agents of the default group, from the database."""
    async def query() -> dict[str, Decimal]:
        async with node.db.connect() as conn:
            rows = (await conn.execute(sa.select(t.agents.c.available_slots, t.agents.c.occupied_slots).where(
                t.agents.c.status == "ALIVE", t.agents.c.schedulable.is_(True),
                t.agents.c.scaling_group == "default"))).all()
        free = {"cpu": Decimal(0), "mem": Decimal(0)}
        for available, occupied in rows:
            for slot in free:
                free[slot] += Decimal(available.get(slot, "0")) - Decimal(occupied.get(slot, "0"))
        return free
    return node.run(query())


def _s(amount: Decimal) -> str:
    return str(int(amount)) if amount == amount.to_integral_value() else str(amount.normalize())


def _check(node: LiveNode, auth: HmacAuth, body: Any = None) -> requests.Response:
    return requests.post(f"{node.url}/resource/check-presets", data=json.dumps({} if body is None else body),
                         headers={"Content-Type": "application/json"}, auth=auth, timeout=TIMEOUT)


def test_presets_list_shape(live_node: LiveNode, tight: HmacAuth) -> None:
    reply = requests.get(f"{live_node.url}/resource/presets", auth=tight, timeout=TIMEOUT)
    assert reply.status_code == 200, reply.text
    presets = reply.json()["presets"]
    assert [p["name"] for p in presets] == ["fits", "huge", "two-cpus"]
    assert presets[0] == {"name": "fits", "shared_memory": str(64 * 2**20),
                          "resource_slots": {"cpu": "1", "mem": str(512 * 2**20)}}
    assert list(presets[0]) == ["name", "shared_memory", "resource_slots"]  # the captured key order
    assert presets[1]["shared_memory"] is None
    assert requests.get(f"{live_node.url}/resource/presets", timeout=TIMEOUT).status_code == 401


def test_check_presets_with_a_limited_policy(live_node: LiveNode, tight: HmacAuth) -> None:
    reply = _check(live_node, tight)
    assert reply.status_code == 200, reply.text
    got = reply.json()
    assert list(got) == ["keypair_limits", "keypair_using", "keypair_remaining", "scaling_group_remaining",
                         "scaling_groups", "presets", "group_limits", "group_using", "group_remaining"]
    assert got["keypair_limits"] == {"cpu": "1", "mem": str(GIB)}
    assert got["keypair_using"] == {"cpu": "0", "mem": "0"}
    assert got["keypair_remaining"] == {"cpu": "1", "mem": str(GIB)}
    free = _free_capacity(live_node)
    capped = {"cpu": _s(min(free["cpu"], Decimal(1))), "mem": _s(min(free["mem"], Decimal(GIB)))}
    assert got["scaling_group_remaining"] == capped
    assert got["scaling_groups"] == {"default": {"using": {"cpu": "0", "mem": "0"}, "remaining": capped}}
    assert {p["name"]: p["allocatable"] for p in got["presets"]} == {"fits": True, "two-cpus": False,
                                                                     "huge": False}
    assert got["presets"][0] == {"name": "fits", "resource_slots": {"cpu": "1", "mem": str(512 * 2**20)},
                                 "shared_memory": str(64 * 2**20), "allocatable": True}
    for key in ("group_limits", "group_using", "group_remaining"):
        assert got[key] == {"cpu": "NaN", "mem": "NaN"}
    # the same, asked for the default group and project by name
    assert _check(live_node, tight, {"scaling_group": "default", "group": "default"}).json() == got


def test_check_presets_for_the_unlimited_admin(live_node: LiveNode) -> None:
    got = _check(live_node, live_node.auth).json()
    assert got["keypair_limits"] == {"cpu": "Infinity", "mem": "Infinity"}
    free = _free_capacity(live_node)
    assert got["scaling_group_remaining"] == {"cpu": _s(free["cpu"]), "mem": _s(free["mem"])}
    # two CPUs fit when the agent has them; no agent has 4096
    assert {p["name"]: p["allocatable"] for p in got["presets"]} == {
        "fits": True, "two-cpus": free["cpu"] >= 2 and free["mem"] >= 512 * 2**20, "huge": False}


def test_a_running_session_counts_against_the_policy(live_node: LiveNode, tight: HmacAuth) -> None:
    name = f"rp-{secrets.token_hex(4)}"
    created = requests.post(f"{live_node.url}/session", json={
        "name": name, "image": "python", "config": {"resources": {"cpu": "1", "mem": "512m"}}},
        auth=tight, timeout=60)
    assert created.status_code == 201 and created.json()["status"] == "RUNNING", created.text
    try:
        got = _check(live_node, tight).json()
        assert got["keypair_using"] == {"cpu": "1", "mem": str(512 * 2**20)}
        assert got["keypair_remaining"] == {"cpu": "0", "mem": str(512 * 2**20)}
        assert got["scaling_groups"]["default"]["using"] == {"cpu": "1", "mem": str(512 * 2**20)}
        assert got["scaling_group_remaining"]["cpu"] == "0"
        assert {p["name"]: p["allocatable"] for p in got["presets"]}["fits"] is False
        # the admin's view of the same agent: its occupied slots went down by the session's
        admin = _check(live_node, live_node.auth).json()
        free = _free_capacity(live_node)
        assert admin["scaling_group_remaining"] == {"cpu": _s(free["cpu"]), "mem": _s(free["mem"])}
        assert admin["keypair_using"] == {"cpu": "0", "mem": "0"}
    finally:
        gone = requests.delete(f"{live_node.url}/session/{name}?forced=true", auth=tight, timeout=60)
        assert gone.status_code == 200, gone.text


def test_check_presets_bad_input(live_node: LiveNode, tight: HmacAuth) -> None:
    for body, needle in (({"scaling_group": "nowhere"}, "Unknown scaling group"),
                         ({"group": "no-such-project"}, "Unknown project"),
                         ({"bogus": 1}, None), ({"scaling_group": 5}, None)):
        reply = _check(live_node, tight, body)
        assert reply.status_code == 400, (body, reply.text)
        assert reply.headers["Content-Type"].startswith("application/problem+json")
        problem = reply.json()
        assert problem["type"] == PROBS + "invalid-api-params"
        if needle:
            assert needle in problem["msg"]
    reply = requests.post(f"{live_node.url}/resource/check-presets", data="{", auth=tight, timeout=TIMEOUT,
                          headers={"Content-Type": "application/json"})
    assert reply.status_code == 400
    assert requests.post(f"{live_node.url}/resource/check-presets", json={}, timeout=TIMEOUT).status_code == 401


def test_sessions_may_use_resource_groups_of_their_domain_project_or_keypair(
        live_node: LiveNode, tight: HmacAuth) -> None:
    """Session creation follows the associations: a resource group associated with nothing the
    caller has is refused (nothing enqueued); associated with the caller's keypair, or with its
    project, it is accepted; an inactive one is refused again."""
    _gql(live_node, "mutation($n: String!, $p: CreateScalingGroupInput!) { create_scaling_group(name: $n, "
                    "props: $p) { ok } }", {"n": "gpu-pool", "p": {"driver": "static", "scheduler": "fifo",
                                                                   "is_active": True}})

    def enqueue(name: str) -> requests.Response:
        return requests.post(f"{live_node.url}/session", json={
            "name": name, "image": "python", "enqueueOnly": True,
            "config": {"scaling_group": "gpu-pool", "resources": {"cpu": "1", "mem": "256m"}}},
            auth=tight, timeout=60)

    refused = enqueue("sg-refused")
    assert refused.status_code == 404 and "gpu-pool" in refused.json()["msg"], refused.text
    assert "sg-refused" not in live_node.live_sessions()

    assoc = ("mutation($s: String!, $k: String!) { associate_scaling_group_with_keypair(scaling_group: $s, "
             "access_key: $k) { ok msg } }")
    assert _gql(live_node, assoc, {"s": "gpu-pool", "k": tight.access_key})[
        "associate_scaling_group_with_keypair"]["ok"] is True
    by_key = enqueue("sg-by-key")
    assert by_key.status_code == 201 and by_key.json()["status"] == "PENDING", by_key.text
    assert requests.delete(f"{live_node.url}/session/sg-by-key", auth=tight, timeout=60).status_code == 200
    _gql(live_node, "mutation($s: String!, $k: String!) { disassociate_scaling_group_with_keypair("
                    "scaling_group: $s, access_key: $k) { ok } }", {"s": "gpu-pool", "k": tight.access_key})

    project = _gql(live_node, '{ groups(domain_name: "default") { id name } }', {})["groups"]
    default_project = next(g["id"] for g in project if g["name"] == "default")
    _gql(live_node, "mutation($s: String!, $g: UUID!) { associate_scaling_group_with_user_group("
                    "scaling_group: $s, user_group: $g) { ok } }", {"s": "gpu-pool", "g": default_project})
    by_project = enqueue("sg-by-project")
    assert by_project.status_code == 201, by_project.text
    assert requests.delete(f"{live_node.url}/session/sg-by-project", auth=tight, timeout=60).status_code == 200

    _gql(live_node, "mutation($n: String!, $p: ModifyScalingGroupInput!) { modify_scaling_group(name: $n, "
                    "props: $p) { ok } }", {"n": "gpu-pool", "p": {"is_active": False}})
    assert enqueue("sg-inactive").status_code == 404
