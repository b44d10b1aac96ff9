"""Moving an agent to another resource group sticks (GraphQL ``modify_agent`` with
``scaling_group``), on the whole node with a real dummy-backend agent process: the manager asks
the agent first (RPC ``update_scaling_group``), the agent switches at once and keeps the group in
its agent.toml, so its later heartbeats and a restart keep it, and sessions of the new group land
on it. Refusals change nothing: a non-superadmin, an unknown group, an agent that cannot write
its agent.toml, an agent that is down."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa

from bai.manager.store import tables as t
from tests.fixtures.agents import AgentProcess, AgentSpec, local_agents
from tests.fixtures.halfstack import HalfStack

from .conftest import Node
from .test_multi_node import until

MODIFY_AGENT = "mutation($id: String!, $p: ModifyAgentInput!) { modify_agent(id: $id, props: $p) { ok msg } }"
HEARTBEAT = 0.5


@dataclass
class Moving:
    node: Node
    agent: AgentProcess
    src: str
    dst: str

    @property
    def toml(self) -> str:
        return (self.agent.workdir / "agent.toml").read_text()

    async def row(self) -> Any:
        async with self.node.db.connect() as conn:
            return (await conn.execute(sa.select(t.agents).where(t.agents.c.id == self.agent.spec.id))).one()

    async def modify(self, props: dict[str, Any], keys: tuple[str, str] | None = None) -> Any:
        status, body = await self.node.call("POST", "/admin/gql", {
            "query": MODIFY_AGENT, "variables": {"id": self.agent.spec.id, "p": props}}, keys=keys)
        assert status == 200, body
        return body

    async def heartbeats_after(self, since: datetime, count: int) -> list[Any]:
        """The agent's row as each of its next ``count`` heartbeats recorded after ``since`` left it."""
        seen: list[Any] = []
        while len(seen) < count:
            last = seen[-1].last_seen if seen else since

            async def newer(last: datetime = last) -> Any:
                row = await self.row()
                return row if row.last_seen is not None and row.last_seen > last else None
            seen.append(await until(newer, f"no heartbeat of {self.agent.spec.id} after {last}", 10.0))
        return seen


@pytest.fixture(scope="module")
async def moving(node: Node, halfstack: HalfStack) -> AsyncIterator[Moving]:
    tag = secrets.token_hex(3)
    src, dst = f"mv-{tag}-src", f"mv-{tag}-dst"
    async with node.db.begin() as conn:
        for group in (src, dst):
            await conn.execute(sa.insert(t.scaling_groups).values(name=group))
            await conn.execute(sa.insert(t.sgroups_for_domains).values(scaling_group=group, domain="default"))
    cfg = node.agent.config.etcd
    spec = AgentSpec(f"i-mv-{tag}", src, slots={"cpu": 2, "mem": "4g"}, heartbeat_interval=HEARTBEAT)
    async with local_agents(cfg.addr, cfg.namespace, [spec]) as (agent,):
        world = Moving(node, agent, src, dst)

        async def alive() -> bool:
            async with node.db.connect() as conn:
                row = (await conn.execute(sa.select(t.agents.c.status).where(t.agents.c.id == spec.id))).first()
            return row is not None and row.status == "ALIVE"
        await until(alive, "the agent did not register with the manager")
        yield world


async def test_refusals_change_nothing(moving: Moving) -> None:
    before, toml = await moving.row(), moving.toml
    assert before.scaling_group == moving.src

    user = await moving.node.add_keypair({})
    body = await moving.modify({"scaling_group": moving.dst}, keys=user)
    assert body["data"] == {"modify_agent": None} and body["errors"][0]["message"] == "superadmin privilege required"

    body = await moving.modify({"scaling_group": "mv-no-such-group"})
    assert body["data"]["modify_agent"] == {"ok": False, "msg": "No such scaling group: 'mv-no-such-group'."}

    # the agent cannot keep the group (its agent.toml became a directory): it refuses, and stays
    config = moving.agent.workdir / "agent.toml"
    config.rename(moving.agent.workdir / "agent.toml.away")
    config.mkdir()
    try:
        result = (await moving.modify({"schedulable": False, "scaling_group": moving.dst}))["data"]["modify_agent"]
    finally:
        config.rmdir()
        (moving.agent.workdir / "agent.toml.away").rename(config)
    assert result["ok"] is False and "did not move to" in result["msg"] and "not a regular file" in result["msg"]

    assert moving.toml == toml
    for row in await moving.heartbeats_after(before.last_seen, 1):
        assert (row.scaling_group, row.schedulable) == (moving.src, True)


async def test_a_move_sticks(moving: Moving) -> None:
    toml = moving.toml
    body = await moving.modify({"scaling_group": moving.dst})
    assert body == {"data": {"modify_agent": {"ok": True, "msg": "success"}}}, body
    moved = await moving.row()
    assert moved.scaling_group == moving.dst

    # the agent.toml says so, everything else in it as it was
    assert moving.toml == toml.replace(f'scaling-group = "{moving.src}"', f'scaling-group = "{moving.dst}"')
    assert moving.toml != toml

    # its heartbeats say so (the first one may have left the agent before it switched)
    for row in (await moving.heartbeats_after(moved.last_seen, 3))[1:]:
        assert (row.status, row.scaling_group) == ("ALIVE", moving.dst)

    # a session of the new group lands on it
    name = f"mv-{secrets.token_hex(3)}"
    status, res = await moving.node.call("POST", "/session", {
        "name": name, "image": "python",
        "config": {"scalingGroup": moving.dst, "resources": {"cpu": "1", "mem": "256m"}}})
    assert status == 201 and res["status"] == "RUNNING", res
    async with moving.node.db.connect() as conn:
        agents = (await conn.scalars(sa.select(t.kernels.c.agent).where(
            t.kernels.c.session_id == res["sessionId"]))).all()
    assert list(agents) == [moving.agent.spec.id]
    status, res = await moving.node.call("DELETE", f"/session/{name}")
    assert status == 200, res

    # and so does the agent once restarted: it reads the group from its agent.toml
    agent = moving.agent
    agent.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        await agent.proc.wait()
    stopped = time.time()
    log = await asyncio.to_thread(open, agent.log_path, "ab")
    try:
        agent.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from bai.agent.cli import main; main()", "start",
            "--config", str(agent.workdir / "agent.toml"),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    finally:
        log.close()

    async def back() -> Any:
        row = await moving.row()
        return row if row.status == "ALIVE" and row.last_seen.timestamp() > stopped else None
    restarted = await until(back, f"the agent did not come back:\n{agent.log_tail()}", 30.0)
    assert restarted.scaling_group == moving.dst
    for row in await moving.heartbeats_after(restarted.last_seen, 1):
        assert row.scaling_group == moving.dst


async def test_an_agent_that_is_down_is_not_moved(moving: Moving) -> None:
    # killed: no goodbye, so its row is still ALIVE, but nothing answers at its address
    moving.agent.proc.kill()
    async with asyncio.timeout(10):
        await moving.agent.proc.wait()
    before = await moving.row()
    assert before.status == "ALIVE"
    result = (await moving.modify({"schedulable": False, "scaling_group": moving.src}))["data"]["modify_agent"]
    assert result["ok"] is False and f"The agent {moving.agent.spec.id!r} did not move to" in result["msg"], result
    after = await moving.row()
    assert (after.scaling_group, after.schedulable) == (moving.dst, True)
    assert f'scaling-group = "{moving.dst}"' in moving.toml


async def test_an_agent_of_the_previous_protocol_is_not_moved(moving: Moving) -> None:
    """During a rolling upgrade an agent at protocol 1.0 lacks update_scaling_group: the manager
    does not call it (it would go back at its next heartbeat) and says why."""
    cfg = moving.node.agent.config.etcd
    spec = AgentSpec(f"i-mv-old-{secrets.token_hex(3)}", moving.src, heartbeat_interval=HEARTBEAT,
                     env={"BAI_PROTOCOL_VERSION": "1.0"})
    async with local_agents(cfg.addr, cfg.namespace, [spec]) as (old,):
        old_world = Moving(moving.node, old, moving.src, moving.dst)

        async def alive() -> Any:
            async with moving.node.db.connect() as conn:
                row = (await conn.execute(sa.select(t.agents).where(t.agents.c.id == spec.id))).first()
            return row if row is not None and row.status == "ALIVE" else None
        before = await until(alive, "the 1.0 agent did not register with the manager")
        result = (await old_world.modify({"scaling_group": moving.dst}))["data"]["modify_agent"]
        assert result["ok"] is False and "needs protocol 1.1" in result["msg"], result
        assert (await old_world.row()).scaling_group == before.scaling_group == moving.src
        assert f'scaling-group = "{moving.src}"' in old_world.toml
