"""Protocol version skew between the manager and real agent processes (bai.common.protocol).

A manager speaking this build's protocol (1.1) runs in-process; agents run as ``bai-agent``
processes (tests/fixtures/agents.py) whose advertised version is set with BAI_PROTOCOL_VERSION:

* one at 1.0 (the previous release, one minor behind) is scheduled onto, runs code and keeps
  state; the manager records its protocol; neither side uses what the other lacks (the 1.1
  method is not sent to it, and it answers 404 to it as an agent of 1.0 would);
* one at 1.3 (two minors ahead) is recorded INCOMPATIBLE with the reason, logged, and a session
  for its resource group stays PENDING while it is the group's only agent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from bai.common import etcd as etcd_mod
from bai.common import protocol as proto
from bai.common.agent_rpc import AgentClient, ProtocolMismatch, UnsupportedCall
from bai.manager.server import build_app
from bai.manager.store import tables as t
from tests.component.node.conftest import Node
from tests.fixtures.agents import AgentProcess, AgentSpec, local_agents
from tests.fixtures.halfstack import HalfStack
from tests.fixtures.node_parts import node_parts

pytestmark = pytest.mark.timeout(180)
T = TypeVar("T")


@dataclass
class Skew:
    node: Node
    etcd_addr: str
    namespace: str
    secret: str

    async def new_group(self) -> str:
        group = f"skew-{secrets.token_hex(3)}"
        async with self.node.db.begin() as conn:
            await conn.execute(sa.insert(t.scaling_groups).values(name=group))
            await conn.execute(sa.insert(t.sgroups_for_domains).values(scaling_group=group, domain="default"))
        return group

    async def agent_row(self, agent_id: str) -> Any:
        async with self.node.db.connect() as conn:
            return (await conn.execute(sa.select(t.agents).where(t.agents.c.id == agent_id))).first()

    async def gql_agent(self, agent_id: str) -> dict[str, Any]:
        st, body = await self.node.call("POST", "/admin/gql", {
            "query": "query($id: String!) { agent(agent_id: $id) { id status schedulable version local_config } }",
            "variables": {"id": agent_id}})
        assert st == 200 and not body.get("errors"), body
        agent: dict[str, Any] = body["data"]["agent"]
        return agent


async def until(check: Callable[[], Awaitable[T]], what: str, deadline: float = 30.0) -> T:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > end:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def skew(halfstack: HalfStack, kernel_image: str) -> AsyncIterator[Skew]:
    # the node's own in-process agent is not started: the agents here are processes
    async with node_parts(halfstack, "skew") as parts:
        client = TestClient(TestServer(build_app(parts.manager_config), host="127.0.0.1"))
        await client.start_server()
        try:
            cfg = parts.manager_config.etcd
            async with etcd_mod.connect(cfg.addr, cfg.namespace) as etcd:
                secret = await etcd.get("config/agent/rpc-secret")
            assert secret
            node = Node(client, parts.db, parts.access_key, parts.secret_key, parts.agent, parts.redis_addr)
            yield Skew(node, cfg.addr, cfg.namespace, secret)
        finally:
            await client.close()


async def raw_rpc(agent: AgentProcess, secret: str, method: str, body: dict[str, Any],
                  version: str | None) -> tuple[int, dict[str, Any], str | None]:
    headers = {"Authorization": f"Bearer {secret}"}
    if version is not None:
        headers[proto.HEADER] = version
    async with aiohttp.ClientSession() as http, http.post(
            f"{agent.addr}/rpc/{method}", json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as resp:
        return resp.status, await resp.json(), resp.headers.get(proto.HEADER)


async def test_agent_one_minor_behind_gets_sessions_and_executes(skew: Skew) -> None:
    node, group = skew.node, await skew.new_group()
    spec = AgentSpec(f"i-{group}", group, backend="docker", env={proto.ENV_OVERRIDE: "1.0"})
    async with local_agents(skew.etcd_addr, skew.namespace, [spec]) as [agent]:
        row = await until(lambda: _alive(skew, spec.id), "the 1.0 agent did not become ALIVE")
        assert row.version.endswith(";protocol=1.0")
        shown = await skew.gql_agent(spec.id)
        local = json.loads(shown["local_config"])["agent"]
        assert shown["status"] == "ALIVE" and shown["version"] == local["version"] != row.version
        assert local["protocol"] == "1.0" and "protocol_refused" not in local

        name = f"skew-{secrets.token_hex(3)}"
        st, body = await node.call("POST", "/session", {
            "name": name, "image": "python",
            "config": {"scalingGroup": group, "resources": {"cpu": "1", "mem": "256m"}}})
        assert st == 201 and body["status"] == "RUNNING", body
        try:
            async with node.db.connect() as conn:
                placed = await conn.scalar(sa.select(t.kernels.c.agent).where(
                    t.kernels.c.session_id == body["sessionId"]))
            assert placed == spec.id
            for code, out in (("state = 41", ""), ("print(state + 1)", "42\n")):
                st, res = await node.call("POST", f"/session/{name}", {"mode": "query", "code": code, "runId": None})
                assert st == 200 and res["result"]["status"] == "finished", res
                assert "".join(text for kind, text in res["result"]["console"] if kind == "stdout") == out

            # The client learns the agent's version from its replies and then never sends it
            # the method added in 1.1 (nothing goes out: the agent would not know it).
            async with AgentClient(agent.addr, skew.secret) as rpc:
                assert rpc.protocol == proto.PROTOCOL_VERSION
                assert await rpc.ping("hi") == "hi"
                assert rpc.peer_protocol == proto.ProtocolVersion(1, 0)
                with pytest.raises(UnsupportedCall) as unsupported:
                    await rpc.agent_info()
                assert unsupported.value.status == 501 and "protocol 1.1" in unsupported.value.msg
            # ... and the agent behaves as 1.0: the method does not exist there.
            st, reply, announced = await raw_rpc(agent, skew.secret, "agent_info", {}, "1.1")
            assert (st, reply["type"], announced) == (404, "agent-invalid-input", "1.0")
            # A newer caller's unknown fields are ignored; a same-version caller's are refused.
            st, reply, _ = await raw_rpc(agent, skew.secret, "ping", {"msg": "x", "added_in_1_1": 1}, "1.1")
            assert (st, reply) == (200, {"msg": "x"})
            st, reply, _ = await raw_rpc(agent, skew.secret, "ping", {"msg": "x", "added_in_1_1": 1}, "1.0")
            assert st == 400 and "added_in_1_1" in reply["msg"]
            # An unversioned caller (a release before versioning) is 1.0; two minors apart is refused.
            st, reply, _ = await raw_rpc(agent, skew.secret, "ping", {"msg": "old"}, None)
            assert (st, reply) == (200, {"msg": "old"})
            st, reply, _ = await raw_rpc(agent, skew.secret, "ping", {"msg": "x"}, "1.2")
            assert st == 409 and reply["type"] == "agent-protocol-mismatch" and "at most one apart" in reply["msg"]
            st, reply, _ = await raw_rpc(agent, skew.secret, "ping", {"msg": "x"}, "banana")
            assert st == 409 and "unreadable" in reply["msg"]
        finally:
            st, _ = await node.call("DELETE", f"/session/{name}")
            assert st == 200


async def _alive(skew: Skew, agent_id: str) -> Any:
    row = await skew.agent_row(agent_id)
    return row if row is not None and row.status == "ALIVE" else None


async def test_incompatible_agent_is_refused_with_the_reason(skew: Skew, caplog: pytest.LogCaptureFixture) -> None:
    node, group = skew.node, await skew.new_group()
    caplog.set_level(logging.WARNING, logger="bai.manager.services.lifecycle")
    spec = AgentSpec(f"i-{group}", group, env={proto.ENV_OVERRIDE: "1.3"}, slots={"cpu": 8, "mem": "16g"})
    async with local_agents(skew.etcd_addr, skew.namespace, [spec]) as [agent]:
        async def refused() -> Any:
            row = await skew.agent_row(spec.id)
            return row if row is not None and row.status == "INCOMPATIBLE" else None
        row = await until(refused, "the 1.3 agent was not marked INCOMPATIBLE")
        shown = await skew.gql_agent(spec.id)
        local = json.loads(shown["local_config"])["agent"]
        assert shown["status"] == "INCOMPATIBLE" and local["protocol"] == "1.3"
        assert local["protocol_refused"] == (
            "protocol 1.3 is 2 minor versions newer than 1.1 (at most one apart: upgrade one release at a time)")
        st, body = await node.call("POST", "/admin/gql", {
            "query": "query { agent_list(limit: 10, offset: 0, status: \"INCOMPATIBLE\") { items { id } } }"})
        assert st == 200 and {"id": spec.id} in body["data"]["agent_list"]["items"], body
        logged = [r.getMessage() for r in caplog.records if spec.id in r.getMessage()]
        assert len(logged) == 1 and "refused" in logged[0] and "at most one apart" in logged[0], logged

        # Its heartbeats keep arriving (each one keeps it INCOMPATIBLE, logged once), and nothing
        # is placed on it: a session for its group waits.
        name = f"skew-{secrets.token_hex(3)}"
        st, body = await node.call("POST", "/session", {
            "name": name, "image": "python", "enqueueOnly": True,
            "config": {"scalingGroup": group, "resources": {"cpu": "1", "mem": "256m"}}})
        assert st in (200, 201), body
        first_seen = row.last_seen

        async def beat_again() -> bool:
            now = await skew.agent_row(spec.id)
            return bool(now.last_seen > first_seen and now.status == "INCOMPATIBLE")
        await until(beat_again, "no further heartbeat of the refused agent was recorded")
        await until(beat_again, "no further heartbeat of the refused agent was recorded")
        async with node.db.connect() as conn:
            status, placed = (await conn.execute(sa.select(t.sessions.c.status, t.kernels.c.agent).select_from(
                t.sessions.join(t.kernels, t.kernels.c.session_id == t.sessions.c.id))
                .where(t.sessions.c.name == name))).one()
        assert (status, placed) == ("PENDING", None)
        assert len([r for r in caplog.records if spec.id in r.getMessage()]) == 1
        # The manager's client refuses to call it at all once it knows its version.
        async with AgentClient(agent.addr, skew.secret) as rpc:
            with pytest.raises(ProtocolMismatch):
                await rpc.ping()  # the agent refuses us (409)
            rpc.note_peer_protocol("1.3")
            with pytest.raises(ProtocolMismatch, match="at most one apart"):
                await rpc.list_kernels()  # refused before sending
        st, _ = await node.call("DELETE", f"/session/{name}")
        assert st == 200
