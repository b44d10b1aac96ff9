"""A real node as separate processes, for fault injection: the manager and the agent run as
`bai-manager start` / `bai-agent start` subprocesses (so they can be killed with SIGKILL), over a
PostgreSQL, a Redis and an etcd of their own (so those can be restarted), with the real Docker
engine and the real kernel image. Everything binds to loopback; one cluster serves the whole
folder, and each scenario leaves it healthy for the next.

Every scenario records its figures (time to recover, sessions lost) with :func:`record`; they are
printed at the end of the run and written to ``$BAI_FAULT_FIGURES`` (JSON) when that is set.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bai.common import etcd as etcd_mod
from bai.common.auth import API_VERSION, sign_request
from bai.manager.store import fixtures, migrate
from bai.manager.store import tables as t
from tests.fixtures.halfstack import PG_BIN, _port_open, free_port, wait_for

VENV_BIN = Path("/opt/bai/venv/bin")
FIGURES: list[dict[str, Any]] = []


def record(scenario: str, **figures: Any) -> None:
    """Keep one scenario's figures for the summary (and print them for `pytest -s`)."""
    entry = {"scenario": scenario, **{k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}}
    FIGURES.append(entry)
    print(f"\nFAULT {json.dumps(entry)}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("fault figures")
    for entry in FIGURES:
        terminalreporter.write_line(json.dumps(entry))
    target = os.environ.get("BAI_FAULT_FIGURES")
    if target:
        Path(target).write_text(json.dumps(FIGURES, indent=2))


class Process:
    """One daemon: started with ``start()``, stopped gently with ``stop()`` or with SIGKILL."""

    def __init__(self, name: str, argv: list[str], log: Path, ready: Any, env: dict[str, str] | None = None,
                 stop_signal: int = signal.SIGTERM) -> None:
        self.name, self.argv, self.log, self.ready, self.env = name, argv, log, ready, env
        self.stop_signal = stop_signal
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, deadline: float = 30.0) -> float:
        """Start and wait until ready; returns the seconds that took."""
        began = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     env={**os.environ, **(self.env or {})}, start_new_session=True)
        try:
            wait_for(self.ready, self.name, deadline, proc=self.proc)
        except Exception as exc:
            raise RuntimeError(f"{exc}; last log lines:\n{self.tail()}") from exc
        return time.monotonic() - began

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)  # the group: runuser's child too
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # To the process group: `runuser` does not pass signals on to PostgreSQL.
        os.killpg(self.proc.pid, self.stop_signal)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Cluster:
    root: Path
    pg: Process
    redis: Process
    etcd: Process
    manager: Process
    agent: Process
    pg_port: int
    redis_port: int
    api: str
    agent_id: str
    db: AsyncEngine
    access_key: str
    secret_key: str
    http: aiohttp.ClientSession = field(init=False)

    async def call(self, method: str, path: str, body: Any = None, deadline: float = 30.0) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        host = self.api.removeprefix("http://")
        ctype = "application/json" if data is not None else "text/plain"
        signed = sign_request(self.access_key, self.secret_key, method, path, host, ctype)
        headers = {"Content-Type": ctype, "X-BackendAI-Version": API_VERSION, "Host": host,
                   "Date": signed.date, "Authorization": signed.authorization}
        async with self.http.request(method, self.api + path, data=data, headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=deadline)) as resp:
            raw = await resp.read()
            try:
                return resp.status, json.loads(raw) if raw else None
            except ValueError:
                return resp.status, raw.decode(errors="replace")

    async def api_up(self) -> bool:
        try:
            async with self.http.get(self.api + "/", timeout=aiohttp.ClientTimeout(total=1)) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def create(self, name: str) -> str:
        st, body = await self.call("POST", "/session", {
            "name": name, "image": "python", "config": {"resources": {"cpu": "1", "mem": "320m"}}})
        assert st == 201 and body["status"] == "RUNNING", (st, body)
        return str(body["sessionId"])

    async def run(self, session: str, code: str, deadline: float = 10.0) -> str:
        """Execute ``code`` in the session; returns its stdout (asserts it finished cleanly)."""
        st, res = await self.call("POST", f"/session/{session}", {"mode": "query", "code": code, "runId": None},
                                  deadline=deadline)
        assert st == 200, (st, res)
        result = res["result"]
        assert result["status"] == "finished" and result["exitCode"] == 0, result
        return "".join(text for kind, text in result["console"] if kind == "stdout")

    async def session_statuses(self) -> dict[str, str]:
        async with self.db.connect() as conn:
            rows = (await conn.execute(sa.select(t.sessions.c.name, t.sessions.c.status))).all()
        return {r.name: r.status for r in rows}

    async def last_heartbeat(self) -> Any:
        async with self.db.connect() as conn:
            return await conn.scalar(sa.select(t.agents.c.last_seen).where(t.agents.c.id == self.agent_id))

    async def agent_occupied(self) -> dict[str, str]:
        async with self.db.connect() as conn:
            return dict(await conn.scalar(
                sa.select(t.agents.c.occupied_slots).where(t.agents.c.id == self.agent_id)) or {})


async def containers_of(agent_id: str, session_id: str | None = None) -> list[dict[str, Any]]:
    labels = [f"ai.backend.owner={agent_id}"]
    if session_id is not None:
        labels.append(f"ai.backend.session-id={session_id}")
    async with aiodocker.Docker() as docker:
        found = await docker.containers.list(all=True, filters=json.dumps({"label": labels}))
        return [await c.show() for c in found]


async def until(check: Any, what: str, deadline: float = 30.0, interval: float = 0.05) -> float:
    """Poll the async ``check`` until it is true; returns the seconds it took."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    while True:
        try:
            if await check():
                return loop.time() - began
        except (aiohttp.ClientError, TimeoutError, OSError, sa.exc.DBAPIError):
            pass
        if loop.time() - began > deadline:
            raise TimeoutError(f"{what}: not within {deadline} s")
        await asyncio.sleep(interval)


def _postgres(root: Path, port: int) -> Process:
    data = root / "pg"
    if not data.exists():
        data.mkdir()
        shutil.chown(data, "postgres", "postgres")
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust",
                        "-U", "postgres", "--no-sync"], check=True, capture_output=True)

    def ready() -> bool:
        return subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-Atqc", "select 1"],
                              capture_output=True).returncode == 0

    # SIGINT: PostgreSQL's "fast" shutdown (SIGTERM would wait for every client to leave).
    return Process("postgres", ["runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"), "-D", str(data),
                                "-p", str(port), "-k", str(data), "-c", "listen_addresses=127.0.0.1",
                                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                   root / "pg.log", ready, stop_signal=signal.SIGINT)


@pytest.fixture(scope="package")
def cluster_procs(kernel_image: str) -> Iterator[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="bai-fault-"))
    os.chmod(root, 0o755)
    tag = secrets.token_hex(3)
    ports = {k: free_port() for k in ("pg", "redis", "etcd", "etcd_peer", "api", "agent")}
    procs: list[Process] = []
    try:
        pg = _postgres(root, ports["pg"])
        redis = Process("redis", ["redis-server", "--port", str(ports["redis"]), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--dir", str(root)],
                        root / "redis.log", lambda: _port_open(ports["redis"]))
        etcd = Process("etcd", ["etcd", "--name", "f1", "--data-dir", str(root / "etcd"),
                                "--listen-client-urls", f"http://127.0.0.1:{ports['etcd']}",
                                "--advertise-client-urls", f"http://127.0.0.1:{ports['etcd']}",
                                "--listen-peer-urls", f"http://127.0.0.1:{ports['etcd_peer']}",
                                "--initial-advertise-peer-urls", f"http://127.0.0.1:{ports['etcd_peer']}",
                                "--initial-cluster", f"f1=http://127.0.0.1:{ports['etcd_peer']}"],
                       root / "etcd.log", lambda: _port_open(ports["etcd"]))
        for p in (pg, redis, etcd):
            procs.append(p)
            p.start()
        db = "fault"
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(ports["pg"]), "-U", "postgres", "-qc",
                        f"create database {db}"], check=True, capture_output=True)
        dsn = f"postgresql+asyncpg://postgres@127.0.0.1:{ports['pg']}/{db}"
        migrate.upgrade(dsn)

        async def setup() -> Any:
            engine = create_async_engine(dsn)
            try:
                async with engine.begin() as conn:
                    admin = await fixtures.populate(conn)
            finally:
                await engine.dispose()
            async with etcd_mod.connect(f"127.0.0.1:{ports['etcd']}", f"fault-{tag}") as store:
                await store.put("config/redis/addr", f"127.0.0.1:{ports['redis']}")
                await store.put("config/agent/rpc-secret", secrets.token_urlsafe(24))
            return admin

        admin = asyncio.run(setup())
        agent_id = f"i-fault-{tag}"
        (root / "manager.toml").write_text(f"""
[etcd]
namespace = "fault-{tag}"
addr = "127.0.0.1:{ports['etcd']}"
[db]
addr = "127.0.0.1:{ports['pg']}"
name = "{db}"
user = "postgres"
[manager]
id = "i-fault-mgr-{tag}"
service-addr = "127.0.0.1:{ports['api']}"
heartbeat-timeout = 15
event-claim-min-idle = 5
""")
        ipc = Path(tempfile.mkdtemp(prefix="bai-f-", dir="/tmp"))
        (root / "agent.toml").write_text(f"""
[etcd]
namespace = "fault-{tag}"
addr = "127.0.0.1:{ports['etcd']}"
[agent]
id = "{agent_id}"
rpc-listen-addr = "127.0.0.1:{ports['agent']}"
ipc-base-path = "{ipc}"
heartbeat-interval = 1.0
[resource]
reserved-cpu = 0
reserved-mem = "0"
""")
        manager = Process("manager", [str(VENV_BIN / "bai-manager"), "start", "--config", str(root / "manager.toml")],
                          root / "manager.log", lambda: _port_open(ports["api"]))
        agent = Process("agent", [str(VENV_BIN / "bai-agent"), "start", "--config", str(root / "agent.toml")],
                        root / "agent.log", lambda: _port_open(ports["agent"]))
        for p in (manager, agent):
            procs.append(p)
            p.start(60)
        yield {"root": root, "pg": pg, "redis": redis, "etcd": etcd, "manager": manager, "agent": agent,
               "ports": ports, "dsn": dsn, "agent_id": agent_id, "admin": admin, "ipc": ipc}
    finally:
        for p in reversed(procs):
            p.stop()
        if "agent_id" in locals():
            subprocess.run(["bash", "-c", f"docker ps -aq --filter label=ai.backend.owner={agent_id} "
                                          "| xargs -r docker rm -f"], capture_output=True, timeout=60)
        if os.environ.get("BAI_FAULT_KEEP_LOGS"):
            print(f"fault logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
        if "ipc" in locals():
            shutil.rmtree(ipc, ignore_errors=True)


@pytest.fixture(scope="package")
async def cluster(cluster_procs: dict[str, Any]) -> AsyncIterator[Cluster]:
    p = cluster_procs
    engine = create_async_engine(p["dsn"], pool_pre_ping=True)
    c = Cluster(root=p["root"], pg=p["pg"], redis=p["redis"], etcd=p["etcd"], manager=p["manager"],
                agent=p["agent"], pg_port=p["ports"]["pg"], redis_port=p["ports"]["redis"],
                api=f"http://127.0.0.1:{p['ports']['api']}", agent_id=p["agent_id"], db=engine,
                access_key=p["admin"].access_key, secret_key=p["admin"].secret_key)
    c.http = aiohttp.ClientSession()
    try:
        async def registered() -> bool:
            async with engine.connect() as conn:
                alive = await conn.scalar(sa.select(sa.func.count()).select_from(t.agents)
                                          .where(t.agents.c.status == "ALIVE"))
                images = await conn.scalar(sa.select(sa.func.count()).select_from(t.images))
            return bool(alive) and bool(images)
        await until(registered, "agent registered with its images", 60)
        yield c
    finally:
        await c.http.close()
        await engine.dispose()
