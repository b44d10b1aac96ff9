"""The operator's REST endpoints on a whole node (real agent, real Docker, real etcd):
``/manager/status`` (public read; superadmin freeze/unfreeze, with and without force_kill),
``/manager/announcement``, ``/manager/scheduler/operation`` and ``/config/get|set|delete``; every
write refused (401) for a non-superadmin and for an unsigned caller, and refused writes change
nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from bai.manager.store import fixtures
from bai.manager.store import tables as t

from .conftest import HmacAuth, LiveNode

TIMEOUT = 30
PROBS = "https://api.backend.ai/probs/"


def _call(node: LiveNode, method: str, path: str, body: Any = None, auth: HmacAuth | None = None) -> requests.Response:
    return requests.request(method, node.url + path, json=body, auth=auth, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def domain_admin(live_node: LiveNode) -> HmacAuth:
    """An admin of the default domain: still not a superadmin."""
    ak, sk = fixtures.generate_keypair()

    async def add() -> None:
        async with live_node.db.begin() as conn:
            uid = uuid.uuid4()
            await conn.execute(sa.insert(t.users).values(
                uuid=uid, username="dadmin", email="dadmin@example.com", status="active", domain_name="default",
                role="admin", main_access_key=ak))
            await conn.execute(sa.insert(t.keypairs).values(
                access_key=ak, secret_key=sk, user_id="dadmin@example.com", user=uid, is_active=True, is_admin=True,
                rate_limit=10000, resource_policy="default"))
    live_node.run(add())
    return HmacAuth(ak, sk)


@pytest.fixture
def unfrozen(live_node: LiveNode) -> Iterator[None]:
    yield
    assert _call(live_node, "PUT", "/manager/status", {"status": "running"}, live_node.auth).status_code == 204


def _create(node: LiveNode, name: str) -> requests.Response:
    return _call(node, "POST", "/session", {"name": name, "image": "python",
                                            "config": {"resources": {"cpu": "1", "mem": "320m"}}}, node.auth)


def _schedulable(node: LiveNode, agent_id: str) -> bool:
    async def query() -> bool:
        async with node.db.connect() as conn:
            return bool(await conn.scalar(sa.select(t.agents.c.schedulable).where(t.agents.c.id == agent_id)))
    return node.run(query())


def _agent_id(node: LiveNode) -> str:
    async def query() -> str:
        async with node.db.connect() as conn:
            return str(await conn.scalar(sa.select(t.agents.c.id).where(t.agents.c.status == "ALIVE")))
    return node.run(query())


def test_status_is_public_and_counts_active_sessions(live_node: LiveNode) -> None:
    reply = _call(live_node, "GET", "/manager/status")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["status"] == "running"
    assert body["active_sessions"] == len(live_node.live_sessions())
    assert len(body["nodes"]) == 1
    node = body["nodes"][0]
    assert node["status"] == "running" and node["service_addr"] and node["api_version"].startswith("v")


def test_writes_are_superadmin_only_and_change_nothing(live_node: LiveNode, domain_admin: HmacAuth) -> None:
    attempts = [("PUT", "/manager/status", {"status": "frozen"}),
                ("POST", "/manager/announcement", {"enabled": True, "message": "hijacked"}),
                ("POST", "/manager/scheduler/operation", {"op": "exclude-agents", "args": [_agent_id(live_node)]}),
                ("POST", "/config/get", {"key": "config/redis"}),
                ("POST", "/config/set", {"key": "config/redis/addr", "value": "evil:6379"}),
                ("POST", "/config/delete", {"key": "config/redis", "prefix": True})]
    for method, path, body in attempts:
        for auth in (domain_admin, None):
            reply = _call(live_node, method, path, body, auth)
            assert reply.status_code == 401, (method, path, reply.status_code, reply.text)
            assert reply.headers["Content-Type"].startswith("application/problem+json")
    assert _call(live_node, "GET", "/manager/status").json()["status"] == "running"
    assert _call(live_node, "GET", "/manager/announcement").json() == {"enabled": False, "message": ""}
    assert _schedulable(live_node, _agent_id(live_node)) is True
    got = _call(live_node, "POST", "/config/get", {"key": "config/redis/addr"}, live_node.auth).json()["result"]
    assert got and got != "evil:6379"


def test_freeze_refuses_new_sessions_and_keeps_running_ones(live_node: LiveNode, unfrozen: None) -> None:
    assert _create(live_node, "before-freeze").status_code == 201
    reply = _call(live_node, "PUT", "/manager/status", {"status": "frozen"}, live_node.auth)
    assert reply.status_code == 204, reply.text
    assert _call(live_node, "GET", "/manager/status").json()["status"] == "frozen"
    refused = _create(live_node, "during-freeze")
    assert refused.status_code == 503 and refused.json()["type"] == PROBS + "server-frozen", refused.text
    assert "during-freeze" not in live_node.live_sessions()
    run = _call(live_node, "POST", "/session/before-freeze", {"mode": "query", "code": "print(6*7)", "runId": None},
                live_node.auth)
    assert run.status_code == 200 and run.json()["result"]["console"] == [["stdout", "42\n"]], run.text
    # GraphQL reads still answer while frozen
    gql = _call(live_node, "POST", "/admin/gql", {"query": "{ compute_session_list(limit: 5, offset: 0) { total_count } }"},
                live_node.auth)
    assert gql.status_code == 200 and "errors" not in gql.json(), gql.text
    # ... but mutations wait: nothing is written
    mutation = ('mutation { create_resource_preset(name: "frozen-preset", '
                'props: {resource_slots: "{\\"cpu\\": \\"1\\"}"}) { ok } }')
    refused_gql = _call(live_node, "POST", "/admin/gql", {"query": mutation}, live_node.auth)
    assert refused_gql.status_code == 503 and refused_gql.json()["type"] == PROBS + "server-frozen", refused_gql.text
    presets = _call(live_node, "POST", "/admin/gql", {"query": "{ resource_presets { name } }"}, live_node.auth)
    assert "frozen-preset" not in [p["name"] for p in presets.json()["data"]["resource_presets"]]

    assert _call(live_node, "PUT", "/manager/status", {"status": "running"}, live_node.auth).status_code == 204
    assert _create(live_node, "after-thaw").status_code == 201
    for name in ("before-freeze", "after-thaw"):
        assert _call(live_node, "DELETE", f"/session/{name}", auth=live_node.auth).status_code == 200


def test_freeze_with_force_kill_terminates_live_sessions(live_node: LiveNode, unfrozen: None) -> None:
    assert _create(live_node, "doomed").status_code == 201
    reply = _call(live_node, "PUT", "/manager/status", {"status": "frozen", "force_kill": True}, live_node.auth)
    assert reply.status_code == 204, reply.text
    assert live_node.live_sessions() == []
    bad = _call(live_node, "PUT", "/manager/status", {"status": "running", "force_kill": True}, live_node.auth)
    assert bad.status_code == 400 and bad.json()["type"] == PROBS + "invalid-api-params"


def test_bad_status_is_400(live_node: LiveNode) -> None:
    for body in ({"status": "melted"}, {}, {"status": "frozen", "extra": 1}):
        reply = _call(live_node, "PUT", "/manager/status", body, live_node.auth)
        assert reply.status_code == 400, (body, reply.text)
    assert _call(live_node, "GET", "/manager/status").json()["status"] == "running"


def test_announcement_set_and_cleared(live_node: LiveNode) -> None:
    reply = _call(live_node, "POST", "/manager/announcement", {"enabled": True, "message": "maintenance at 18:00"},
                  live_node.auth)
    assert reply.status_code == 204, reply.text
    assert _call(live_node, "GET", "/manager/announcement").json() == {"enabled": True,
                                                                        "message": "maintenance at 18:00"}
    empty = _call(live_node, "POST", "/manager/announcement", {"enabled": True, "message": "  "}, live_node.auth)
    assert empty.status_code == 400
    assert _call(live_node, "GET", "/manager/announcement").json()["message"] == "maintenance at 18:00"
    assert _call(live_node, "POST", "/manager/announcement", {"enabled": False}, live_node.auth).status_code == 204
    assert _call(live_node, "GET", "/manager/announcement").json() == {"enabled": False, "message": ""}


def test_scheduler_exclude_and_include_agents(live_node: LiveNode) -> None:
    agent = _agent_id(live_node)
    unknown = _call(live_node, "POST", "/manager/scheduler/operation",
                    {"op": "exclude-agents", "args": [agent, "i-no-such-agent"]}, live_node.auth)
    assert unknown.status_code == 400 and "i-no-such-agent" in unknown.json()["msg"]
    assert _schedulable(live_node, agent) is True  # all or nothing
    try:
        reply = _call(live_node, "POST", "/manager/scheduler/operation", {"op": "exclude-agents", "args": [agent]},
                      live_node.auth)
        assert reply.status_code == 200 and reply.json() == {"agents": [agent]}, reply.text
        assert _schedulable(live_node, agent) is False
        # with its only agent excluded, a new session cannot be placed: it stays PENDING
        pending = _call(live_node, "POST", "/session", {"name": "nowhere", "image": "python", "enqueueOnly": True,
                                                         "config": {"resources": {"cpu": "1", "mem": "320m"}}},
                        live_node.auth)
        assert pending.status_code == 201 and pending.json()["status"] == "PENDING", pending.text
        assert _call(live_node, "DELETE", "/session/nowhere", auth=live_node.auth).status_code == 200
    finally:
        reply = _call(live_node, "POST", "/manager/scheduler/operation", {"op": "include-agents", "args": [agent]},
                      live_node.auth)
        assert reply.status_code == 200
    assert _schedulable(live_node, agent) is True


def test_shared_config_get_set_delete(live_node: LiveNode) -> None:
    auth = live_node.auth
    value = {"threshold": "10m", "enabled": True, "checkers": {"network": {"window": 30}}}
    assert _call(live_node, "POST", "/config/set", {"key": "config/test-idle", "value": value}, auth).status_code == 200
    got = _call(live_node, "POST", "/config/get", {"key": "config/test-idle", "prefix": True}, auth).json()
    assert got == {"result": {"threshold": "10m", "enabled": "true", "checkers": {"network": {"window": "30"}}}}
    one = _call(live_node, "POST", "/config/get", {"key": "config/test-idle/threshold"}, auth).json()
    assert one == {"result": "10m"}
    assert _call(live_node, "POST", "/config/delete", {"key": "config/test-idle", "prefix": True},
                 auth).status_code == 200
    assert _call(live_node, "POST", "/config/get", {"key": "config/test-idle", "prefix": True},
                 auth).json() == {"result": {}}
    # keys outside the shared config, path tricks and unstorable values are refused, nothing written
    for body in ({"key": "nodes/manager/x", "value": "up"}, {"key": "config/../nodes/x", "value": "1"},
                 {"key": "config/x", "value": {"a/b": "1"}}, {"key": "config/x", "value": {"a": None}},
                 {"key": "config/x", "value": {"a": [1, 2]}}):
        reply = _call(live_node, "POST", "/config/set", body, auth)
        assert reply.status_code == 400, (body, reply.text)
    assert _call(live_node, "POST", "/config/get", {"key": "config/x", "prefix": True}, auth).json() == {"result": {}}
