"""Rolling restart (or minor upgrade) of agents, one at a time, with their sessions kept running.

For each agent, in the order given:

1. drain: mark it unschedulable (the manager's ``schedulable`` flag: the scheduler places no new
   session there; running ones are untouched), then wait until nothing is being created on it
   (no kernel the manager booked there that the agent does not run yet, none starting);
2. restart: the caller's ``restart(agent_id)`` replaces the agent process (with the new code for
   an upgrade); the kernels' containers keep running meanwhile;
3. wait until it is back: the new process serves (``agent_info.serving_since`` after the restart:
   an agent serves only once it has re-adopted its containers), runs every kernel it ran before,
   and the manager has it ALIVE again (its heartbeat was accepted, so its protocol version is
   compatible);
4. undrain: its ``schedulable`` flag back to what it was; then the next agent.

A failure stops the roll at that agent (the others are not touched) with :class:`RollingError`;
an agent that did not come back stays drained, so nothing is placed on a half-working agent.

The engine passes an :class:`AgentControl` (how to see and drain agents: :class:`ManagerAgentControl`
talks to the manager's GraphQL API and to the agents' RPC) and the ``restart`` hook (on hosts:
restart the agent's service). Nothing here knows about hosts, pyinfra or the UI.

During the restart, running sessions' execute calls wait for the agent (the manager retries a
refused connection for up to 10 s: bai.common.agent_rpc.RECONNECTING_METHODS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
import tomllib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from bai.common.agent_rpc import AgentClient, AgentError, InvalidInput, UnsupportedCall
from bai.common.auth import API_VERSION, sign_request

#: Kernel statuses (as an agent lists them) of a kernel still being created.
CREATING = frozenset({"PREPARING", "PULLING"})


@dataclass(frozen=True)
class AgentView:
    """The manager's view of one agent."""

    id: str
    status: str
    schedulable: bool
    addr: str
    #: Kernels the manager books on it (being created, running, terminating).
    container_count: int
    protocol: str | None = None
    status_changed: float | None = None


class AgentControl(Protocol):
    async def describe(self, agent_id: str) -> AgentView:
        """The manager's view of the agent (raises if unknown)."""

    async def set_schedulable(self, agent_id: str, schedulable: bool) -> None: ...

    async def kernels_on(self, addr: str) -> dict[str, str]:
        """Kernel id -> status, as the agent process at ``addr`` lists them (raises if it cannot be reached)."""

    async def serving_since(self, addr: str) -> float | None:
        """When the agent process at ``addr`` began serving (Unix time); None if it cannot say
        (an agent of protocol 1.0) or cannot be reached."""


#: ``restart(agent_id)``: replace the agent's process; returns once the new one was started.
Restart = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Progress:
    agent_id: str
    #: "draining", "drained", "restarting", "waiting", "ready", "failed"
    stage: str
    detail: str = ""
    index: int = 0
    total: int = 0


@dataclass
class AgentOutcome:
    agent_id: str
    kernels_before: list[str] = field(default_factory=list)
    kernels_after: list[str] = field(default_factory=list)
    #: Seconds from asking for the restart to the agent being back (serving, re-adopted, ALIVE).
    restart_seconds: float = 0.0
    protocol_before: str | None = None
    protocol_after: str | None = None
    #: Unix times the agent was drained and undrained (what a check of placements needs).
    drained_at: float = 0.0
    undrained_at: float = 0.0


class RollingError(Exception):
    def __init__(self, agent_id: str, reason: str, done: list[AgentOutcome]) -> None:
        super().__init__(f"agent {agent_id}: {reason}")
        self.agent_id, self.reason, self.done = agent_id, reason, done


async def _poll(check: Callable[[], Awaitable[str | None]], deadline: float, interval: float) -> str | None:
    """Run ``check`` (None: done, else what is still awaited) until done or the deadline; returns
    the last thing awaited when the deadline passed."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while True:
        waiting = await check()
        if waiting is None:
            return None
        if loop.time() >= end:
            return waiting
        await asyncio.sleep(interval)


async def rolling_restart(agent_ids: Sequence[str], control: AgentControl, restart: Restart, *,
                          drain_timeout: float = 120.0, ready_timeout: float = 120.0, poll_interval: float = 0.2,
                          on_progress: Callable[[Progress], None] | None = None) -> list[AgentOutcome]:
    """Restart the agents one at a time (see the module's doc); returns what happened to each.
    Every agent must be ALIVE first (else RollingError before anything changes)."""
    if len(set(agent_ids)) != len(agent_ids):
        raise ValueError("agent ids must be distinct")
    total = len(agent_ids)

    def report(agent_id: str, stage: str, detail: str = "", index: int = 0) -> None:
        if on_progress is not None:
            on_progress(Progress(agent_id, stage, detail, index, total))

    views = {a: await control.describe(a) for a in agent_ids}
    not_alive = [f"{a} is {v.status}" for a, v in views.items() if v.status != "ALIVE"]
    if not_alive:
        raise RollingError(agent_ids[0], "every agent must be ALIVE before a rolling restart: "
                           + ", ".join(not_alive), [])
    done: list[AgentOutcome] = []
    for index, agent_id in enumerate(agent_ids, 1):
        done.append(await _restart_one(agent_id, index, control, restart, drain_timeout, ready_timeout,
                                       poll_interval, report, done))
    return done


@dataclass
class Drained:
    """An agent drained for its restart: what :func:`await_back` needs afterwards (also as JSON,
    between two commands on the manager host: :func:`main`)."""

    agent_id: str
    was_schedulable: bool
    kernels_before: list[str]
    protocol_before: str | None
    drained_at: float
    #: The clock (Unix time, where the control runs) when the drain ended: the restart comes
    #: after it, so the new process serves since a later time.
    restart_after: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Drained:
        return cls(agent_id=str(doc["agent_id"]), was_schedulable=bool(doc["was_schedulable"]),
                   kernels_before=[str(k) for k in doc["kernels_before"]],
                   protocol_before=doc.get("protocol_before"), drained_at=float(doc["drained_at"]),
                   restart_after=float(doc["restart_after"]))


Report = Callable[[str, str, str, int], None]


def _no_report(agent_id: str, stage: str, detail: str = "", index: int = 0) -> None:
    return None


async def drain_agent(agent_id: str, control: AgentControl, *, drain_timeout: float = 120.0,
                      poll_interval: float = 0.2, report: Report = _no_report, index: int = 0,
                      done: list[AgentOutcome] | None = None) -> Drained:
    """Step 1: no new sessions on the agent, and nothing still being created on it. Raises
    :class:`RollingError` (the flag put back as it was) when it does not get quiet in time."""
    view = await control.describe(agent_id)
    if view.status != "ALIVE":
        raise RollingError(agent_id, f"the agent is {view.status}, not ALIVE: not draining it",
                           done or [])
    was_schedulable = view.schedulable
    report(agent_id, "draining", "no new sessions placed here", index)
    drained_at = time.time()
    if was_schedulable:
        await control.set_schedulable(agent_id, False)
    kernels_before: list[str] = []

    async def quiet() -> str | None:
        # Placements decided before the flag changed are committed (the scheduler locks the
        # agent rows); wait until the agent runs all of them, none still starting.
        now = await control.describe(agent_id)
        try:
            kernels = await control.kernels_on(now.addr)
        except (AgentError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            return f"the agent does not answer ({exc})"
        creating = sorted(k for k, status in kernels.items() if status in CREATING)
        if creating:
            return f"kernels still starting: {', '.join(creating)}"
        if now.container_count > len(kernels):
            return f"{now.container_count - len(kernels)} kernels booked by the manager not on the agent yet"
        kernels_before[:] = sorted(kernels)
        return None

    waiting = await _poll(quiet, drain_timeout, poll_interval)
    if waiting is not None:
        if was_schedulable:
            await control.set_schedulable(agent_id, True)
        report(agent_id, "failed", f"not drained within {drain_timeout:g} s: {waiting}", index)
        raise RollingError(agent_id, f"not drained within {drain_timeout:g} s ({waiting}); left schedulable "
                           "as it was, nothing restarted", done or [])
    report(agent_id, "drained", f"{len(kernels_before)} running kernels", index)
    return Drained(agent_id, was_schedulable, kernels_before, view.protocol, drained_at, time.time())


async def await_back(drained: Drained, control: AgentControl, *, ready_timeout: float = 120.0,
                     poll_interval: float = 0.2, report: Report = _no_report, index: int = 0,
                     done: list[AgentOutcome] | None = None) -> AgentOutcome:
    """Step 3 and 4, after the restart: the new process serves with every kernel it ran before
    and the manager has it ALIVE; then its flag goes back. Raises :class:`RollingError` (the agent
    stays drained) when it is not back in time or lost kernels."""
    agent_id, began = drained.agent_id, drained.restart_after
    outcome = AgentOutcome(agent_id, kernels_before=list(drained.kernels_before),
                           protocol_before=drained.protocol_before, drained_at=drained.drained_at)

    async def back() -> str | None:
        now = await control.describe(agent_id)
        since = await control.serving_since(now.addr)
        if since is None:
            # An agent that cannot say (protocol 1.0): its status went TERMINATED -> ALIVE.
            if now.status_changed is None or now.status_changed < began:
                return "the restarted agent to register"
        elif since < began:
            return "the new agent process to serve"
        if now.status != "ALIVE":
            return f"the manager to accept its heartbeat (status {now.status})"
        try:
            kernels = await control.kernels_on(now.addr)
        except (AgentError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            return f"the agent to answer ({exc})"
        outcome.kernels_after, outcome.protocol_after = sorted(kernels), now.protocol
        return None

    waiting = await _poll(back, ready_timeout, poll_interval)
    if waiting is not None:
        report(agent_id, "failed", f"not back within {ready_timeout:g} s: waiting for {waiting}", index)
        raise RollingError(agent_id, f"not back within {ready_timeout:g} s (waiting for {waiting}); "
                           "the agent stays drained", done or [])
    outcome.restart_seconds = time.time() - began
    missing = sorted(set(outcome.kernels_before) - set(outcome.kernels_after))
    if missing:
        report(agent_id, "failed", f"kernels not re-adopted: {', '.join(missing)}", index)
        raise RollingError(agent_id, f"kernels not re-adopted after the restart: {', '.join(missing)} "
                           "(destroyed meanwhile, or lost); the agent stays drained", done or [])
    if drained.was_schedulable:
        await control.set_schedulable(agent_id, True)
    outcome.undrained_at = time.time()
    report(agent_id, "ready", f"back in {outcome.restart_seconds:.1f} s with {len(outcome.kernels_after)} kernels, "
           f"protocol {outcome.protocol_after}", index)
    return outcome


async def _restart_one(agent_id: str, index: int, control: AgentControl, restart: Restart, drain_timeout: float,
                       ready_timeout: float, poll_interval: float, report: Report,
                       done: list[AgentOutcome]) -> AgentOutcome:
    drained = await drain_agent(agent_id, control, drain_timeout=drain_timeout, poll_interval=poll_interval,
                                report=report, index=index, done=done)
    drained.restart_after = time.time()
    report(agent_id, "restarting", "", index)
    try:
        await restart(agent_id)
    except Exception as exc:
        report(agent_id, "failed", f"restart failed: {exc}", index)
        raise RollingError(agent_id, f"the restart failed: {exc!r}; the agent stays drained", done) from exc
    report(agent_id, "waiting", "for the agent to serve again with its kernels", index)
    return await await_back(drained, control, ready_timeout=ready_timeout, poll_interval=poll_interval,
                            report=report, index=index, done=done)


# --- the manager's API and the agents' RPC ----------------------------------------------------


class ManagerAgentControl:
    """:class:`AgentControl` over the manager's GraphQL API (a superadmin keypair) and the agents'
    RPC (``config/agent/rpc-secret``)."""

    def __init__(self, api_url: str, access_key: str, secret_key: str, rpc_secret: str, *,
                 timeout: float = 10.0) -> None:
        self.api_url = api_url.rstrip("/")
        self._keys = (access_key, secret_key)
        self._rpc_secret = rpc_secret
        self._timeout = timeout
        self._http: aiohttp.ClientSession | None = None
        self._agents: dict[str, AgentClient] = {}
        # A connection per call: polls are seconds apart, and an agent being stopped waits for
        # its idle keep-alive connections to go (bai.agent.server.STOP_GRACE) before it exits.
        self._rpc: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ManagerAgentControl:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for client in self._agents.values():
            await client.close()
        self._agents.clear()
        if self._rpc is not None:
            await self._rpc.close()
            self._rpc = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _gql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        path, ctype = "/admin/gql", "application/json"
        host = self.api_url.split("://", 1)[-1].split("/", 1)[0]
        signed = sign_request(*self._keys, "POST", path, host, ctype)
        headers = {"Content-Type": ctype, "X-BackendAI-Version": API_VERSION, "Host": host,
                   "Date": signed.date, "Authorization": signed.authorization}
        async with self._http.post(self.api_url + path, data=json.dumps({"query": query, "variables": variables}),
                                   headers=headers, timeout=aiohttp.ClientTimeout(total=self._timeout)) as resp:
            body = await resp.json(content_type=None)
        if resp.status != 200 or not isinstance(body, dict) or body.get("errors"):
            raise RuntimeError(f"the manager answered {resp.status}: {body}")
        data: dict[str, Any] = body["data"]
        return data

    async def describe(self, agent_id: str) -> AgentView:
        data = await self._gql(
            "query($id: String!) { agent(agent_id: $id) "
            "{ id status schedulable addr container_count status_changed local_config } }", {"id": agent_id})
        agent = data.get("agent")
        if not agent:
            raise RuntimeError(f"the manager knows no agent {agent_id!r}")
        local = json.loads(agent.get("local_config") or "{}").get("agent", {})
        changed = agent.get("status_changed")
        return AgentView(
            id=agent_id, status=str(agent["status"]), schedulable=bool(agent["schedulable"]), addr=str(agent["addr"]),
            container_count=int(agent.get("container_count") or 0), protocol=local.get("protocol"),
            status_changed=datetime.fromisoformat(changed).timestamp() if changed else None)

    async def set_schedulable(self, agent_id: str, schedulable: bool) -> None:
        data = await self._gql(
            "mutation($id: String!, $s: Boolean) { modify_agent(id: $id, props: {schedulable: $s}) { ok msg } }",
            {"id": agent_id, "s": schedulable})
        if not data["modify_agent"]["ok"]:
            raise RuntimeError(f"cannot change agent {agent_id}: {data['modify_agent']['msg']}")

    def _client(self, addr: str) -> AgentClient:
        client = self._agents.get(addr)
        if client is None:
            if self._rpc is None:
                self._rpc = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
            client = self._agents[addr] = AgentClient(addr, self._rpc_secret, session=self._rpc, reconnect_window=0)
        return client

    async def kernels_on(self, addr: str) -> dict[str, str]:
        return {str(k["kernel_id"]): str(k["status"]) for k in await self._client(addr).list_kernels()}

    async def serving_since(self, addr: str) -> float | None:
        client = self._client(addr)
        try:
            info = await client.agent_info()
        except UnsupportedCall:
            client.peer_protocol = None  # it may be upgraded by the next call: ask again then
            return None
        except InvalidInput as exc:
            if exc.status == 404:  # an agent of 1.0 we had not heard from before
                return None
            raise
        except (AgentError, aiohttp.ClientError, OSError, TimeoutError):
            return None
        since = info.get("serving_since")
        return float(since) if isinstance(since, (int, float)) else None


# --- on the manager host: one step of a rolling restart per command (the upgrade playbook) ----


def _client_env(path: Path) -> dict[str, str]:
    """The ``export KEY=value`` lines of the client env file (values shell-quoted)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export "):]
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            words = shlex.split(value) if value else [""]
            out[key] = words[0] if words else ""
    return out


def control_from_config(config_dir: Path) -> ManagerAgentControl:
    """A :class:`ManagerAgentControl` with the credentials a manager host keeps: the admin
    keypair and endpoint of ``client.env`` and the agents' RPC secret of ``secrets.toml`` (read
    from the files, never from a command line)."""
    env = _client_env(config_dir / "client.env")
    secrets = tomllib.loads((config_dir / "secrets.toml").read_text())
    missing = [k for k in ("BACKEND_ENDPOINT", "BACKEND_ACCESS_KEY", "BACKEND_SECRET_KEY") if not env.get(k)]
    if missing or not secrets.get("rpc_secret"):
        raise RuntimeError(f"{config_dir}: no {', '.join(missing) or 'rpc_secret'} (not a manager host?)")
    return ManagerAgentControl(env["BACKEND_ENDPOINT"], env["BACKEND_ACCESS_KEY"], env["BACKEND_SECRET_KEY"],
                               str(secrets["rpc_secret"]))


async def _cli(args: argparse.Namespace) -> dict[str, Any]:
    async with control_from_config(args.config_dir) as control:
        if args.cmd == "drain":
            drained = await drain_agent(args.agent_id, control, drain_timeout=args.timeout)
            return {"drained": drained.as_dict()}
        drained = Drained.from_dict(json.loads(args.drained))
        outcome = await await_back(drained, control, ready_timeout=args.timeout)
        return {"ready": asdict(outcome)}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m installer.upgrade.rolling [--config-dir DIR] drain AGENT_ID [--timeout S]``
    prints ``{"drained": {...}}``; ``... ready DRAINED_JSON [--timeout S]`` prints
    ``{"ready": {...}}`` once the restarted agent is back. Failures print ``{"error": ...}`` and
    exit 1. The restart in between is the caller's."""
    p = argparse.ArgumentParser(prog="python -m installer.upgrade.rolling")
    p.add_argument("--config-dir", type=Path, default=Path("/etc/backend.ai"))
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("drain")
    d.add_argument("agent_id")
    d.add_argument("--timeout", type=float, default=120.0)
    r = sub.add_parser("ready")
    r.add_argument("drained")
    r.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args(argv)
    try:
        doc = asyncio.run(_cli(args))
    except (RollingError, RuntimeError, OSError, ValueError, KeyError, AgentError, aiohttp.ClientError,
            TimeoutError) as exc:
        print(json.dumps({"error": f"{args.cmd}: {exc}"}))
        return 1
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
