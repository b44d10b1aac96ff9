"""Manager API throughput benchmark against this machine's installed node (issue 6).

One run prints, next to the targets:
  (1) signed ``GET /auth/test?echo=N``: requests/s, p50/p99, 8 concurrent keep-alive clients;
      baselines in the same run with the same client: an aiohttp hello-world server in its own
      process answering the same path, and unsigned ``GET /`` on the manager;
  (2) GraphQL ``compute_session_list`` over 1,000 sessions: the manager's max-page-size is 100 by
      default, so a whole listing is 10 pages fetched in sequence (limit 100, offset 0..900);
      p50/p99 of a whole listing and of one page, for 1 client and for 8 concurrent clients;
  (3) the installed bai-manager process's RSS (VmRSS from /proc), before and after the load.
Targets: >= 2,000 signed GETs/s; 1,000-session list p50 < 100 ms; idle RSS < 100 MiB.

The load comes from a second process (multiprocessing, spawn) over loopback. Nothing touches the
admin keypair or the node's scheduler: a dedicated bench user and keypair (rate limit 10^7, so the
limit is checked on every request without refusing any) own 1,000 TERMINATED sessions inserted
directly into the database (then ANALYZEd, as autovacuum would soon do); all of them are deleted
at the end, whatever happens. Every phase has
a fixed duration, so the run stops by itself (about a minute).

Usage: /opt/bai/venv/bin/python bench/manager_api.py [--seconds S] [--clients N] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bai.common.auth import API_VERSION, sign_request  # noqa: E402

ENV_FILE = Path("/etc/backend.ai/client.env")
MANAGER_TOML = Path("/etc/backend.ai/manager.toml")
N_SESSIONS = 1000
PAGE = 100
BENCH_RATE_LIMIT = 10_000_000
TARGET_RPS, TARGET_LIST_P50_MS, TARGET_RSS_MIB = 2000, 100.0, 100.0

LIST_QUERY = (  # the official client's `ps` / `session list` query
    "query($limit:Int!, $offset:Int!, $status: String, $access_key: String, $filter: String, $order: String) {\n"
    "  compute_session_list(\n"
    "      limit:$limit, offset:$offset, status:$status, access_key:$access_key, filter:$filter, order:$order) {\n"
    "    items { name access_key id group_name main_kernel_id image type status status_info status_changed result }\n"
    "    total_count\n  }\n}")


def read_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in ENV_FILE.read_text().splitlines():
        line = line.strip().removeprefix("export ")
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value.strip().strip("'\"")
    return env


# ------------------------------------------------------------------ the load generator (2nd process)

class Conn:
    """One keep-alive HTTP/1.1 connection: a lean client, so the client process's own cost
    stays small next to the server's (the same client measures the baselines)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        data = await self.reader.readexactly(length)
        if close:
            self.writer.close()
            self.writer = None
        return status, data


class Signer:
    def __init__(self, endpoint: str, access_key: str, secret_key: str) -> None:
        u = urlsplit(endpoint)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.ak, self.sk = access_key, secret_key

    def headers(self, method: str, path: str, content_type: str) -> dict[str, str]:
        signed = sign_request(self.ak, self.sk, method, path, f"{self.host}:{self.port}", content_type)
        return {"Date": signed.date, "Authorization": signed.authorization, "Content-Type": content_type,
                "X-BackendAI-Version": API_VERSION}


async def _run_clients(job: dict[str, Any]) -> dict[str, Any]:
    signer = Signer(job["endpoint"], job["access_key"], job["secret_key"])
    host, port = job.get("host", signer.host), job.get("port", signer.port)
    kind, clients, seconds = job["kind"], job["clients"], job["seconds"]
    lat: list[float] = []
    pages: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    seq = iter(range(10**9))

    async def one_get(conn: Conn) -> None:
        path = f"/auth/test?echo={next(seq)}" if kind != "root" else "/"
        headers = signer.headers("GET", path, "application/json") if kind != "root" else {}
        t0 = time.perf_counter()
        st, body = await conn.request("GET", path, headers)
        lat.append(time.perf_counter() - t0)
        statuses[st] = statuses.get(st, 0) + 1
        if st != 200 and len(errors) < 3:
            errors.append(body[:300].decode(errors="replace"))

    async def one_listing(conn: Conn) -> None:
        t0 = time.perf_counter()
        seen = 0
        for offset in range(0, N_SESSIONS, PAGE):
            body = json.dumps({"query": LIST_QUERY, "variables": {
                "limit": PAGE, "offset": offset, "status": "TERMINATED", "access_key": None,
                "filter": None, "order": None}}).encode()
            headers = signer.headers("POST", "/admin/gql", "application/json")
            p0 = time.perf_counter()
            st, raw = await conn.request("POST", "/admin/gql", headers, body)
            pages.append(time.perf_counter() - p0)
            statuses[st] = statuses.get(st, 0) + 1
            reply = json.loads(raw) if st == 200 else {}
            data = (reply.get("data") or {}).get("compute_session_list")
            if data is None or data["total_count"] != N_SESSIONS:
                if len(errors) < 3:
                    errors.append(raw[:300].decode(errors="replace"))
                return
            seen += len(data["items"])
        lat.append(time.perf_counter() - t0)
        if seen != N_SESSIONS and len(errors) < 3:
            errors.append(f"listing returned {seen} items, not {N_SESSIONS}")

    step = one_listing if kind == "gql" else one_get
    conns = [Conn(host, port) for _ in range(clients)]
    for c in conns:  # warm up (connect, caches) outside the measured window
        await step(c)
    lat.clear()
    pages.clear()
    statuses.clear()
    deadline = time.perf_counter() + seconds

    async def loop(conn: Conn) -> None:
        while time.perf_counter() < deadline:
            await step(conn)

    t0 = time.perf_counter()
    await asyncio.gather(*(loop(c) for c in conns))
    elapsed = time.perf_counter() - t0
    for c in conns:
        if c.writer is not None:
            c.writer.close()
    return {"latencies": lat, "pages": pages, "elapsed": elapsed, "statuses": statuses, "errors": errors}


def _client_process(job: dict[str, Any], out: Any) -> None:
    try:
        out.send(asyncio.run(_run_clients(job)))
    except BaseException as exc:  # say why in the parent rather than a bare EOFError
        import traceback
        out.send({"fatal": "".join(traceback.format_exception(exc))})
    out.close()


def load(job: dict[str, Any]) -> dict[str, Any]:
    """Run ``job`` in a second process; bounded by its duration plus a margin."""
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_client_process, args=(job, send), daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(job["seconds"] + 60):
            raise TimeoutError(f"load generator did not finish: {job['kind']}")
        result: dict[str, Any] = recv.recv()
        if "fatal" in result:
            raise RuntimeError(f"load generator failed ({job['kind']}):\n{result['fatal']}")
        return result
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()


# ------------------------------------------------------------------ the raw baseline server

def _hello_server(port: int) -> None:
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"authorized": "yes", "echo": request.query.get("echo")})

    app = web.Application()
    app.router.add_get("/auth/test", hello)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, deadline: float) -> None:
    import socket
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


# ------------------------------------------------------------------ bench fixtures in the node's database

class Fixtures:
    """A bench user and keypair owning N TERMINATED sessions (never scheduled), removed after."""

    def __init__(self) -> None:
        from bai.manager.config import load as load_config
        self.db = load_config(MANAGER_TOML).db
        self.user = uuid.uuid4()
        self.email = f"bench-{self.user.hex[:8]}@bench.invalid"
        from bai.manager.store.fixtures import generate_keypair
        self.access_key, self.secret_key = generate_keypair()

    async def create(self) -> None:
        import sqlalchemy as sa

        from bai.manager.store import tables as t
        from bai.manager.store.db import create_engine
        engine = create_engine(self.db)  # one per asyncio.run: an engine's pool belongs to its loop
        async with engine.begin() as conn:
            group_id = await conn.scalar(sa.select(t.groups.c.id).where(
                t.groups.c.name == "default", t.groups.c.domain_name == "default"))
            await conn.execute(sa.insert(t.users).values(
                uuid=self.user, username=self.email, email=self.email, domain_name="default", role="user",
                status="active", full_name="bench", main_access_key=self.access_key))
            await conn.execute(sa.insert(t.keypairs).values(
                access_key=self.access_key, secret_key=self.secret_key, user_id=self.email, user=self.user,
                is_active=True, is_admin=False, rate_limit=BENCH_RATE_LIMIT, resource_policy="default"))
            await conn.execute(sa.insert(t.association_groups_users).values(user_id=self.user, group_id=group_id))
            base = datetime.now(UTC) - timedelta(hours=1)
            sessions, kernels = [], []
            for i in range(N_SESSIONS):
                sid, created = uuid.uuid4(), base + timedelta(milliseconds=i)
                history = {"PENDING": created.isoformat(), "TERMINATED": (created + timedelta(seconds=1)).isoformat()}
                common = {"domain_name": "default", "group_id": group_id, "user_uuid": self.user,
                          "access_key": self.access_key, "image": "bai.local/stable/python:3.11-debian12",
                          "architecture": "x86_64", "status": "TERMINATED", "status_info": "user-requested",
                          "status_history": history, "created_at": created,
                          "terminated_at": created + timedelta(seconds=1)}
                sessions.append({"id": sid, "name": f"bench-{i:04d}", "scaling_group_name": "default", **common})
                kernels.append({"id": uuid.uuid4(), "session_id": sid, "session_name": f"bench-{i:04d}",
                                "cluster_hostname": "main1", "registry": "bai.local", "scaling_group": "default",
                                "status_changed": created + timedelta(seconds=1), **common})
            await conn.execute(sa.insert(t.sessions), sessions)
            await conn.execute(sa.insert(t.kernels), kernels)
        async with engine.begin() as conn:
            # The planner statistics autovacuum would gather within a minute of such an insert:
            # measure the steady state, not the plan of tables it still believes are empty.
            await conn.execute(sa.text("ANALYZE sessions"))
            await conn.execute(sa.text("ANALYZE kernels"))
        await engine.dispose()

    async def remove(self) -> None:
        import sqlalchemy as sa

        from bai.manager.store import tables as t
        from bai.manager.store.db import create_engine
        engine = create_engine(self.db)
        async with engine.begin() as conn:
            await conn.execute(sa.delete(t.kernels).where(t.kernels.c.access_key == self.access_key))
            await conn.execute(sa.delete(t.sessions).where(t.sessions.c.access_key == self.access_key))
            await conn.execute(sa.delete(t.association_groups_users).where(
                t.association_groups_users.c.user_id == self.user))
            await conn.execute(sa.update(t.users).where(t.users.c.uuid == self.user).values(main_access_key=None))
            await conn.execute(sa.delete(t.keypairs).where(t.keypairs.c.access_key == self.access_key))
            await conn.execute(sa.delete(t.users).where(t.users.c.uuid == self.user))
        await engine.dispose()


# ------------------------------------------------------------------ figures

def manager_rss_mib() -> float:
    pid = subprocess.run(["supervisorctl", "pid", "bai-manager"], capture_output=True, text=True).stdout.strip()
    for line in Path(f"/proc/{int(pid)}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * q))] * 1000 if s else float("nan")


def figures(result: dict[str, Any], key: str = "latencies") -> dict[str, Any]:
    lat = result[key]
    return {"n": len(lat), "per_s": len(lat) / result["elapsed"], "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
            "mean_ms": statistics.fmean(lat) * 1000 if lat else float("nan"),
            "statuses": result["statuses"], "errors": result["errors"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each phase")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--skip", action="append", default=[], choices=["baseline", "root", "signed", "gql"])
    args = ap.parse_args()
    env = read_env()
    endpoint = env["BACKEND_ENDPOINT"]
    report: dict[str, Any] = {"rss_idle_mib": manager_rss_mib()}
    fx = Fixtures()
    asyncio.run(fx.create())
    try:
        job = {"endpoint": endpoint, "access_key": fx.access_key, "secret_key": fx.secret_key,
               "clients": args.clients, "seconds": args.seconds}
        if "baseline" not in args.skip:
            port = free_port()
            server = mp.get_context("spawn").Process(target=_hello_server, args=(port,), daemon=True)
            server.start()
            try:
                wait_port(port, time.monotonic() + 20)
                report["baseline_aiohttp_hello"] = figures(load({**job, "kind": "signed", "host": "127.0.0.1",
                                                                  "port": port}))
            finally:
                server.terminate()
                server.join(5)
        if "root" not in args.skip:
            report["manager_get_root_unsigned"] = figures(load({**job, "kind": "root"}))
        if "signed" not in args.skip:
            report["manager_signed_auth_test"] = figures(load({**job, "kind": "signed"}))
        if "gql" not in args.skip:
            one = load({**job, "kind": "gql", "clients": 1})
            report["gql_list_1000_1client"] = figures(one)
            report["gql_page_100_1client"] = figures(one, "pages")
            many = load({**job, "kind": "gql"})
            report["gql_list_1000_8clients"] = figures(many)
            report["gql_page_100_8clients"] = figures(many, "pages")
        report["rss_after_load_mib"] = manager_rss_mib()
    finally:
        asyncio.run(fx.remove())
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"manager idle RSS {report['rss_idle_mib']:.1f} MiB (target < {TARGET_RSS_MIB:.0f});"
          f" after the load {report['rss_after_load_mib']:.1f} MiB")
    for key, label, target in (
        ("baseline_aiohttp_hello", "raw: aiohttp hello-world, own process", ""),
        ("manager_get_root_unsigned", "manager GET / (unsigned)", ""),
        ("manager_signed_auth_test", "manager signed GET /auth/test?echo=N", f"target >= {TARGET_RPS}/s"),
        ("gql_list_1000_1client", "gql 1,000-session listing, 1 client", f"target p50 < {TARGET_LIST_P50_MS:.0f} ms"),
        ("gql_page_100_1client", "  one 100-session page, 1 client", ""),
        ("gql_list_1000_8clients", f"gql 1,000-session listing, {args.clients} clients", ""),
        ("gql_page_100_8clients", f"  one 100-session page, {args.clients} clients", ""),
    ):
        if key not in report:
            continue
        f = report[key]
        bad = {k: v for k, v in f["statuses"].items() if k != 200}
        print(f"  {label:<44} {f['per_s']:8.1f}/s  p50 {f['p50_ms']:7.2f} ms  p99 {f['p99_ms']:7.2f} ms"
              f"  n={f['n']}  {target}{'  NON-200: ' + str(bad) + ' ' + str(f['errors']) if bad or f['errors'] else ''}")


if __name__ == "__main__":
    main()
