"""A rolling restart of two agents, each running a session, on the node of real processes
(conftest): two more ``bai-agent`` processes (tests/fixtures/agents.py, Docker backend) in a
resource group of their own, started as the previous release (protocol 1.0) and rolled one at a
time onto this build (1.1) by installer/upgrade/rolling.py while a client keeps executing in both
sessions. Both sessions keep their state, none is lost, the scheduler places nothing on the
draining agent, and the longest pause of the execute loop is measured (target < 10 s)."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from bai.common import etcd as etcd_mod
from bai.common import protocol as proto
from bai.manager.store import tables as t
from installer.upgrade.rolling import ManagerAgentControl, Progress, rolling_restart
from tests.fixtures.agents import AgentProcess, AgentSpec, local_agents

from .conftest import Cluster, containers_of, record, until

pytestmark = pytest.mark.timeout(300)


@dataclass
class ExecLoop:
    """Executes ``print(state)`` in a session back to back until stopped; keeps when each call
    answered correctly and what each failure was."""

    session: str
    expected: str
    ok_at: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    async def run(self, cluster: Cluster, stop: asyncio.Event) -> None:
        self.ok_at.append(time.monotonic())
        while not stop.is_set():
            try:
                st, res = await cluster.call("POST", f"/session/{self.session}",
                                             {"mode": "query", "code": "print(state)", "runId": None}, deadline=30)
            except (TimeoutError, OSError) as exc:
                self.failures.append(repr(exc))
                continue
            stdout = "".join(text for kind, text in res["result"]["console"] if kind == "stdout") \
                if st == 200 and isinstance(res, dict) and "result" in res else None
            if stdout == self.expected:
                self.ok_at.append(time.monotonic())
            else:
                self.failures.append(f"{st}: {res}")
                await asyncio.sleep(0.05)

    def longest_gap(self) -> float:
        return max((b - a for a, b in zip(self.ok_at, self.ok_at[1:], strict=False)), default=0.0)


async def restart_process(agent: AgentProcess, env: dict[str, str]) -> None:
    """SIGTERM (the agent detaches from its kernels), then the same agent.toml in a new process
    with ``env`` (the new release)."""
    if agent.proc.returncode is None:
        agent.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        await agent.proc.wait()
    log = await asyncio.to_thread(open, agent.log_path, "ab")
    try:
        agent.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from bai.agent.cli import main; main()", "start",
            "--config", str(agent.workdir / "agent.toml"), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**{k: v for k, v in os.environ.items() if k != proto.ENV_OVERRIDE}, "PYTHONUNBUFFERED": "1", **env})
    finally:
        log.close()


@pytest.fixture
async def pair(cluster: Cluster, cluster_procs: dict[str, Any]) -> AsyncIterator[tuple[str, list[AgentProcess], str]]:
    etcd_cfg = tomllib.loads((cluster.root / "agent.toml").read_text())["etcd"]
    async with etcd_mod.connect(etcd_cfg["addr"], etcd_cfg["namespace"]) as etcd:
        secret = await etcd.get("config/agent/rpc-secret")
    assert secret
    group = f"roll-{secrets.token_hex(3)}"
    async with cluster.db.begin() as conn:
        await conn.execute(sa.insert(t.scaling_groups).values(name=group))
        await conn.execute(sa.insert(t.sgroups_for_domains).values(scaling_group=group, domain="default"))
    old = {proto.ENV_OVERRIDE: "1.0"}  # the previous release
    specs = [AgentSpec(f"i-{group}-{n}", group, backend="docker", env=old) for n in ("a", "b")]
    async with local_agents(etcd_cfg["addr"], etcd_cfg["namespace"], specs) as agents:
        async def both_alive() -> bool:
            async with cluster.db.connect() as conn:
                n = await conn.scalar(sa.select(sa.func.count()).select_from(t.agents).where(
                    t.agents.c.scaling_group == group, t.agents.c.status == "ALIVE"))
            return n == 2
        await until(both_alive, "the two agents did not register", 60)
        yield group, agents, secret


async def set_schedulable(cluster: Cluster, agent_id: str, value: bool) -> None:
    async with cluster.db.begin() as conn:
        await conn.execute(t.agents.update().where(t.agents.c.id == agent_id).values(schedulable=value))


async def create_in(cluster: Cluster, group: str, name: str) -> tuple[str, str]:
    """A session in the group (blocking); returns its id and the agent its kernel is on."""
    st, body = await cluster.call("POST", "/session", {
        "name": name, "image": "python", "config": {"scalingGroup": group, "resources": {"cpu": "1", "mem": "256m"}}},
        deadline=60)
    assert st == 201 and body["status"] == "RUNNING", (st, body)
    async with cluster.db.connect() as conn:
        agent = await conn.scalar(sa.select(t.kernels.c.agent).where(t.kernels.c.session_id == body["sessionId"]))
    return str(body["sessionId"]), str(agent)


async def test_rolling_restart_keeps_sessions_and_never_places_on_the_draining_agent(
        cluster: Cluster, pair: tuple[str, list[AgentProcess], str]) -> None:
    group, (a, b), secret = pair
    by_id = {a.spec.id: a, b.spec.id: b}
    # one session on each agent: the other one unschedulable while it is created
    sessions: dict[str, tuple[str, str]] = {}  # agent -> (session name, id)
    for agent, other in ((a, b), (b, a)):
        await set_schedulable(cluster, other.spec.id, False)
        name = f"roll-{agent.spec.id[-1]}-{secrets.token_hex(2)}"
        sid, placed = await create_in(cluster, group, name)
        await set_schedulable(cluster, other.spec.id, True)
        assert placed == agent.spec.id
        sessions[agent.spec.id] = (name, sid)
        assert await cluster.run(name, f"state = {name!r}") == ""
    containers_before = {sid: [c["Id"] for c in await containers_of(agent_id, sid)]
                         for agent_id, (_, sid) in sessions.items()}

    stop = asyncio.Event()
    loops = [ExecLoop(name, f"{name}\n") for name, _ in sessions.values()]
    running = [asyncio.create_task(loop.run(cluster, stop)) for loop in loops]
    probes: dict[str, str] = {}  # draining agent -> where a session created meanwhile went
    probe_names: list[str] = []
    stages: list[Progress] = []

    async def restart(agent_id: str) -> None:
        probe_names.append(f"probe-{agent_id[-1]}-{secrets.token_hex(2)}")
        _, probes[agent_id] = await create_in(cluster, group, probe_names[-1])
        await restart_process(by_id[agent_id], {})  # this build: protocol 1.1

    began = time.monotonic()
    try:
        async with ManagerAgentControl(cluster.api, cluster.access_key, cluster.secret_key, secret) as control:
            outcomes = await rolling_restart([a.spec.id, b.spec.id], control, restart, on_progress=stages.append)
        roll_seconds = time.monotonic() - began
        await asyncio.sleep(0.5)  # a few more round trips on the new agents
    finally:
        stop.set()
        await asyncio.gather(*running)

    assert [o.agent_id for o in outcomes] == [a.spec.id, b.spec.id]
    for o in outcomes:
        assert (o.protocol_before, o.protocol_after) == ("1.0", "1.1"), o
        assert set(o.kernels_before) <= set(o.kernels_after), o
    assert [s.stage for s in stages if s.agent_id == a.spec.id] == [
        "draining", "drained", "restarting", "waiting", "ready"]
    # the scheduler never placed a session on the agent being drained
    assert probes == {a.spec.id: b.spec.id, b.spec.id: a.spec.id}
    async with cluster.db.connect() as conn:
        kernels = (await conn.execute(sa.select(t.kernels.c.agent, t.kernels.c.created_at).where(
            t.kernels.c.agent.in_(list(by_id))))).all()
    for o in outcomes:
        window = (datetime.fromtimestamp(o.drained_at, UTC), datetime.fromtimestamp(o.undrained_at, UTC))
        assert not [k for k in kernels if k.agent == o.agent_id and window[0] <= k.created_at <= window[1]]
    # zero sessions lost: the same containers, RUNNING, with their state
    for agent_id, (name, sid) in sessions.items():
        assert [c["Id"] for c in await containers_of(agent_id, sid)] == containers_before[sid]
        assert await cluster.run(name, "print(state)") == f"{name}\n"
    statuses = await cluster.session_statuses()
    assert all(statuses[name] == "RUNNING" for name, _ in sessions.values())
    async with cluster.db.connect() as conn:
        rows = {r.id: r for r in await conn.execute(sa.select(t.agents).where(t.agents.c.id.in_(list(by_id))))}
    assert all(r.status == "ALIVE" and r.schedulable and r.version.endswith(";protocol=1.1") for r in rows.values())

    longest = max(loop.longest_gap() for loop in loops)
    record("rolling agent restart (2 agents, 1.0 -> 1.1)", longest_execute_pause_s=longest,
           restart_s=[round(o.restart_seconds, 2) for o in outcomes], roll_s=roll_seconds,
           round_trips=sum(len(loop.ok_at) - 1 for loop in loops),
           failed_round_trips=sum(len(loop.failures) for loop in loops), sessions_lost=0)
    assert not [f for loop in loops for f in loop.failures], [loop.failures for loop in loops]
    assert longest < 10, longest

    # An agent that stays down longer than the manager waits for it: a retryable 503, not a 500;
    # the session is still there when the agent is back.
    name_b, _ = sessions[b.spec.id]
    b.proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        await b.proc.wait()
    began = time.monotonic()
    st, res = await cluster.call("POST", f"/session/{name_b}", {"mode": "query", "code": "print(state)", "runId": None},
                                 deadline=60)
    waited = time.monotonic() - began
    assert st == 503 and res["type"].endswith("/service-unavailable") and "restarting" in res["msg"], (st, res)
    assert 9 < waited < 30, waited
    await restart_process(b, {})  # already stopped: just started again
    assert await cluster.run(name_b, "print(state)", deadline=60) == f"{name_b}\n"
    for name in [*(n for n, _ in sessions.values()), *probe_names]:
        await cluster.call("DELETE", f"/session/{name}")
