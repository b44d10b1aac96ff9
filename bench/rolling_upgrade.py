"""Rolling agent upgrade benchmark (issue 13): how long a running session's execute round trip is
interrupted while its agent is restarted onto a new release, next to a plain agent restart.

A throwaway node (PostgreSQL, Redis, etcd of its own; the real manager in-process) with two
Docker-backend ``bai-agent`` processes in one resource group, started as the previous release
(protocol 1.0, ``BAI_PROTOCOL_VERSION``), one session on each with a variable set. A client runs
``print(state)`` round trips back to back through the manager's REST API on both sessions for
the whole run, and records when each one answered correctly. In the same run:

  (1) plain restarts (the raw baseline): each agent in turn gets SIGTERM and is started again, as
      an operator would, with no drain: seconds from SIGTERM until the new process serves with its
      kernel re-adopted (and how much of it the old process took to stop), and the longest pause
      of the round trips;
  (2) rolling upgrade: installer/upgrade/rolling.py takes both agents, one at a time, onto this
      build (protocol 1.1): drain, restart, wait until back, undrain. Longest pause of any round
      trip, each agent's restart time, round trips that failed, sessions lost (not RUNNING in the
      same container with their state afterwards).

Targets: longest interruption < 10 s, 0 sessions lost.

Usage: /opt/bai/venv/bin/python bench/rolling_upgrade.py [--json]
(root, Docker running; builds the kernel image if missing, as the tests do; ~1 minute.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bai.common import etcd as etcd_mod  # noqa: E402
from bai.common import protocol as proto  # noqa: E402
from bai.common.agent_rpc import AgentClient, AgentError  # noqa: E402
from bai.common.auth import API_VERSION, sign_request  # noqa: E402
from bai.manager.server import build_app  # noqa: E402
from bai.manager.store import tables as t  # noqa: E402
from installer.upgrade.rolling import ManagerAgentControl, rolling_restart  # noqa: E402

TARGET_PAUSE = 10.0
#: The previous release's protocol, which the agents start with.
OLD = {proto.ENV_OVERRIDE: "1.0"}


@dataclass
class Api:
    client: TestClient
    keys: tuple[str, str]

    @property
    def url(self) -> str:
        return f"http://{self.client.host}:{self.client.port}"

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        ctype = "application/json" if data is not None else "text/plain"
        host = f"{self.client.host}:{self.client.port}"
        signed = sign_request(*self.keys, method, path, host, ctype)
        resp = await self.client.request(method, path, data=data, headers={
            "Content-Type": ctype, "X-BackendAI-Version": API_VERSION, "Host": host,
            "Date": signed.date, "Authorization": signed.authorization})
        raw = await resp.read()
        return resp.status, json.loads(raw) if raw else None


@dataclass
class ExecLoop:
    name: str
    ok_at: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    async def run(self, api: Api, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                st, res = await asyncio.wait_for(api.call("POST", f"/session/{self.name}", {
                    "mode": "query", "code": "print(state)", "runId": None}), 60)
            except (TimeoutError, OSError) as exc:
                self.failures.append(repr(exc))
                continue
            out = "".join(x for kind, x in res["result"]["console"] if kind == "stdout") \
                if st == 200 and isinstance(res, dict) and "result" in res else None
            if out == f"{self.name}\n":
                self.ok_at.append(time.monotonic())
            else:
                self.failures.append(f"{st}: {str(res)[:200]}")
                await asyncio.sleep(0.05)

    def longest_pause(self, since: float, until: float) -> float:
        marks = [since, *[m for m in self.ok_at if since < m < until]]
        after = [m for m in self.ok_at if m >= until]
        if after:
            marks.append(after[0])
        return max((b - a for a, b in zip(marks, marks[1:], strict=False)), default=0.0)


async def start_agent(workdir: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    log = await asyncio.to_thread(open, workdir / "agent.log", "ab")
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from bai.agent.cli import main; main()", "start", "--config",
            str(workdir / "agent.toml"), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**{k: v for k, v in os.environ.items() if k != proto.ENV_OVERRIDE}, "PYTHONUNBUFFERED": "1", **env})
    finally:
        log.close()


async def until(check: Callable[[], Awaitable[bool]], what: str, deadline: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not await check():
        if loop.time() > end:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def bench() -> dict[str, Any]:
    from tests.fixtures.agents import AgentSpec, local_agents
    from tests.fixtures.halfstack import halfstack
    from tests.fixtures.images import kernel_image
    from tests.fixtures.node_parts import node_parts

    kernel_image.__wrapped__()  # type: ignore[attr-defined]
    with contextlib.contextmanager(halfstack.__wrapped__)() as stack:  # type: ignore[attr-defined]
        async with node_parts(stack, "rollbench") as parts:
            client = TestClient(TestServer(build_app(parts.manager_config), host="127.0.0.1"))
            await client.start_server()
            api = Api(client, (parts.access_key, parts.secret_key))
            etcd_cfg = parts.manager_config.etcd
            async with etcd_mod.connect(etcd_cfg.addr, etcd_cfg.namespace) as etcd:
                secret = await etcd.get("config/agent/rpc-secret")
            assert secret
            group = f"roll-{secrets.token_hex(3)}"
            async with parts.db.begin() as conn:
                await conn.execute(sa.insert(t.scaling_groups).values(name=group))
                await conn.execute(sa.insert(t.sgroups_for_domains).values(scaling_group=group, domain="default"))
            specs = [AgentSpec(f"i-{group}-{n}", group, backend="docker", env=OLD) for n in ("a", "b")]
            try:
                async with local_agents(etcd_cfg.addr, etcd_cfg.namespace, specs) as agents:
                    return await _measure(api, parts.db, group, agents, secret)
            finally:
                await client.close()


async def _alive_count(db: Any, group: str) -> int:
    async with db.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(t.agents).where(
            t.agents.c.scaling_group == group, t.agents.c.status == "ALIVE")) or 0)


async def _measure(api: Api, db: Any, group: str, agents: list[Any], secret: str) -> dict[str, Any]:
    a, b = agents

    async def both_alive() -> bool:
        return await _alive_count(db, group) == 2
    await until(both_alive, "the agents did not register")

    async def set_schedulable(agent_id: str, value: bool) -> None:
        async with db.begin() as conn:
            await conn.execute(t.agents.update().where(t.agents.c.id == agent_id).values(schedulable=value))

    names: dict[str, str] = {}
    for agent, other in ((a, b), (b, a)):
        await set_schedulable(other.spec.id, False)
        name = f"bench-{agent.spec.id[-1]}-{secrets.token_hex(2)}"
        st, body = await api.call("POST", "/session", {
            "name": name, "image": "python", "config": {"scalingGroup": group, "resources": {"cpu": "1", "mem": "256m"}}})
        await set_schedulable(other.spec.id, True)
        assert st == 201 and body["status"] == "RUNNING", body
        st, _ = await api.call("POST", f"/session/{name}", {"mode": "query", "code": f"state = {name!r}", "runId": None})
        assert st == 200
        names[agent.spec.id] = name

    async def containers() -> dict[str, list[str]]:
        async with aiodocker.Docker() as docker:
            return {n: sorted(c.id for c in await docker.containers.list(filters=json.dumps(
                {"label": [f"ai.backend.owner={agent_id}"], "status": ["running"]})))
                for agent_id, n in names.items()}
    before = await containers()

    stop = asyncio.Event()
    loops = {agent_id: ExecLoop(n) for agent_id, n in names.items()}
    tasks = [asyncio.create_task(loop.run(api, stop)) for loop in loops.values()]
    try:
        await asyncio.sleep(1.0)  # warm: round trips flowing on both
        # (1) plain restarts, a then b: SIGTERM, start again, until it serves with its kernel
        plain_began = time.monotonic()
        plain_restarts = []
        for agent in (a, b):
            began = time.monotonic()
            agent.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(agent.proc.wait(), 30)
            stopped = time.monotonic() - began
            agent.proc = await start_agent(agent.workdir, OLD)
            async with AgentClient(agent.addr, secret, reconnect_window=0) as rpc:
                async def serving_with_kernel() -> bool:
                    try:
                        return len(await rpc.list_kernels()) == 1
                    except AgentError:
                        return False
                await until(serving_with_kernel, "the restarted agent did not serve again")
            plain_restarts.append((time.monotonic() - began, stopped))

            async def both_back() -> bool:
                return await _alive_count(db, group) == 2
            await until(both_back, "the restarted agent did not come back")
        await asyncio.sleep(1.0)
        plain_end = time.monotonic()
        plain_pause = max(loop.longest_pause(plain_began, plain_end) for loop in loops.values())
        plain_failures = sum(len(loop.failures) for loop in loops.values())

        # (2) the rolling upgrade of both onto this build
        by_id = {agent.spec.id: agent for agent in agents}

        async def restart(agent_id: str) -> None:
            agent = by_id[agent_id]
            agent.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(agent.proc.wait(), 30)
            agent.proc = await start_agent(agent.workdir, {})

        roll_began = time.monotonic()
        async with ManagerAgentControl(api.url, *api.keys, secret) as control:
            outcomes = await rolling_restart([a.spec.id, b.spec.id], control, restart)
        roll_seconds = time.monotonic() - roll_began
        await asyncio.sleep(1.0)
        roll_end = time.monotonic()
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    roll_pause = max(loop.longest_pause(roll_began, roll_end) for loop in loops.values())
    roll_failures = sum(len(loop.failures) for loop in loops.values()) - plain_failures
    after = await containers()
    lost = 0
    async with db.connect() as conn:
        statuses = dict((await conn.execute(sa.select(t.sessions.c.name, t.sessions.c.status))).all())
    for name in names.values():
        st, res = await api.call("POST", f"/session/{name}", {"mode": "query", "code": "print(state)", "runId": None})
        answered = st == 200 and [x for k, x in res["result"]["console"] if k == "stdout"] == [f"{name}\n"]
        if not answered or statuses.get(name) != "RUNNING" or after.get(name) != before.get(name):
            lost += 1
    for name in names.values():
        await api.call("DELETE", f"/session/{name}")
    return {
        "plain_restart_s": [round(total, 2) for total, _ in plain_restarts],
        "plain_restart_stop_s": [round(stopped, 2) for _, stopped in plain_restarts],
        "plain_restart_longest_pause_s": round(plain_pause, 2),
        "plain_restart_failed_round_trips": plain_failures,
        "rolling_longest_pause_s": round(roll_pause, 2),
        "rolling_agent_restart_s": [round(o.restart_seconds, 2) for o in outcomes],
        "rolling_total_s": round(roll_seconds, 2),
        "rolling_failed_round_trips": roll_failures,
        "protocols": [f"{o.protocol_before} -> {o.protocol_after}" for o in outcomes],
        "round_trips": sum(len(loop.ok_at) for loop in loops.values()),
        "sessions_lost": lost,
        "ok": roll_pause < TARGET_PAUSE and lost == 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = asyncio.run(bench())
    if args.json:
        print(json.dumps(report))
    else:
        print(f"plain agent restarts (raw baseline): {report['plain_restart_s']} s from SIGTERM to serving with "
              f"its kernel (of which the old process stopping: {report['plain_restart_stop_s']} s); longest execute "
              f"pause {report['plain_restart_longest_pause_s']:.2f} s, "
              f"{report['plain_restart_failed_round_trips']} round trips failed")
        print(f"rolling upgrade of 2 agents ({', '.join(report['protocols'])}): longest execute interruption "
              f"{report['rolling_longest_pause_s']:.2f} s (target < {TARGET_PAUSE:g} s), per-agent restart "
              f"{report['rolling_agent_restart_s']} s, whole roll {report['rolling_total_s']:.2f} s, "
              f"{report['rolling_failed_round_trips']} round trips failed, {report['sessions_lost']} sessions lost "
              f"({report['round_trips']} round trips in all)")
        print("OK" if report["ok"] else "TARGET MISSED")
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
