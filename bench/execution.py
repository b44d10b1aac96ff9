# The baselines (docker exec/cp) are timed one at a time on purpose: blocking calls are what we want.
# ruff: noqa: ASYNC220, ASYNC221, ASYNC240
"""Execution benchmark (issue 8, items 1-2), one run on this machine, stops by itself.

Prints, next to raw baselines measured in the same run on the same container:
  (1) query-mode round trip of ``print(1)``: REST ``POST /session/{ref}`` (mode=query, one call,
      answered ``finished``), p50/p99 over ``--rounds``; baseline ``docker exec <container> python3
      -c 'print(1)'`` (p50/p99 over fewer rounds: it starts an interpreter each time);
  (2) a 100 MiB stdout stream through the websocket execute stream (the code copies a 100 MiB file
      to stdout) vs ``docker exec <container> cat`` of the same file;
  (3) a 100 MiB file uploaded into the session (``POST /session/{ref}/upload``) and downloaded
      (``POST /session/{ref}/download``) vs ``docker cp`` in and out.
Targets: round trip < 10 ms median; stream and file throughput >= 50 % of the raw baseline.

The installed node's manager allows 16 MiB requests, so the bench starts a second manager of the
same installation (same database, etcd and Redis: managers cooperate) on a free port with
``max-request-size`` 256 MiB, and talks to that one; it is stopped at the end, as is the session.
Usage: /opt/bai/venv/bin/python bench/execution.py [--size-mib 100] [--rounds 300] [--json]
(root: reads /etc/backend.ai/manager.toml and client.env; needs the installed node running.)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import aiohttp

from bai.common.auth import API_VERSION, sign_request

MANAGER_TOML = Path("/etc/backend.ai/manager.toml")
CLIENT_ENV = Path("/etc/backend.ai/client.env")
MANAGER_EXE = Path(sys.executable).parent / "bai-manager"
MIB = 2**20


def client_keys() -> tuple[str, str]:
    env = {}
    for line in CLIENT_ENV.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            k, _, v = line[len("export "):].partition("=")
            env[k] = v.strip().strip('"')
    env.update({k: v for k, v in os.environ.items() if k.startswith("BACKEND_")})
    return env["BACKEND_ACCESS_KEY"], env.get("BACKEND_SECRET_KEY") or env["BACKEND_SECRET"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def write_toml(cfg: dict[str, Any]) -> str:
    lines = []
    for section, values in cfg.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


class Client:
    def __init__(self, endpoint: str, ak: str, sk: str) -> None:
        self.endpoint, self.ak, self.sk = endpoint, ak, sk
        self.host = endpoint.split("://", 1)[1]
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))

    def headers(self, method: str, path: str, ctype: str, sign_ctype: str | None = None) -> dict[str, str]:
        signed = sign_request(self.ak, self.sk, method, path, self.host, sign_ctype or ctype)
        return {"Content-Type": ctype, "X-BackendAI-Version": API_VERSION, "Date": signed.date,
                "Authorization": signed.authorization}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else b""
        ctype = "application/json" if body is not None else "text/plain"
        async with self.http.request(method, self.endpoint + path, data=data,
                                     headers=self.headers(method, path, ctype)) as resp:
            raw = await resp.read()
            return resp.status, (json.loads(raw) if raw else None)


async def wait_manager(client: Client, proc: subprocess.Popen[bytes], deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the bench manager exited with {proc.returncode}")
        try:
            async with client.http.get(client.endpoint + "/") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError("the bench manager did not come up")


async def round_trips(client: Client, name: str, rounds: int) -> list[float]:
    samples = []
    for i in range(rounds + 20):
        t0 = time.perf_counter()
        status, body = await client.call("POST", f"/session/{name}", {"mode": "query", "runId": None,
                                                                     "code": "print(1)"})
        elapsed = time.perf_counter() - t0
        assert status == 200 and body["result"]["status"] == "finished", body
        assert body["result"]["console"] == [["stdout", "1\n"]], body
        if i >= 20:  # warm-up
            samples.append(elapsed * 1000)
    return samples


def docker_round_trips(container: str, rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = subprocess.run(["docker", "exec", container, "python3", "-c", "print(1)"], capture_output=True,
                             check=True).stdout
        samples.append((time.perf_counter() - t0) * 1000)
        assert out == b"1\n"
    return samples


async def ws_stream(client: Client, name: str, code: str) -> tuple[float, int]:
    path = f"/stream/session/{name}/execute"
    t0 = time.perf_counter()
    received = 0
    async with client.http.ws_connect(client.endpoint + path, max_msg_size=0, headers={
            k: v for k, v in client.headers("GET", path, "", "application/octet-stream").items()
            if k != "Content-Type"}) as ws:
        await ws.send_json({"mode": "query", "code": code, "options": {}})
        async for msg in ws:
            frame = json.loads(msg.data)
            for kind, data in frame.get("console") or []:
                if kind == "stdout":
                    received += len(data)
                elif kind == "stderr":
                    print("stderr:", data[:200], file=sys.stderr)
            if frame.get("status") in ("finished", "error"):
                assert frame["status"] == "finished" and frame["exitCode"] == 0, frame
                break
    return time.perf_counter() - t0, received


def timed_cmd(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


async def upload(client: Client, name: str, path: Path, remote: str) -> float:
    url_path = f"/session/{name}/upload"
    t0 = time.perf_counter()
    with path.open("rb") as f:
        form = aiohttp.FormData()
        form.add_field("src", f, filename=remote, content_type="application/octet-stream")
        hdrs = client.headers("POST", url_path, "multipart/form-data")
        del hdrs["Content-Type"]
        async with client.http.post(client.endpoint + url_path, data=form, headers=hdrs) as resp:
            assert resp.status == 204, await resp.text()
    return time.perf_counter() - t0


async def download(client: Client, name: str, remote: str, dest: Path) -> float:
    url_path = f"/session/{name}/download"
    t0 = time.perf_counter()
    async with client.http.post(client.endpoint + url_path, data=json.dumps({"files": [remote]}).encode(),
                                headers=client.headers("POST", url_path, "application/json")) as resp:
        assert resp.status == 200, await resp.text()
        reader = aiohttp.MultipartReader.from_response(resp)
        part = await reader.next()
        assert isinstance(part, aiohttp.BodyPartReader)
        with dest.open("wb") as out:
            while chunk := await part.read_chunk(MIB):
                out.write(chunk)
    elapsed = time.perf_counter() - t0
    with tarfile.open(dest) as tar:  # the archive is whole
        tar.getmembers()
    return elapsed


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MIB):
            h.update(chunk)
    return h.hexdigest()


async def run(size_mib: int, rounds: int) -> dict[str, Any]:
    ak, sk = client_keys()
    cfg = tomllib.loads(MANAGER_TOML.read_text())
    port = free_port()
    cfg["manager"].update({"id": f"i-bench-{secrets.token_hex(3)}", "service-addr": f"127.0.0.1:{port}",
                           "max-request-size": 256 * MIB, "max-upload-file-size": 256 * MIB})
    cfg.setdefault("logging", {})["level"] = "WARNING"
    work = Path(tempfile.mkdtemp(prefix="bai-bench-exec-", dir="/var/tmp"))
    conf = work / "manager.toml"
    conf.write_text(write_toml(cfg))
    conf.chmod(0o600)
    proc = subprocess.Popen([str(MANAGER_EXE), "start", "--config", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=(work / "manager.log").open("wb"))
    client = Client(f"http://127.0.0.1:{port}", ak, sk)
    name = f"bench-exec-{secrets.token_hex(3)}"
    result: dict[str, Any] = {"size_mib": size_mib}
    try:
        await wait_manager(client, proc)
        status, body = await client.call("POST", "/session", {"name": name, "image": "python",
                                                              "config": {"resources": {"mem": "1g"}}})
        assert status == 201 and body["status"] == "RUNNING", body
        status, info = await client.call("GET", f"/session/{name}")
        container = str(info["containerId"])

        rt = await round_trips(client, name, rounds)
        raw_rt = docker_round_trips(container, max(20, rounds // 10))
        result["round_trip_ms"] = {"p50": statistics.median(rt), "p99": pct(rt, 0.99), "n": len(rt)}
        result["docker_exec_ms"] = {"p50": statistics.median(raw_rt), "p99": pct(raw_rt, 0.99), "n": len(raw_rt)}

        size = size_mib * MIB
        line = ("x" * 1023 + "\n").encode()
        local = work / "big.txt"
        with local.open("wb") as f:
            for _ in range(size // len(line)):
                f.write(line)
        digest = sha256_of(local)

        # (3) first: the upload also puts the stream's source file in place.
        result["upload_s"] = await upload(client, name, local, "big.txt")
        result["docker_cp_in_s"] = timed_cmd("docker", "cp", str(local), f"{container}:/tmp/big-cp.txt")
        down = work / "down.tar"
        result["download_s"] = await download(client, name, "big.txt", down)
        with tarfile.open(down) as tar:
            member = tar.extractfile("big.txt")
            assert member is not None
            h = hashlib.sha256()
            while chunk := member.read(4 * MIB):
                h.update(chunk)
            assert h.hexdigest() == digest, "the downloaded file differs"
        result["docker_cp_out_s"] = timed_cmd("docker", "cp", f"{container}:/home/work/big.txt", str(work / "cp.txt"))

        # (2) the stream
        code = "import shutil, sys\nshutil.copyfileobj(open('/home/work/big.txt'), sys.stdout, 1 << 20)\n"
        elapsed, received = await ws_stream(client, name, code)
        result["stream_s"], result["stream_received"] = elapsed, received
        result["docker_exec_cat_s"] = timed_cmd("docker", "exec", container, "cat", "/home/work/big.txt")
    finally:
        await client.call("DELETE", f"/session/{name}")
        await client.http.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return result


def report(r: dict[str, Any]) -> list[str]:
    mib = r["size_mib"]
    rate = lambda s: mib / s  # noqa: E731 - MiB/s
    lines = [
        f"query round trip print(1): p50 {r['round_trip_ms']['p50']:.2f} ms, p99 {r['round_trip_ms']['p99']:.2f} ms "
        f"(n={r['round_trip_ms']['n']}; target p50 < 10 ms)  |  docker exec python3 -c: "
        f"p50 {r['docker_exec_ms']['p50']:.1f} ms, p99 {r['docker_exec_ms']['p99']:.1f} ms",
        f"{mib} MiB stdout over the websocket: {r['stream_s']:.2f} s = {rate(r['stream_s']):.0f} MiB/s "
        f"({r['stream_received'] / MIB:.0f} MiB received)  |  docker exec cat: {r['docker_exec_cat_s']:.2f} s = "
        f"{rate(r['docker_exec_cat_s']):.0f} MiB/s  ->  {r['docker_exec_cat_s'] / r['stream_s']:.0%} (target >= 50%)",
        f"{mib} MiB upload: {r['upload_s']:.2f} s = {rate(r['upload_s']):.0f} MiB/s  |  docker cp in: "
        f"{r['docker_cp_in_s']:.2f} s  ->  {r['docker_cp_in_s'] / r['upload_s']:.0%} (target >= 50%)",
        f"{mib} MiB download: {r['download_s']:.2f} s = {rate(r['download_s']):.0f} MiB/s  |  docker cp out: "
        f"{r['docker_cp_out_s']:.2f} s  ->  {r['docker_cp_out_s'] / r['download_s']:.0%} (target >= 50%)",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args.size_mib, args.rounds))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(report(result)))


if __name__ == "__main__":
    main()
