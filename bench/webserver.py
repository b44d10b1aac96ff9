"""Webserver benchmark (issue 12), one run against the installed node, stops by itself.

The same load (``--conns`` keep-alive connections, each sending GETs back to back for
``--seconds``) of each of ``--paths``: ``GET /auth/test``, the cheapest authenticated call (the
manager checks the signature, looks up the keypair and counts the rate limit), and ``GET /folders``,
a typical page's call (a database query), goes in the same run, as one throwaway user
(created with the admin keypair, its rate limit raised so that the load is not refused, purged at
the end; the admin keypair's own rate limit is never spent):
  (1) direct: to the manager, signed with the user's keypair (signed once, the headers reused, so
      the client's own cost is the same in both);
  (2) through the webserver: ``GET /func/auth/test`` with the login cookie (the webserver looks the
      login up in Redis, signs with the login's keypair and relays to the manager).
Each runs ``--rounds`` times, interleaved (direct, webserver, direct, ...); the best run of each counts
(on a shared machine the other load comes and goes).
Prints requests/s and p50/p99 of both and webserver/direct (target >= 70 %); the CPU time the
manager and the webserver processes (and supervisord, which writes their logs) spent per request
in each run (from /proc: a figure the other load on a shared machine moves less than requests/s); and the time from
``POST /server/login`` to the first ``/func/`` answer (median of ``--logins``; a login costs the
manager one PBKDF2 password hash).

Usage: /opt/bai/venv/bin/python bench/webserver.py [--seconds 8] [--conns 16] [--rounds 3] [--logins 5] [--paths P,P] [--json]
  [--web URL]   (default: BAI_WEB_ENDPOINT from /etc/backend.ai/client.env; root only)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from bai.common.auth import API_VERSION, sign_request

CLIENT_ENV = Path("/etc/backend.ai/client.env")
CLI = "/opt/bai/venv/bin/backend.ai"
#: The cheapest signed call (the manager checks the signature, finds the keypair, counts the rate
#: limit) and a typical page's call (the caller's folders: a database query).
PATHS = "/auth/test,/folders"
PATH = "/auth/test"


def client_env() -> dict[str, str]:
    env: dict[str, str] = {}
    if CLIENT_ENV.exists():
        for line in CLIENT_ENV.read_text().splitlines():
            if line.startswith("export ") and "=" in line:
                k, _, v = line[len("export "):].partition("=")
                env[k] = v.strip().strip('"').strip("'")
    env.update({k: v for k, v in os.environ.items() if k.startswith(("BACKEND_", "BAI_"))})
    return env


def listener_pid(port: int) -> int | None:
    """The process listening on 127.0.0.1:port (from ss), or None."""
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    for token in out.replace(",", " ").split():
        if token.startswith("pid="):
            return int(token[4:])
    return None


def supervisor_of(pid: int | None) -> int | None:
    """The supervisord that runs ``pid`` (it copies the process's output into its log), or None."""
    if pid is None:
        return None
    try:
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        return ppid if Path(f"/proc/{ppid}/cmdline").read_bytes().find(b"supervisord") >= 0 else None
    except (OSError, ValueError):
        return None


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def load(url: str, headers: dict[str, str], seconds: float, conns: int,
               jar: aiohttp.AbstractCookieJar | None, pids: dict[str, int | None]) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=jar or aiohttp.DummyCookieJar()) as http:
        end = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.monotonic() < end:
                t0 = time.perf_counter()
                async with http.get(url, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        started = time.monotonic()
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        await asyncio.gather(*(worker() for _ in range(conns)))
        elapsed = time.monotonic() - started
        cpu_used = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    if errors:
        raise SystemExit(f"{url}: {errors} answers were not 200")
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    n = len(latencies)
    return {"rps": n / elapsed, "requests": n, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            **{f"cpu_ms_{name}": used * 1000 / n for name, used in cpu_used.items()}}


async def login(http: aiohttp.ClientSession, web: str, user: str, password: str) -> None:
    async with http.post(web + "/server/login", json={"username": user, "password": password}) as r:
        if r.status != 200:
            raise SystemExit(f"login as {user} failed: {r.status} {await r.text()}")


async def login_to_first_answer(web: str, user: str, password: str, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            t0 = time.perf_counter()
            await login(http, web, user, password)
            async with http.get(web + "/func" + PATH) as r:
                await r.read()
                assert r.status == 200, r.status
            times.append((time.perf_counter() - t0) * 1000)
            async with http.post(web + "/server/logout") as r:
                await r.read()
    return times


def admin(env: dict[str, str], *args: str) -> str:
    cli_env = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_")}
    cli_env.update({k: v for k, v in env.items() if k in ("BACKEND_ENDPOINT", "BACKEND_ACCESS_KEY",
                                                          "BACKEND_SECRET_KEY")})
    cli_env["BACKEND_ENDPOINT_TYPE"] = "api"
    proc = subprocess.run([CLI, *args], env=cli_env, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise SystemExit(f"backend.ai {' '.join(args[:3])}: {proc.stderr.strip()}")
    return proc.stdout


async def main(args: argparse.Namespace) -> dict[str, Any]:
    env = client_env()
    user, password = f"bench-web-{secrets.token_hex(4)}@example.com", secrets.token_urlsafe(16)
    admin(env, "admin", "user", "add", "default", user, password)
    try:
        [kp] = json.loads(admin(env, "--output", "json", "admin", "keypair", "list", "-u", user))["items"]
        admin(env, "admin", "keypair", "update", kp["access_key"], "--rate-limit", str(10**9))
        return await run(args, env, user, password, kp["access_key"], kp["secret_key"])
    finally:
        # (retried: on a shared node the manager may be restarting right now)
        deadline = time.monotonic() + 120
        while True:
            try:
                admin(env, "admin", "user", "purge", "--yes", user)
                break
            except SystemExit:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(2)


async def measure(args: argparse.Namespace, manager: str, web: str, path: str, access_key: str, secret_key: str,
                  jar: aiohttp.CookieJar, pids: dict[str, int | None]) -> dict[str, Any]:
    host = manager.split("://", 1)[1]
    signed = sign_request(access_key, secret_key, "GET", path, host, "application/octet-stream")
    direct_headers = {"X-BackendAI-Version": API_VERSION, "Date": signed.date, "Authorization": signed.authorization}
    runs: dict[str, list[dict[str, float]]] = {"direct": [], "webserver": []}
    for _ in range(args.rounds):
        runs["direct"].append(await load(manager + path, direct_headers, args.seconds, args.conns, None, pids))
        runs["webserver"].append(await load(web + "/func" + path, {}, args.seconds, args.conns, jar, pids))
    best = {k: max(v, key=lambda r: r["rps"]) for k, v in runs.items()}
    return {"path": path, "direct": best["direct"], "webserver": best["webserver"],
            "ratio": best["webserver"]["rps"] / best["direct"]["rps"], "runs": runs}


async def run(args: argparse.Namespace, env: dict[str, str], user: str, password: str, access_key: str,
              secret_key: str) -> dict[str, Any]:
    web = (args.web or env.get("BAI_WEB_ENDPOINT", "http://127.0.0.1:8080")).rstrip("/")
    manager = env["BACKEND_ENDPOINT"].rstrip("/")
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        await login(http, web, user, password)
    login_ms = await login_to_first_answer(web, user, password, args.logins)
    pids = {"manager": listener_pid(int(manager.rsplit(":", 1)[1])), "webserver": listener_pid(int(web.rsplit(":", 1)[1]))}
    # The processes' logs are written by supervisord (a line the webserver writes per call cost it
    # CPU the two processes' own figures do not show).
    pids["supervisord"] = supervisor_of(pids["webserver"]) or supervisor_of(pids["manager"])
    results = [await measure(args, manager, web, path, access_key, secret_key, jar, pids)
               for path in args.paths.split(",")]
    result = {"calls": results, "login_to_first_answer_ms": {"median": statistics.median(login_ms), "all": login_ms},
              "conns": args.conns, "seconds": args.seconds, "rounds": args.rounds, "web": web, "manager": manager}
    if args.json:
        print(json.dumps(result, indent=2))
        return result
    print(f"{args.conns} keep-alive connections, {args.seconds:.0f} s per run, best of {args.rounds} interleaved")
    for res in results:
        print(f"GET {res['path']}")
        for name in ("direct", "webserver"):
            r = res[name]
            print(f"  {name:9s} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
                  f"({int(r['requests'])} requests)")
        print(f"  webserver/direct: {res['ratio']:.0%} (target >= 70%)")
        d, w = res["direct"], res["webserver"]
        if d.get("cpu_ms_manager"):
            print(f"  CPU per request: direct: manager {d['cpu_ms_manager']:.2f} ms "
                  f"(+ supervisord {d.get('cpu_ms_supervisord', 0):.3f}); through the webserver: "
                  f"webserver {w['cpu_ms_webserver']:.2f} ms + manager {w['cpu_ms_manager']:.2f} ms "
                  f"(+ supervisord {w.get('cpu_ms_supervisord', 0):.3f})")
    print(f"login -> first /func/ answer: median {statistics.median(login_ms):.0f} ms "
          f"(runs: {', '.join(f'{t:.0f}' for t in login_ms)})")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--conns", type=int, default=16)
    parser.add_argument("--logins", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paths", default=PATHS, help="comma-separated manager GET paths to measure")
    parser.add_argument("--web")
    parser.add_argument("--json", action="store_true")
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
