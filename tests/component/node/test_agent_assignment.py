"""Manual agent assignment (``config.agentList``, the official client's ``--assign-agent``) on the
whole node, with two dummy-backend agents in a resource group of their own: superadmins only
(403 for others), the original's length rules and clear 400s naming a bad agent, kernels placed
exactly on the agents asked for, and a session whose agent has no room waits in PENDING saying
so (never placed elsewhere, never over-allocated) until that agent has room."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from bai.manager.store import tables as t
from tests.fixtures.agents import AgentProcess, AgentSpec, local_agents
from tests.fixtures.halfstack import HalfStack

from .conftest import Node
from .test_multi_node import until


@dataclass
class Pair:
    group: str
    a: AgentProcess  # cpu 2
    b: AgentProcess  # cpu 2
    user: tuple[str, str]


@pytest.fixture(scope="module")
async def pair(node: Node, halfstack: HalfStack) -> AsyncIterator[Pair]:
    group = f"as-{secrets.token_hex(3)}"
    async with node.db.begin() as conn:
        # the superadmin's policy (this module's own database): sessions of several kernels
        await conn.execute(t.keypair_resource_policies.update().where(t.keypair_resource_policies.c.name == "default")
                           .values(max_containers_per_session=4))
        await conn.execute(sa.insert(t.scaling_groups).values(name=group))
        await conn.execute(sa.insert(t.sgroups_for_domains).values(scaling_group=group, domain="default"))
    cfg = node.agent.config.etcd
    specs = [AgentSpec(f"i-{group}-a", group, slots={"cpu": 2, "mem": "4g"}),
             AgentSpec(f"i-{group}-b", group, slots={"cpu": 2, "mem": "4g"})]
    async with local_agents(cfg.addr, cfg.namespace, specs) as (a, b):
        async def alive() -> bool:
            async with node.db.connect() as conn:
                return int(await conn.scalar(sa.select(sa.func.count()).select_from(t.agents).where(
                    t.agents.c.scaling_group == group, t.agents.c.status == "ALIVE")) or 0) == 2
        await until(alive, "the dummy agents did not register with the manager")
        yield Pair(group, a, b, await node.add_keypair({"max_containers_per_session": 4}))


def body(name: str, group: str, agents: list[str] | None, *, size: int = 1, mode: str = "single-node",
         cpu: str = "1", **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"scalingGroup": group, "resources": {"cpu": cpu, "mem": "256m"}}
    if agents is not None:
        config["agentList"] = agents
    return {"name": name, "image": "python", "clusterSize": size, "clusterMode": mode, "config": config, **extra}


async def session_kernels(node: Node, name: str) -> list[Any]:
    async with node.db.connect() as conn:
        return list((await conn.execute(
            sa.select(t.kernels).join(t.sessions, t.sessions.c.id == t.kernels.c.session_id)
            .where(t.sessions.c.name == name).order_by(t.kernels.c.local_rank))).all())


async def session_row(node: Node, name: str) -> Any:
    async with node.db.connect() as conn:
        return (await conn.execute(sa.select(t.sessions).where(t.sessions.c.name == name)
                                   .order_by(t.sessions.c.created_at.desc()).limit(1))).one()


async def test_only_superadmins_may_assign_agents(node: Node, pair: Pair) -> None:
    before = await node.rows(t.sessions)
    status, problem = await node.call("POST", "/session", body(f"as-{secrets.token_hex(3)}", pair.group,
                                                                 [pair.a.spec.id]), keys=pair.user)
    assert status == 403, problem
    assert problem["type"].endswith("/insufficient-privilege") and "agentList" in problem["msg"]
    assert await node.rows(t.sessions) == before  # nothing written


@pytest.mark.parametrize(("agents", "size", "mode", "needle"), [
    (["A", "B"], 1, "single-node", "exactly one agent"),
    (["A"], 2, "multi-node", "one agent per kernel (2)"),
    ([], 1, "single-node", "0 agents given"),
    (["i-no-such-agent"], 1, "single-node", "Unknown agent: i-no-such-agent"),
    (["OWN"], 1, "single-node", "is in resource group 'default'"),
])
async def test_bad_agent_lists_are_refused_naming_the_problem(
        node: Node, pair: Pair, agents: list[str], size: int, mode: str, needle: str) -> None:
    ids = {"A": pair.a.spec.id, "B": pair.b.spec.id, "OWN": node.agent.config.agent.id}
    agents = [ids.get(a, a) for a in agents]
    before = await node.rows(t.sessions)
    status, problem = await node.call("POST", "/session", body(f"as-{secrets.token_hex(3)}", pair.group, agents,
                                                                 size=size, mode=mode))
    assert status == 400, problem
    assert needle in problem.get("msg", "") + str(problem.get("data")), problem
    assert await node.rows(t.sessions) == before


async def test_kernels_go_exactly_where_assigned_and_wait_for_room_there(node: Node, pair: Pair) -> None:
    a, b = pair.a.spec.id, pair.b.spec.id
    # a multi-node session with both kernels on b, in rank order as listed
    multi = f"as-{secrets.token_hex(3)}"
    status, res = await node.call("POST", "/session", body(multi, pair.group, [b, b], size=2, mode="multi-node"))
    assert status == 201 and res["status"] == "RUNNING", res
    assert [k.agent for k in await session_kernels(node, multi)] == [b, b]
    status, res = await node.call("DELETE", f"/session/{multi}")
    assert status == 200, res

    # all of a's cores, then one more core asked of a: it waits, though b is free
    first, second = f"as-{secrets.token_hex(3)}", f"as-{secrets.token_hex(3)}"
    status, res = await node.call("POST", "/session", body(first, pair.group, [a], cpu="2"))
    assert status == 201 and res["status"] == "RUNNING", res
    status, res = await node.call("POST", "/session", body(second, pair.group, [a], enqueueOnly=True))
    assert status == 201 and res["status"] == "PENDING", res

    async def noted() -> Any:
        row = await session_row(node, second)
        return row if (row.status_data or {}).get("scheduler", {}).get("msg") else None
    row = await until(noted, "the scheduler did not look at the assigned session")
    assert row.status == "PENDING" and row.status_info == "no-available-instances"
    msg = row.status_data["scheduler"]["msg"]
    assert f"The assigned agent {a} has not enough free capacity" in msg and "cpu" in msg, msg
    assert [k.agent for k in await session_kernels(node, second)] == [a]  # the assignment is kept
    async with node.db.connect() as conn:
        occupied = (await conn.execute(sa.select(t.agents.c.occupied_slots)
                                       .where(t.agents.c.id == a))).scalar_one()
    assert occupied["cpu"] == "2"  # never over-allocated

    status, res = await node.call("DELETE", f"/session/{first}")
    assert status == 200, res

    async def running() -> bool:
        return bool((await session_row(node, second)).status == "RUNNING")
    await until(running, "the assigned session did not start once its agent had room")
    assert [k.agent for k in await session_kernels(node, second)] == [a]
    await node.call("DELETE", f"/session/{second}")


async def test_an_assigned_agent_that_is_not_alive_is_refused(node: Node, pair: Pair) -> None:
    lost = f"i-{pair.group}-lost"
    async with node.db.begin() as conn:
        await conn.execute(sa.insert(t.agents).values(
            id=lost, status="LOST", scaling_group=pair.group, architecture="x86_64", addr="http://127.0.0.1:9",
            available_slots={"cpu": "2", "mem": str(2**32)}, occupied_slots={}))
    status, problem = await node.call("POST", "/session", body(f"as-{secrets.token_hex(3)}", pair.group, [lost]))
    assert status == 400 and f"Agent {lost} is not alive (LOST)" in problem["msg"], problem
