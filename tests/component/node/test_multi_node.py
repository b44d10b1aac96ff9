"""Several agents on one machine and multi-node sessions, on the whole node: two dummy-backend
agent processes (tests/fixtures/agents.py) join the node's manager in a resource group of their
own; a multi-node session gets one kernel on each, with the cluster environment, runs, and ends
on both; a kernel that fails to start takes the whole session down, its sibling removed from the
other agent. Also GET /scaling-groups (shape, public/private, authorisation).

The dummy backend starts no containers, so the kernels of a multi-node session cannot reach each
other here in any case (across real hosts that needs the overlay network of issue 10)."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import pytest
import sqlalchemy as sa

from bai.agent.dummy import DUMMY_OUTPUT
from bai.common import etcd as etcd_mod
from bai.manager.store import tables as t
from tests.fixtures.agents import AgentProcess, AgentSpec, local_agents
from tests.fixtures.halfstack import HalfStack

from .conftest import Node

GiB = 2**30
T = TypeVar("T")


@dataclass
class Cluster:
    group: str
    a: AgentProcess  # cpu 2, mem 4g
    b: AgentProcess  # cpu 2, mem 2g
    secret: str
    keys: tuple[str, str]  # a user whose policy allows sessions of several containers

    async def rpc(self, agent: AgentProcess, method: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http, http.post(
                f"{agent.addr}/rpc/{method}", json=body, headers={"Authorization": f"Bearer {self.secret}"},
                timeout=aiohttp.ClientTimeout(total=10)) as resp:
            return resp.status, await resp.json()


async def until(check: Callable[[], Awaitable[T]], what: str, deadline: float = 20.0) -> T:
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
async def cluster(node: Node, halfstack: HalfStack) -> AsyncIterator[Cluster]:
    tag = secrets.token_hex(3)
    group = f"mn-{tag}"
    async with node.db.begin() as conn:
        await conn.execute(sa.insert(t.scaling_groups).values(name=group))
        await conn.execute(sa.insert(t.sgroups_for_domains).values(scaling_group=group, domain="default"))
    cfg = node.agent.config.etcd
    async with etcd_mod.connect(cfg.addr, cfg.namespace) as etcd:
        secret = await etcd.get("config/agent/rpc-secret")
    assert secret
    # heartbeats every 3 s (the node's manager calls an agent lost after 10 s): the failure test
    # below needs the manager's view of one agent to stay what it set for a moment
    specs = [AgentSpec(f"i-{group}-a", group, slots={"cpu": 2, "mem": "4g"}, heartbeat_interval=3.0),
             AgentSpec(f"i-{group}-b", group, slots={"cpu": 2, "mem": "2g"}, heartbeat_interval=3.0)]
    async with local_agents(cfg.addr, cfg.namespace, specs) as (a, b):
        async def alive() -> bool:
            async with node.db.connect() as conn:
                return int(await conn.scalar(sa.select(sa.func.count()).select_from(t.agents).where(
                    t.agents.c.scaling_group == group, t.agents.c.status == "ALIVE")) or 0) == 2
        await until(alive, "the dummy agents did not register with the manager")
        yield Cluster(group, a, b, secret, await node.add_keypair({"max_containers_per_session": 4}))


async def agent_rows(node: Node, group: str) -> dict[str, Any]:
    async with node.db.connect() as conn:
        return {r.id: r for r in await conn.execute(sa.select(t.agents).where(t.agents.c.scaling_group == group))}


async def kernels_of(node: Node, name: str) -> list[Any]:
    async with node.db.connect() as conn:
        return list((await conn.execute(
            sa.select(t.kernels).join(t.sessions, t.sessions.c.id == t.kernels.c.session_id)
            .where(t.sessions.c.name == name).order_by(t.kernels.c.local_rank))).all())


def create_body(name: str, group: str, resources: dict[str, str], size: int) -> dict[str, Any]:
    return {"name": name, "image": "python", "clusterMode": "multi-node", "clusterSize": size,
            "config": {"scalingGroup": group, "resources": resources}}


async def test_agents_register_with_distinct_ids_groups_and_capacity(node: Node, cluster: Cluster) -> None:
    rows = await agent_rows(node, cluster.group)
    assert sorted(rows) == [cluster.a.spec.id, cluster.b.spec.id]
    a, b = rows[cluster.a.spec.id], rows[cluster.b.spec.id]
    assert a.available_slots == {"cpu": "2", "mem": str(4 * GiB)}
    assert b.available_slots == {"cpu": "2", "mem": str(2 * GiB)}
    assert a.addr == cluster.a.addr and b.addr == cluster.b.addr and a.addr != b.addr
    assert "dummy" in a.compute_plugins and "dummy" in b.compute_plugins
    # the node's own (Docker) agent is still there, in its own group
    async with node.db.connect() as conn:
        docker_agent = (await conn.execute(sa.select(t.agents).where(t.agents.c.id == node.agent.config.agent.id))).one()
    assert docker_agent.scaling_group == "default" and docker_agent.status == "ALIVE"


async def test_multi_node_session_runs_across_two_agents(node: Node, cluster: Cluster) -> None:
    name = f"mn-{secrets.token_hex(3)}"
    # 2 cores a kernel, 2 per agent: one kernel on each agent
    status, body = await node.call("POST", "/session", create_body(name, cluster.group, {"cpu": "2", "mem": "1g"}, 2),
                                   keys=cluster.keys)
    assert status == 201 and body["status"] == "RUNNING", body
    kernels = await kernels_of(node, name)
    assert [k.status for k in kernels] == ["RUNNING", "RUNNING"]
    assert sorted(k.agent for k in kernels) == [cluster.a.spec.id, cluster.b.spec.id]
    for k in kernels:
        agent = cluster.a if k.agent == cluster.a.spec.id else cluster.b
        st, logs = await cluster.rpc(agent, "get_logs", {"kernel_id": str(k.id)})
        assert st == 200, logs
        env = dict(line.split("=", 1) for line in logs["logs"].splitlines()[1:])
        assert env["BACKENDAI_CLUSTER_SIZE"] == "2"
        assert env["BACKENDAI_CLUSTER_HOSTS"] == "main1,sub1"
        assert env["BACKENDAI_CLUSTER_REPLICAS"] == "main:1,sub:1"
        assert env["BACKENDAI_CLUSTER_HOST"] == k.cluster_hostname
        assert env["BACKENDAI_CLUSTER_ROLE"] == k.cluster_role
        assert env["BACKENDAI_CLUSTER_LOCAL_RANK"] == str(k.local_rank)
        assert env["BACKENDAI_SESSION_NAME"] == name
    # execute goes to the main kernel, which says honestly that it ran nothing
    status, body = await node.call("POST", f"/session/{name}", {"mode": "query", "code": "print(1)",
                                                                "runId": secrets.token_hex(4)}, keys=cluster.keys)
    assert status == 200, body
    assert body["result"]["console"] == [["stdout", DUMMY_OUTPUT]]
    rows = await agent_rows(node, cluster.group)
    assert all(r.occupied_slots.get("cpu") == "2" for r in rows.values())

    status, body = await node.call("DELETE", f"/session/{name}", keys=cluster.keys)
    assert status == 200, body
    assert [k.status for k in await kernels_of(node, name)] == ["TERMINATED", "TERMINATED"]
    for agent in (cluster.a, cluster.b):
        st, listing = await cluster.rpc(agent, "list_kernels", {})
        assert st == 200 and listing["kernels"] == []
    rows = await agent_rows(node, cluster.group)
    assert all(r.occupied_slots.get("cpu", "0") == "0" for r in rows.values()), rows


async def test_a_kernel_that_fails_to_start_takes_the_whole_session_down(node: Node, cluster: Cluster) -> None:
    """The manager believes agent b has 4g (it really has 2g): a session of two 1-core 3g kernels
    gets one kernel on a, one on b; b refuses its kernel, so the session is cancelled and a's
    kernel, started or not, is removed."""
    b_id = cluster.b.spec.id

    async def last_seen() -> Any:
        return (await agent_rows(node, cluster.group))[b_id].last_seen
    seen = await last_seen()
    await until(lambda: _changed(last_seen, seen), "agent b sent no heartbeat")  # the longest gap ahead
    async with node.db.begin() as conn:
        await conn.execute(t.agents.update().where(t.agents.c.id == b_id)
                           .values(available_slots={"cpu": "2", "mem": str(4 * GiB)}))
    name = f"mnf-{secrets.token_hex(3)}"
    status, body = await node.call("POST", "/session", create_body(name, cluster.group, {"cpu": "1", "mem": "3g"}, 2),
                                   keys=cluster.keys)
    assert status == 201 and body["status"] == "CANCELLED", body
    kernels = await kernels_of(node, name)
    assert sorted(k.agent for k in kernels) == [cluster.a.spec.id, b_id]
    # a's kernel may have started before b's failed: it is cancelled with the session, at once
    assert {k.status for k in kernels} == {"CANCELLED"}

    async def none_left() -> bool:
        for agent in (cluster.a, cluster.b):
            st, listing = await cluster.rpc(agent, "list_kernels", {})
            if st != 200 or listing["kernels"]:
                return False
        return True
    await until(none_left, "a kernel of the failed session was left on an agent")
    async with node.db.connect() as conn:
        info, data = (await conn.execute(sa.select(t.sessions.c.status_info, t.sessions.c.status_data)
                                         .where(t.sessions.c.name == name))).one()
    assert info == "failed-to-create" and "not enough mem" in json.dumps(data), (info, data)
    rows = await agent_rows(node, cluster.group)
    assert all(r.occupied_slots.get("cpu", "0") == "0" for r in rows.values()), rows


async def _changed(read: Callable[[], Awaitable[Any]], before: Any) -> bool:
    return bool(await read() != before)


# ------------------------------------------------------------------ GET /scaling-groups

async def test_scaling_groups_for_a_project(node: Node, cluster: Cluster) -> None:
    hidden = f"priv-{secrets.token_hex(3)}"
    async with node.db.begin() as conn:
        await conn.execute(sa.insert(t.scaling_groups).values(name=hidden, is_public=False))
        await conn.execute(sa.insert(t.sgroups_for_domains).values(scaling_group=hidden, domain="default"))
        project_id = await conn.scalar(sa.select(t.groups.c.id).where(t.groups.c.name == "default"))
    status, body = await node.call("GET", "/scaling-groups?group=default")
    assert status == 200, body
    names = [g["name"] for g in body["scaling_groups"]]
    assert {"default", cluster.group, hidden} <= set(names) and names == sorted(names)
    assert all(set(g) == {"name"} for g in body["scaling_groups"])
    # the same by the project's id, and through the aliases
    for query in (f"group={project_id}", f"group_id={project_id}", "group_name=default"):
        status, again = await node.call("GET", f"/scaling-groups?{query}")
        assert (status, again) == (200, body), query

    user = await node.add_keypair({})
    status, body = await node.call("GET", "/scaling-groups?group=default", keys=user)
    assert status == 200, body
    user_names = {g["name"] for g in body["scaling_groups"]}
    assert {"default", cluster.group} <= user_names and hidden not in user_names  # users see public ones


@pytest.mark.parametrize(("query", "status"), [
    ("", 400), ("group=", 400), ("group=no-such-project", 400), ("group=default&extra=1", 400),
    ("group=" + "x" * 65, 400)])
async def test_scaling_groups_bad_input(node: Node, query: str, status: int) -> None:
    got, body = await node.call("GET", f"/scaling-groups?{query}" if query else "/scaling-groups")
    assert got == status, body
    assert body["type"].endswith("/invalid-api-params"), body


async def test_scaling_groups_needs_authentication_and_membership(node: Node) -> None:
    status, body = await node.call("GET", "/scaling-groups?group=default", sign=False)
    assert status == 401, body
    async with node.db.begin() as conn:
        other = f"proj-{secrets.token_hex(3)}"
        await conn.execute(sa.insert(t.groups).values(id=uuid.uuid4(), name=other, domain_name="default"))
    user = await node.add_keypair({})
    status, body = await node.call("GET", f"/scaling-groups?group={other}", keys=user)
    assert status == 400 and other in body["title"] + json.dumps(body), body  # as unknown as a missing one
    status, body = await node.call("GET", f"/scaling-groups?group={other}")  # an admin may look
    assert status == 200, body


# ------------------------------------------------------------------ Docker backend

async def test_multi_node_session_on_two_docker_agents(node: Node) -> None:
    """The node's agent and a second Docker-backend agent process in the node's ``default``
    group: a two-kernel multi-node session gets a container on each (each kernel asks for every
    core an agent reports), its kernels see the cluster environment, and destroying it removes
    both containers."""
    async with node.db.connect() as conn:
        cores = (await conn.execute(sa.select(t.agents.c.available_slots)
                                    .where(t.agents.c.id == node.agent.config.agent.id))).scalar_one()["cpu"]
    cfg = node.agent.config.etcd
    second = AgentSpec(f"i-docker-{secrets.token_hex(3)}", "default", backend="docker", heartbeat_interval=1.0)
    keys = await node.add_keypair({"max_containers_per_session": 2})
    async with local_agents(cfg.addr, cfg.namespace, [second]):
        async def alive() -> bool:
            async with node.db.connect() as conn:
                return bool(await conn.scalar(sa.select(t.agents.c.status == "ALIVE").where(t.agents.c.id == second.id)))
        await until(alive, "the second Docker agent did not register", deadline=60)
        name = f"mnd-{secrets.token_hex(3)}"
        status, body = await node.call("POST", "/session", create_body(name, "default", {"cpu": cores, "mem": "256m"}, 2),
                                       keys=keys)
        kernels = await kernels_of(node, name)
        assert status == 201 and body["status"] == "RUNNING", [(k.agent, k.status_info, k.status_data) for k in kernels]
        assert sorted(k.agent for k in kernels) == sorted([node.agent.config.agent.id, second.id])
        code = "import os; print(os.environ['BACKENDAI_CLUSTER_HOSTS'], os.environ['BACKENDAI_CLUSTER_HOST'])"
        status, body = await node.call("POST", f"/session/{name}", {"mode": "query", "code": code, "runId": None},
                                       keys=keys)
        assert status == 200 and body["result"]["console"] == [["stdout", "main1,sub1 main1\n"]], body
        status, body = await node.call("DELETE", f"/session/{name}", keys=keys)
        assert status == 200, body
        assert [k.status for k in await kernels_of(node, name)] == ["TERMINATED", "TERMINATED"]
        proc = await asyncio.create_subprocess_exec(
            "docker", "ps", "-aq", "--filter", f"label=ai.backend.session-id={kernels[0].session_id}",
            stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert out.decode().split() == []
