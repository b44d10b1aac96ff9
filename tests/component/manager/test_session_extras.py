"""The smaller session endpoints on a whole node (real manager, agent, Docker, kernel image and
an in-process app proxy): rename, status-history, abusing-report, direct-access-info,
shutdown-service (the service's process ends, its app-proxy circuits close) and
sync-agent-registry, each with its refusals: another user's session, bad input."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from datetime import datetime
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from bai.manager.store import tables as t
from tests.component.appproxy.conftest import poll
from tests.component.appproxy.test_node_apps import AppNode, apps_node  # noqa: F401  (the fixture)
from tests.component.node.conftest import Node
from tests.component.node.test_sessions import containers, wait_status

PROBLEM = "application/problem+json"


def _name() -> str:
    return f"sx-{secrets.token_hex(4)}"


async def _create(node: Node, keys: tuple[str, str] | None = None) -> tuple[str, str]:
    n = _name()
    st, body = await node.call("POST", "/session", {"name": n, "image": "python"}, keys=keys)
    assert st == 201 and body["status"] == "RUNNING", body
    return n, str(body["sessionId"])


async def _stranger(node: Node) -> tuple[str, str]:
    return await node.add_keypair({"total_resource_slots": {}, "max_concurrent_sessions": 2})


def _problem(node: Node, st: int, body: Any, status: int, type_suffix: str) -> None:
    assert st == status, body
    assert node.last_headers["Content-Type"].startswith(PROBLEM)
    assert body["type"].endswith(type_suffix), body


@pytest.fixture(scope="module")
def node(apps_node: AppNode) -> Node:  # noqa: F811
    return apps_node.node


async def test_rename(node: Node) -> None:
    old, sid = await _create(node)
    new = _name()
    # As the official client sends it: the parameters in the query string of a body-less POST.
    st, body = await node.call("POST", f"/session/{old}/rename?name={new}")
    assert st == 204, body
    st, info = await node.call("GET", f"/session/{new}")
    assert st == 200, info
    assert (await node.call("GET", f"/session/{old}"))[0] == 404
    async with node.db.connect() as conn:
        kernel_names = (await conn.scalars(sa.select(t.kernels.c.session_name)
                                           .where(t.kernels.c.session_id == uuid.UUID(sid)))).all()
    assert kernel_names == [new]
    # A JSON body with the original's aliases works too; renaming to its own name changes nothing.
    st, body = await node.call("POST", f"/session/{sid}/rename", {"session_name": new})
    assert st == 204, body

    # Refused, nothing changed: names creation refuses, another live session's name, bad keys.
    other, other_id = await _create(node)
    for bad in ("x", "from-template", "no spaces", "-dash-first", "a" * 65):
        st, body = await node.call("POST", f"/session/{new}/rename", {"name": bad})
        _problem(node, st, body, 400, "invalid-api-params")
    st, body = await node.call("POST", f"/session/{new}/rename", {"name": other})
    _problem(node, st, body, 400, "session-already-exists")
    st, body = await node.call("POST", f"/session/{new}/rename", {"name": "good-name", "nope": 1})
    _problem(node, st, body, 400, "invalid-api-params")
    st, body = await node.call("POST", f"/session/{new}/rename", {})
    _problem(node, st, body, 400, "invalid-api-params")
    assert (await node.call("GET", f"/session/{new}"))[0] == 200
    assert (await node.call("GET", f"/session/{other}"))[0] == 200

    # Only a RUNNING session: an ended one is a 400 (not a 404), and its name is free again.
    # (At most two sessions at a time: the test node has two cores.)
    assert (await node.call("DELETE", f"/session/{other}"))[0] == 200
    await wait_status(node, other_id, {"TERMINATED"})
    st, body = await node.call("POST", f"/session/{other}/rename", {"name": _name()})
    _problem(node, st, body, 400, "invalid-api-params")
    assert "not running" in body["msg"]
    st, body = await node.call("POST", f"/session/{new}/rename", {"name": other})
    assert st == 204, body
    async with node.db.connect() as conn:
        assert await conn.scalar(sa.select(t.sessions.c.name).where(t.sessions.c.id == uuid.UUID(sid))) == other

    # Another user's session is not even seen; an admin renames it with owner_access_key.
    stranger = await _stranger(node)
    st, body = await node.call("POST", f"/session/{other}/rename", {"name": _name()}, keys=stranger)
    _problem(node, st, body, 404, "object-not-found")
    assert (await node.call("DELETE", f"/session/{other}"))[0] == 200
    await wait_status(node, sid, {"TERMINATED"})
    theirs, their_id = await _create(node, keys=stranger)
    renamed = _name()
    st, body = await node.call("POST", f"/session/{theirs}/rename",
                               {"name": renamed, "owner_access_key": stranger[0]})
    assert st == 204, body
    assert (await node.call("GET", f"/session/{renamed}", keys=stranger))[0] == 200
    assert (await node.call("DELETE", f"/session/{renamed}", keys=stranger))[0] == 200
    await wait_status(node, their_id, {"TERMINATED"})


async def test_status_history_abusing_report_direct_access_info(node: Node) -> None:
    n, sid = await _create(node)
    st, body = await node.call("GET", f"/session/{n}/status-history")
    assert st == 200, body
    history = body["result"]
    assert {"PENDING", "SCHEDULED", "RUNNING"} <= history.keys(), history
    times = [datetime.fromisoformat(history[s]) for s in ("PENDING", "SCHEDULED", "RUNNING")]
    assert times == sorted(times)
    for what in ("abusing-report", "direct-access-info"):
        st, body = await node.call("GET", f"/session/{n}/{what}")
        assert (st, body) == (200, {}), (what, body)

    stranger = await _stranger(node)
    for what in ("status-history", "abusing-report", "direct-access-info"):
        st, body = await node.call("GET", f"/session/{n}/{what}", keys=stranger)
        _problem(node, st, body, 404, "object-not-found")
        st, body = await node.call("GET", f"/session/no-such-session/{what}")
        _problem(node, st, body, 404, "object-not-found")
    # Through an admin's owner_access_key, and for an ended session: its whole history.
    st, body = await node.call("GET", f"/session/{n}/status-history?owner_access_key={node.access_key}")
    assert st == 200 and body["result"] == history
    assert (await node.call("DELETE", f"/session/{n}"))[0] == 200
    await wait_status(node, sid, {"TERMINATED"})
    st, body = await node.call("GET", f"/session/{sid}/status-history")
    assert st == 200 and {"TERMINATING", "TERMINATED"} <= body["result"].keys(), body


async def _serves(port: int) -> bool:
    """Whether the web terminal answers on its host port (Docker's proxy may still accept the
    connection when nothing listens in the container, so an answer is what counts)."""
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/", timeout=aiohttp.ClientTimeout(total=5)) as resp:
                return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def _ttyd_port(node: Node, sid: str) -> int:
    async with node.db.connect() as conn:
        ports = await conn.scalar(sa.select(t.kernels.c.service_ports).where(
            t.kernels.c.session_id == uuid.UUID(sid)))
    (ttyd,) = [sp for sp in ports if sp["name"] == "ttyd"]
    return int(ttyd["host_ports"][0])


async def test_shutdown_service(apps_node: AppNode) -> None:  # noqa: F811
    node = apps_node.node
    n, sid = await _create(node)
    port = await _ttyd_port(node, sid)
    st, started = await node.call("POST", f"/session/{n}/start-service", {"app": "ttyd"})
    assert st == 200, started
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        params = {"token": started["token"], "session_id": sid, "app": "ttyd", "protocol": "http"}
        async with browser.get(started["wsproxy_addr"] + "/v2/proxy/auth", params=params) as r:
            assert r.status == 200
    circuits = apps_node.proxy.circuits
    assert circuits is not None and circuits.of_session(uuid.UUID(sid))
    assert await _serves(port)

    # As the official client sends it (query string); the service's process ends, its circuits close.
    st, body = await node.call("POST", f"/session/{n}/shutdown-service?service_name=ttyd")
    assert st == 204, body
    assert not await _serves(port)  # the runner answers once the process has ended
    await poll(lambda: not circuits.of_session(uuid.UUID(sid)), "the stopped service's circuits to close")
    # Stopping it again is fine (nothing runs); start-service brings it back.
    st, body = await node.call("POST", f"/session/{n}/shutdown-service", {"service_name": "ttyd"})
    assert st == 204, body
    st, again = await node.call("POST", f"/session/{n}/start-service", {"app": "ttyd"})
    assert st == 200, again
    assert await _serves(port)

    # Refusals: a service the session lacks (404), a malformed name or none (400), another
    # user's session (404); the service keeps running through all of them.
    st, body = await node.call("POST", f"/session/{n}/shutdown-service", {"service_name": "jupyter"})
    _problem(node, st, body, 404, "object-not-found")
    for bad in ({"service_name": "../x"}, {"service_name": ""}, {}):
        st, body = await node.call("POST", f"/session/{n}/shutdown-service", bad)
        _problem(node, st, body, 400, "invalid-api-params")
    stranger = await _stranger(node)
    st, body = await node.call("POST", f"/session/{n}/shutdown-service", {"service_name": "ttyd"}, keys=stranger)
    _problem(node, st, body, 404, "object-not-found")
    assert await _serves(port)
    assert (await node.call("DELETE", f"/session/{n}"))[0] == 200


async def test_sync_agent_registry(node: Node) -> None:
    async with node.db.connect() as conn:
        (agent_id,) = (await conn.scalars(sa.select(t.agents.c.id).where(t.agents.c.status == "ALIVE"))).all()
    n, sid = await _create(node)
    (container,) = await containers(sid)
    # The database says the session ended while its container still runs (a destroy that never
    # reached the agent): the sync destroys the container at once, not at the next periodic sync.
    async with node.db.begin() as conn:
        await conn.execute(t.kernels.update().where(t.kernels.c.session_id == uuid.UUID(sid))
                           .values(status="TERMINATED"))
        await conn.execute(t.sessions.update().where(t.sessions.c.id == uuid.UUID(sid))
                           .values(status="TERMINATED"))
    st, body = await node.call("POST", "/session/_/sync-agent-registry", {"agent": agent_id})
    assert (st, body) == (200, {})
    loop = asyncio.get_running_loop()
    end = loop.time() + 30
    while any(c["Id"] == container["Id"] for c in await containers(sid)):
        assert loop.time() < end, "the orphaned container was not destroyed"
        await asyncio.sleep(0.1)

    st, body = await node.call("POST", "/session/_/sync-agent-registry", {"agent": "i-no-such-agent"})
    _problem(node, st, body, 404, "object-not-found")
    st, body = await node.call("POST", "/session/_/sync-agent-registry", {})
    _problem(node, st, body, 400, "invalid-api-params")
    stranger = await _stranger(node)
    st, body = await node.call("POST", "/session/_/sync-agent-registry", {"agent": agent_id}, keys=stranger)
    assert st in (401, 403) and node.last_headers["Content-Type"].startswith(PROBLEM), body
    assert n
