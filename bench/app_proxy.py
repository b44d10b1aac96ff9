"""App proxy benchmark (issue 8), one run on the installed node, stops by itself.

A trivial HTTP service (HTTP/1.1 keep-alive, 1 KiB answers, a few lines of asyncio) runs in a session of the node, started through the execute API. The same load (``--conns``
keep-alive connections, each sending GETs back to back for ``--seconds``) goes, in the same run:
  (1) direct: to the container's own address and port (the raw baseline);
  (2) through the installed app proxy: a circuit opened as a browser opens one (``/v2/conf`` with
      the proxy's api-secret, as the manager does after start-service; ``/v2/proxy/auth``; the
      circuit's login sets the cookie), then the same GETs carrying that cookie.
Each is run twice, interleaved (direct, proxy, direct, proxy), and the better run of each counts.
Prints requests/s and p50/p99 latency of both, and proxy/direct. Target: >= 50 % of direct.

Usage: /opt/bai/venv/bin/python bench/app_proxy.py [--seconds 8] [--conns 16] [--json]
(root: reads /etc/backend.ai/client.env and /etc/backend.ai/app-proxy.toml; needs the node running.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bai.common.auth import API_VERSION, sign_request

CLIENT_ENV = Path("/etc/backend.ai/client.env")
PROXY_TOML = Path("/etc/backend.ai/app-proxy.toml")
PORT = 8090
# The smallest keep-alive HTTP/1.1 server asyncio makes (GETs without bodies): fast enough that
# the proxy, not the service, is what the comparison measures.
SERVICE = f"""
import asyncio
BODY = b"x" * 1024
ANSWER = b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: 1024\\r\\n\\r\\n" + BODY
class P(asyncio.Protocol):
    def connection_made(self, transport):
        self.t, self.buf = transport, b""
    def data_received(self, data):
        self.buf += data
        while b"\\r\\n\\r\\n" in self.buf:
            _, self.buf = self.buf.split(b"\\r\\n\\r\\n", 1)
            self.t.write(ANSWER)
async def main():
    server = await asyncio.get_running_loop().create_server(P, "0.0.0.0", {PORT})
    await server.serve_forever()
asyncio.run(main())
"""
START = ("import subprocess, sys; subprocess.Popen([sys.executable, '-c', " + repr(SERVICE)
         + "], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print('started')")


def client_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in CLIENT_ENV.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            k, _, v = line[len("export "):].partition("=")
            env[k] = v.strip().strip('"').strip("'")
    env.update({k: v for k, v in os.environ.items() if k.startswith("BACKEND_")})
    return env


class Manager:
    def __init__(self, http: aiohttp.ClientSession, env: dict[str, str]) -> None:
        self.http, self.endpoint = http, env["BACKEND_ENDPOINT"].rstrip("/")
        self.ak, self.sk = env["BACKEND_ACCESS_KEY"], env["BACKEND_SECRET_KEY"]
        self.host = self.endpoint.split("://", 1)[1]

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else b""
        ctype = "application/json" if body is not None else "text/plain"
        signed = sign_request(self.ak, self.sk, method, path, self.host, ctype)
        headers = {"Content-Type": ctype, "X-BackendAI-Version": API_VERSION, "Date": signed.date,
                   "Authorization": signed.authorization}
        async with self.http.request(method, self.endpoint + path, data=data, headers=headers) as resp:
            raw = await resp.read()
            return resp.status, (json.loads(raw) if raw else None)


def container_address(session_id: str) -> str:
    cid = subprocess.run(["docker", "ps", "-q", "--filter", f"label=ai.backend.session-id={session_id}"],
                         check=True, capture_output=True, text=True).stdout.split()[0]
    return subprocess.run(["docker", "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                           cid], check=True, capture_output=True, text=True).stdout.strip()


async def wait_listening(url: str, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > end:
                raise TimeoutError(f"{url} does not answer")
            await asyncio.sleep(0.1)


async def open_circuit(proxy_api: str, secret: str, kernel_host: str, session_id: str,
                       jar: aiohttp.CookieJar) -> str:
    """The circuit's base URL; ``jar`` ends up holding its cookie (what a browser does)."""
    body = {"kernel_host": kernel_host, "kernel_port": PORT,
            "session": {"id": session_id, "user_uuid": str(uuid.uuid4()), "access_key": "BENCH"}}
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.post(proxy_api + "/v2/conf", json=body, headers={"X-BackendAI-Token": secret}) as resp:
            token = (await resp.json())["token"]
        params = {"token": token, "session_id": session_id, "app": "bench", "protocol": "http"}
        async with http.get(proxy_api + "/v2/proxy/auth", params=params) as resp:
            assert resp.status == 200, await resp.text()
            return f"{resp.url.scheme}://{resp.url.host}:{resp.url.port}"


async def load(url: str, seconds: float, conns: int, jar: aiohttp.AbstractCookieJar | None) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=conns, force_close=False)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=jar or aiohttp.DummyCookieJar()) as http:
        end = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                try:
                    async with http.get(url) as resp:
                        await resp.read()
                        ok = resp.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conns)))
        elapsed = time.perf_counter() - began
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")

    return {"requests": len(latencies), "errors": errors, "rps": len(latencies) / elapsed,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


def proxy_secret() -> str:
    return str(tomllib.loads(PROXY_TOML.read_text())["app-proxy"]["api-secret"])


async def main(args: argparse.Namespace) -> dict[str, Any]:
    env, secret = client_env(), proxy_secret()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
        mgr = Manager(http, env)
        name = f"bench-apx-{uuid.uuid4().hex[:6]}"
        status, created = await mgr.call("POST", "/session", {"name": name, "image": "python"})
        assert status == 201 and created["status"] == "RUNNING", created
        try:
            status, sgs = await mgr.call("POST", "/admin/gql", {"query": "{ scaling_group(name: \"default\") "
                                                                          "{ wsproxy_addr } }"})
            proxy_api = (sgs or {}).get("scaling_group", {}).get("wsproxy_addr") or "http://127.0.0.1:5050"
            status, out = await mgr.call("POST", f"/session/{name}", {"mode": "query", "runId": None, "code": START})
            assert status == 200 and "started" in json.dumps(out), out
            host = container_address(created["sessionId"])
            direct = f"http://{host}:{PORT}/"
            await wait_listening(direct)
            jar = aiohttp.CookieJar(unsafe=True)
            circuit = await open_circuit(proxy_api, secret, host, created["sessionId"], jar) + "/"
            await load(direct, 1, args.conns, None)  # warm-up of both paths
            await load(circuit, 1, args.conns, jar)
            runs: dict[str, list[dict[str, float]]] = {"direct": [], "proxy": []}
            for _ in range(2):
                runs["direct"].append(await load(direct, args.seconds, args.conns, None))
                runs["proxy"].append(await load(circuit, args.seconds, args.conns, jar))
        finally:
            await mgr.call("DELETE", f"/session/{name}")
    best = {k: max(v, key=lambda r: r["rps"]) for k, v in runs.items()}
    return {"conns": args.conns, "seconds": args.seconds, "direct": best["direct"], "proxy": best["proxy"],
            "ratio": best["proxy"]["rps"] / best["direct"]["rps"], "runs": runs}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--conns", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args()
    result = asyncio.run(main(a))
    if a.json:
        print(json.dumps(result, indent=2))
        sys.exit(0)
    for path in ("direct", "proxy"):
        r = result[path]
        print(f"{path:7s} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
              f"({r['requests']} requests, {r['errors']} errors)")
    verdict = "meets" if result["ratio"] >= 0.5 else "MISSES"
    print(f"proxy/direct {result['ratio'] * 100:.0f} % ({verdict} the >= 50 % target; "
          f"{result['conns']} keep-alive connections, best of 2 x {result['seconds']:.0f} s each)")
