"""Storage transfer benchmark (issue 7), one run on this machine, stops by itself.

Prints, next to the targets:
  (1) one 1 GiB file, upload and download the way the official client 24.03.11 moves files: its
      own code runs in its virtualenv. Through the manager (the issue's path): the token comes
      from the installed node's ``POST /folders/{name}/request-upload`` / ``request-download``,
      signed by the SDK's ``Request`` exactly as ``VFolder.upload`` / ``VFolder.download`` ask,
      then ``aiotusclient``'s uploader (16 MiB chunks) or ``VFolder._download_file`` (16 MiB reads,
      writer thread) talks to the node's storage proxy. Proxy only (labelled so): the same client
      code against a fresh ``bai-storage-proxy`` whose token is minted on its manager-facing API;
  (2) baselines in the same run on the same disk: ``cp``, and the same bytes over a bare aiohttp
      loopback server (PUT streamed to a file, GET answered with a FileResponse) in its own process;
  (3) 10,000 files of 4 KiB, uploaded then downloaded: through the manager with ``--concurrency``
      files in flight (each in flight file is the SDK's token-then-transfer sequence), and a
      ``--sequential-files`` subset one at a time as the official CLI does, for the per-file cost;
      proxy only one at a time; ``cp -r`` and the bare aiohttp server;
  (4) memory: the fresh proxy's peak RSS (VmHWM) over its 1 GiB transfers, and the installed
      proxy's peak VmRSS sampled every 50 ms over the manager-path 1 GiB transfers.
The large-file ratios compare the same client code (the official client's) against the proxy and
against the bare server, so they measure our side; the bare-client figures are printed too.
Targets: large-file throughput >= 70 % of the aiohttp baseline in both directions; the 10,000
small files in under 60 s each way; proxy peak RSS < 150 MiB.

Everything lives in a temp dir under /var/tmp (the root disk, as /var/lib/bai), removed at the end;
the folders made on the node are deleted (trash, then data) at the end.
Usage: /opt/bai/venv/bin/python bench/storage_transfer.py [--size-mib 1024] [--files 10000]
       [--concurrency 8] [--sequential-files 1000] [--proxy-only] [--json]
The manager path needs the installed node (/etc/backend.ai/client.env; BACKEND_* variables set in
the environment win); --proxy-only skips it. The default run makes ~22,000 signed requests: use a
keypair whose rate limit (per 15 minutes) allows them (`backend.ai admin keypair add -r 100000`).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

OFFICIAL_PY = Path("/var/cache/bai/official-client-venv/bin/python")
PROXY_EXE = Path(sys.executable).parent / "bai-storage-proxy"
CLIENT_ENV = Path("/etc/backend.ai/client.env")
MIB = 2**20
SDK_CHUNK = 16 * MIB
TARGET_RATIO, TARGET_SMALL_S, TARGET_RSS_MIB = 0.70, 60.0, 150.0
AUTH = "X-BackendAI-Storage-Auth-Token"

# Runs in the official client's virtualenv: its transfer code, per file as the SDK does. Tokens come
# from the manager (``request-upload`` / ``request-download``, signed by the SDK's own Request, as
# ``VFolder.upload`` / ``VFolder.download`` do) or, for the proxy-only figures, from the proxy's
# manager-facing API directly. ``concurrency`` workers each take every n-th file, one at a time.
OFFICIAL_WORKER = textwrap.dedent('''
    import asyncio, json, sys, time, uuid
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path
    import aiohttp
    from yarl import URL
    from aiotusclient import client
    from ai.backend.client.func.vfolder import VFolder
    from ai.backend.client.request import Request
    from ai.backend.client.session import AsyncSession

    job = json.loads(Path(sys.argv[1]).read_text())
    CHUNK = 16 * 2**20

    async def mint(http, op, relpath, size):
        """Proxy-only: the call the manager makes, straight to the proxy's manager-facing API."""
        body = {"volume": "volume1", "vfid": job["vfid"], "relpath": relpath}
        if op == "upload":
            body["size"] = size
        async with http.post(job["mgr"] + "/folder/file/" + op, json=body,
                             headers={"X-BackendAI-Storage-Auth-Token": job["secret"]}) as resp:
            assert resp.status == 200, await resp.text()
            return URL(job["client"] + "/" + op).with_query(token=(await resp.json())["token"])

    async def request(op, relpath, size):
        """Through the manager, exactly as VFolder._upload_files / VFolder.download ask."""
        rqst = Request("POST", "/folders/{}/request-{}".format(job["folder"], op))
        rqst.set_json({"path": relpath, "size": size} if op == "upload" else {"path": relpath})
        async with rqst.fetch() as resp:
            info = await resp.json()
        return URL(info["url"]).with_query({"token": info["token"]})

    async def one(http, folder, op, local, relpath):
        if op in ("upload", "download"):
            size = Path(local).stat().st_size if op == "upload" else 0
            url = await (request(op, relpath, size) if job["via"] == "manager" else mint(http, op, relpath, size))
        else:  # the same client code against any URL (the bare server's)
            url, op = URL(relpath), op.removesuffix("-url")
        if op == "upload":
            with open(local, "rb") as stream:
                uploader = client.TusClient().async_uploader(
                    file_stream=stream, url=url, upload_checksum=False, chunk_size=CHUNK)
                await uploader.upload()
        else:
            await folder._download_file(Path(local), url, CHUNK, 5, False)

    async def transfer(http):
        folder = object.__new__(VFolder)  # only its file-transfer method is used
        files, n = job["files"], job["concurrency"]
        # Each download in flight holds a default-executor thread (its writer) while janus wakes
        # that writer through the same executor: with as many downloads as threads (6 on a 2-core
        # box) nothing wakes anyone. The SDK's code is unchanged; its executor gets room.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=2 * n + 4))

        async def worker(share):
            for local, relpath in share:
                await one(http, folder, job["op"], local, relpath)

        started = time.perf_counter()
        await asyncio.gather(*(worker(files[i::n]) for i in range(n)))
        return time.perf_counter() - started

    async def main():
        async with aiohttp.ClientSession() as http:
            if job["via"] != "manager":
                print(json.dumps({"seconds": await transfer(http)}))
                return
            async with AsyncSession():
                if job["op"] == "create":
                    print(json.dumps(await VFolder.create(job["folder"])))
                elif job["op"] == "delete":  # to the trash, then its data
                    await VFolder.delete_by_id(job["id"])
                    await VFolder(job["folder"], id=uuid.UUID(job["id"])).delete_trash()
                    print(json.dumps({}))
                else:
                    print(json.dumps({"seconds": await transfer(http)}))

    asyncio.run(main())
''')

# The bare aiohttp loopback server of the baseline, in its own process.
BASELINE_SERVER = textwrap.dedent('''
    import sys
    from pathlib import Path
    from aiohttp import web
    root = Path(sys.argv[1])

    async def put(request):
        with open(root / request.match_info["name"], "wb") as f:
            async for chunk in request.content.iter_chunked(2**20):
                f.write(chunk)
        return web.Response(status=204)

    async def get(request):
        return web.FileResponse(root / request.match_info["name"])

    async def patch(request):  # the least a tus server does: append at the offset, answer it
        with open(root / request.match_info["name"], "ab") as f:
            async for chunk in request.content.iter_chunked(2**20):
                f.write(chunk)
            offset = f.tell()
        return web.Response(status=204, headers={"Upload-Offset": str(offset), "Tus-Resumable": "1.0.0"})

    app = web.Application()
    app.router.add_put("/f/{name}", put)
    app.router.add_get("/f/{name}", get)
    app.router.add_patch("/f/{name}", patch)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None, access_log=None)
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early with {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} not open after {deadline} s")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def make_file(path: Path, size: int) -> None:
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, 16 * MIB)
            f.write(os.urandom(n))
            left -= n


def timed(fn: Any, *args: Any) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def rss_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


class ProxyUnderTest:
    """A real ``bai-storage-proxy`` process over a volume in the work dir."""

    def __init__(self, work: Path) -> None:
        self.volume = work / "volume"
        self.volume.mkdir(exist_ok=True)
        self.mport, self.cport = free_port(), free_port()
        self.secret = secrets.token_hex(16)
        self.config = work / "storage-proxy.toml"
        self.config.write_text(textwrap.dedent(f"""
            [storage-proxy]
            node-id = "i-bench"
            secret = "{secrets.token_hex(16)}"
            session-expire = "1d"
            [api.client]
            service-addr = "127.0.0.1:{self.cport}"
            [api.manager]
            service-addr = "127.0.0.1:{self.mport}"
            secret = "{self.secret}"
            [volume.volume1]
            backend = "vfs"
            path = "{self.volume}"
            [logging]
            level = "WARNING"
        """))
        self.log = work / "proxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([str(PROXY_EXE), "start", "--config", str(self.config)],
                                         stdout=log, stderr=log)
        wait_port(self.mport, self.proc)
        wait_port(self.cport, self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def new_folder(self) -> tuple[str, Path]:
        vfid = f"user:{uuid.uuid4()}/{uuid.uuid4().hex}"
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{self.mport}/folder/create", json={"volume": "volume1", "vfid": vfid},
                headers={AUTH: self.secret}) as resp:
            assert resp.status == 204, await resp.text()
        qs, hexid = vfid.split("/")
        path = self.volume / uuid.UUID(qs.split(":", 1)[1]).hex / hexid[:2] / hexid[2:4] / hexid[4:]
        return vfid, path

    def official(self, op: str, vfid: str, files: list[tuple[str, str]], work: Path, concurrency: int = 1) -> float:
        job = {"via": "proxy", "op": op, "vfid": vfid, "files": files, "secret": self.secret,
               "concurrency": concurrency,
               "mgr": f"http://127.0.0.1:{self.mport}", "client": f"http://127.0.0.1:{self.cport}"}
        return float(run_official(job, work)["seconds"])


def run_official(job: dict[str, Any], work: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The worker in the official client's virtualenv; its one JSON line of answer."""
    tag = f"official-{job['via']}-{job['op']}"
    job_log, job_file = work / f"{tag}.log", work / f"{tag}.json"
    job_file.write_text(json.dumps(job))
    with job_log.open("wb") as err:  # the SDK's progress bars go here
        done = subprocess.run([str(OFFICIAL_PY), "-c", OFFICIAL_WORKER, str(job_file)],
                              stdout=subprocess.PIPE, stderr=err, timeout=1800, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"official client {tag} failed:\n{job_log.read_text()[-3000:]}")
    answer: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return answer


def client_env(path: Path = CLIENT_ENV) -> dict[str, str]:
    """The installed node's client settings (``export KEY=VALUE`` lines) under this environment:
    a ``BACKEND_*`` variable already set wins (e.g. a keypair whose rate limit allows the run:
    every file costs one signed request, 20,000+ for the default run, and the limit is per
    access key over a rolling 15 minutes)."""
    env = dict(os.environ)
    for line in path.read_text().splitlines():
        key, sep, value = line.removeprefix("export ").partition("=")
        if sep and key.startswith("BACKEND_"):
            env.setdefault(key.strip(), value.strip().strip("\"'"))
    return env


class ManagerPath:
    """The installed node: a folder made through the manager, tokens from its ``request-upload`` /
    ``request-download`` (the official SDK signs), bytes to the node's storage proxy."""

    def __init__(self, work: Path, concurrency: int) -> None:
        self.work = work
        self.env = client_env()
        self.concurrency = concurrency
        self.folders: dict[str, str] = {}

    def new_folder(self) -> str:
        name = f"bench-{uuid.uuid4().hex[:12]}"
        made = run_official({"via": "manager", "op": "create", "folder": name}, self.work, self.env)
        self.folders[name] = str(made["id"])
        return name

    def transfer(self, op: str, folder: str, files: list[tuple[str, str]], concurrency: int | None = None) -> float:
        job = {"via": "manager", "op": op, "folder": folder, "files": files,
               "concurrency": concurrency or self.concurrency}
        return float(run_official(job, self.work, self.env)["seconds"])

    def cleanup(self) -> None:
        for name, folder_id in list(self.folders.items()):
            try:
                run_official({"via": "manager", "op": "delete", "folder": name, "id": folder_id}, self.work, self.env)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"warning: folder {name} not removed: {exc}", file=sys.stderr)
            del self.folders[name]


def proxy_pid() -> int | None:
    """The installed node's storage proxy process (supervisord's), for its RSS during a transfer."""
    try:
        out = subprocess.run(["supervisorctl", "pid", "bai-storage-proxy"], capture_output=True, text=True,
                             timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return int(out) if out.isdigit() and int(out) > 0 else None


class RssSampler:
    """The peak VmRSS of a long-running process over a window (its VmHWM covers its whole life)."""

    def __init__(self, pid: int | None, every: float = 0.05) -> None:
        self.pid, self.every, self.peak_kib = pid, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            except OSError:
                return
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        if self.pid is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def peak_mib(self) -> float | None:
        return self.peak_kib / 1024 if self.peak_kib else None


async def baseline_http(port: int, files: list[tuple[Path, str]], op: str) -> float:
    """The same bytes over the bare aiohttp server: one keep-alive session, files in sequence."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as http:
        started = time.perf_counter()
        for local, name in files:
            url = f"http://127.0.0.1:{port}/f/{name}"
            if op == "upload":
                with local.open("rb") as f:
                    async with http.put(url, data=f) as resp:
                        assert resp.status == 204
            else:
                async with http.get(url) as resp:
                    assert resp.status == 200
                    with local.open("wb") as out:
                        async for chunk in resp.content.iter_chunked(SDK_CHUNK):
                            out.write(chunk)
        return time.perf_counter() - started


def run(size_mib: int, n_files: int, concurrency: int, sequential_files: int, proxy_only: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bai-bench-storage-", dir="/var/tmp"))
    results: dict[str, Any] = {"size_mib": size_mib, "files": n_files, "concurrency": concurrency,
                               "sequential_files": min(sequential_files, n_files), "manager": not proxy_only}
    baseline_root = work / "baseline-server"
    baseline_root.mkdir()
    bport = free_port()
    server = subprocess.Popen([sys.executable, "-c", BASELINE_SERVER, str(baseline_root), str(bport)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = ProxyUnderTest(work)
    node = None if proxy_only else ManagerPath(work, concurrency)
    try:
        wait_port(bport, server)
        size = size_mib * MIB
        big = work / "big.bin"
        make_file(big, size)
        big_sha = sha256_of(big)

        # --- one large file: baselines ------------------------------------------------------
        results["cp_big_s"] = timed(subprocess.run, ["cp", str(big), str(work / "big.cp")])
        (work / "big.cp").unlink()
        results["http_up_big_s"] = asyncio.run(baseline_http(bport, [(big, "big.bin")], "upload"))
        (baseline_root / "big.bin").unlink()
        # The official client's tus code against the bare server (PATCHes appended as they come).
        results["http_up_big_official_s"] = proxy.official(
            "upload-url", "", [(str(big), f"http://127.0.0.1:{bport}/f/big.bin")], work)
        assert sha256_of(baseline_root / "big.bin") == big_sha
        results["http_down_big_s"] = asyncio.run(baseline_http(bport, [(work / "big.http", "big.bin")], "download"))
        assert sha256_of(work / "big.http") == big_sha
        (work / "big.http").unlink()
        # The official client's download code against the bare server: the same client on both
        # sides of the comparison, so the ratio is the proxy's own cost.
        results["http_down_big_official_s"] = proxy.official(
            "download-url", "", [(str(work / "big.http"), f"http://127.0.0.1:{bport}/f/big.bin")], work)
        assert sha256_of(work / "big.http") == big_sha
        (work / "big.http").unlink()
        (baseline_root / "big.bin").unlink()

        # --- one large file: proxy only (token minted on the proxy) --------------------------
        proxy.start()  # a fresh process: its VmHWM covers exactly the 1 GiB transfers
        vfid, folder = asyncio.run(proxy.new_folder())
        results["proxy_rss_before_mib"] = rss_hwm_mib(proxy.pid)
        results["proxy_up_big_s"] = proxy.official("upload", vfid, [(str(big), "big.bin")], work)
        assert sha256_of(folder / "big.bin") == big_sha, "uploaded bytes differ"
        results["proxy_down_big_s"] = proxy.official("download", vfid, [(str(work / "big.down"), "big.bin")], work)
        assert sha256_of(work / "big.down") == big_sha, "downloaded bytes differ"
        results["proxy_rss_peak_mib"] = rss_hwm_mib(proxy.pid)
        for path in (work / "big.down", folder / "big.bin"):
            path.unlink()

        # --- one large file: through the manager (the official client's whole path) ----------
        if node is not None:
            name = node.new_folder()
            with RssSampler(proxy_pid()) as rss:
                results["mgr_up_big_s"] = node.transfer("upload", name, [(str(big), "big.bin")], 1)
                results["mgr_down_big_s"] = node.transfer("download", name, [(str(work / "big.down"), "big.bin")], 1)
            assert sha256_of(work / "big.down") == big_sha, "downloaded bytes differ (manager path)"
            results["mgr_proxy_rss_peak_mib"] = rss.peak_mib
            (work / "big.down").unlink()
            node.cleanup()
        results["sha256_equal"] = True
        big.unlink()

        # --- many small files ---------------------------------------------------------------
        small_dir = work / "small"
        small_dir.mkdir()
        for i in range(n_files):
            (small_dir / f"f{i:05d}.bin").write_bytes(os.urandom(4096))
        names = sorted(p.name for p in small_dir.iterdir())
        results["cp_small_s"] = timed(subprocess.run, ["cp", "-r", str(small_dir), str(work / "small.cp")])
        shutil.rmtree(work / "small.cp")
        results["http_up_small_s"] = asyncio.run(baseline_http(bport, [(small_dir / n, n) for n in names], "upload"))
        down_dir = work / "small.down"
        down_dir.mkdir()
        results["http_down_small_s"] = asyncio.run(
            baseline_http(bport, [(down_dir / n, n) for n in names], "download"))

        def fresh_down_dir() -> None:
            shutil.rmtree(down_dir)
            down_dir.mkdir()

        def same_bytes(subset: list[str]) -> bool:
            return all((down_dir / n).read_bytes() == (small_dir / n).read_bytes() for n in subset)

        fresh_down_dir()
        vfid, folder = asyncio.run(proxy.new_folder())
        results["proxy_up_small_s"] = proxy.official(
            "upload", vfid, [(str(small_dir / n), f"small/{n}") for n in names], work)
        results["proxy_down_small_s"] = proxy.official(
            "download", vfid, [(str(down_dir / n), f"small/{n}") for n in names], work)
        assert same_bytes(names), "small files differ (proxy only)"
        results["proxy_rss_after_small_mib"] = rss_hwm_mib(proxy.pid)
        proxy.stop()

        if node is not None:
            # The official CLI's way (one file after the other) on a subset, for the per-file cost.
            seq = names[:results["sequential_files"]]
            fresh_down_dir()
            name = node.new_folder()
            results["mgr_up_seq_s"] = node.transfer(
                "upload", name, [(str(small_dir / n), f"seq/{n}") for n in seq], 1)
            results["mgr_down_seq_s"] = node.transfer(
                "download", name, [(str(down_dir / n), f"seq/{n}") for n in seq], 1)
            assert same_bytes(seq), "small files differ (manager path, sequential)"
            # All of them, ``concurrency`` files in flight.
            fresh_down_dir()
            results["mgr_up_small_s"] = node.transfer(
                "upload", name, [(str(small_dir / n), f"small/{n}") for n in names])
            results["mgr_down_small_s"] = node.transfer(
                "download", name, [(str(down_dir / n), f"small/{n}") for n in names])
            assert same_bytes(names), "small files differ (manager path)"
    finally:
        proxy.stop()
        if node is not None:
            node.cleanup()
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    return results


def report(r: dict[str, Any]) -> list[str]:
    mib = r["size_mib"]

    def rate(seconds: float) -> str:
        return f"{mib / seconds:8.1f} MiB/s ({seconds:6.2f} s)"

    mark = {True: "PASS", False: "FAIL"}

    def verdict(ok: bool, target: str) -> str:
        return f"[target {target}: {mark[ok]}]"

    # Both sides with the official client's transfer code (its 16 MiB chunks read into memory, a
    # new connection per PATCH, its writer thread and queue cost the same whoever serves), so the
    # ratios are the proxy's own cost; the bare-client figures are printed next to them.
    up_base, down_base = r["http_up_big_official_s"], r["http_down_big_official_s"]
    ratio_t, small_t, rss_t = f">= {TARGET_RATIO:.0%}", f"< {TARGET_SMALL_S:.0f} s", f"< {TARGET_RSS_MIB:.0f} MiB"
    lines = [
        f"one {mib} MiB file (sha256 equal after every round trip: {r['sha256_equal']})",
        f"  cp on the same disk               {rate(r['cp_big_s'])}",
        f"  bare aiohttp upload               {rate(r['http_up_big_s'])}  (bare aiohttp client, one PUT)",
        f"  bare aiohttp upload               {rate(up_base)}  (official client's tus code)",
        f"  bare aiohttp download             {rate(r['http_down_big_s'])}  (bare aiohttp client)",
        f"  bare aiohttp download             {rate(down_base)}  (official client's download code)",
    ]
    if r["manager"]:
        up, down = up_base / r["mgr_up_big_s"], down_base / r["mgr_down_big_s"]
        peak = r["mgr_proxy_rss_peak_mib"]
        lines += [
            f"  manager + proxy upload            {rate(r['mgr_up_big_s'])}  {up:5.0%} of aiohttp, same client "
            + verdict(up >= TARGET_RATIO, ratio_t),
            f"  manager + proxy download          {rate(r['mgr_down_big_s'])}  {down:5.0%} of aiohttp, same client "
            + verdict(down >= TARGET_RATIO, ratio_t),
            "  installed proxy peak RSS (VmRSS)  " + ("n/a" if peak is None else f"{peak:.1f} MiB ")
            + ("" if peak is None else verdict(peak < TARGET_RSS_MIB, rss_t)),
        ]
    up, down = up_base / r["proxy_up_big_s"], down_base / r["proxy_down_big_s"]
    lines += [
        f"  proxy only upload (token minted)  {rate(r['proxy_up_big_s'])}  {up:5.0%} of aiohttp, same client "
        + verdict(up >= TARGET_RATIO, ratio_t),
        f"  proxy only download               {rate(r['proxy_down_big_s'])}  {down:5.0%} of aiohttp, same client "
        + verdict(down >= TARGET_RATIO, ratio_t),
        f"  fresh proxy peak RSS (VmHWM)      {r['proxy_rss_peak_mib']:.1f} MiB (at start "
        f"{r['proxy_rss_before_mib']:.1f}) " + verdict(r["proxy_rss_peak_mib"] < TARGET_RSS_MIB, rss_t),
        f"{r['files']} files of 4 KiB",
        f"  cp -r                             {r['cp_small_s']:6.2f} s",
        f"  bare aiohttp up / down            {r['http_up_small_s']:6.2f} s / {r['http_down_small_s']:6.2f} s"
        "  (one keep-alive session, one after the other)",
    ]
    if r["manager"]:
        n_seq = r["sequential_files"]
        lines += [
            f"  manager + proxy upload            {r['mgr_up_small_s']:6.2f} s, {r['concurrency']} in flight "
            + verdict(r["mgr_up_small_s"] < TARGET_SMALL_S, small_t),
            f"  manager + proxy download          {r['mgr_down_small_s']:6.2f} s, {r['concurrency']} in flight "
            + verdict(r["mgr_down_small_s"] < TARGET_SMALL_S, small_t),
            f"  manager + proxy, one at a time    up {r['mgr_up_seq_s'] / n_seq * 1000:5.2f} ms/file, down "
            f"{r['mgr_down_seq_s'] / n_seq * 1000:5.2f} ms/file ({n_seq} files; the official CLI's way)",
        ]
    lines += [
        f"  proxy only upload (token minted)  {r['proxy_up_small_s']:6.2f} s, one at a time "
        + verdict(r["proxy_up_small_s"] < TARGET_SMALL_S, small_t),
        f"  proxy only download               {r['proxy_down_small_s']:6.2f} s, one at a time "
        + verdict(r["proxy_down_small_s"] < TARGET_SMALL_S, small_t),
        f"  fresh proxy peak RSS after all    {r['proxy_rss_after_small_mib']:.1f} MiB",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8,
                        help="files in flight on the manager path (the official CLI: 1; ours: 8)")
    parser.add_argument("--sequential-files", type=int, default=1000,
                        help="files sent one at a time on the manager path, for the per-file cost")
    parser.add_argument("--proxy-only", action="store_true",
                        help="skip the manager path (no installed node needed)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not OFFICIAL_PY.exists():
        sys.exit(f"the official client's virtualenv is missing ({OFFICIAL_PY})")
    if not args.proxy_only and not CLIENT_ENV.exists():
        sys.exit(f"no installed node ({CLIENT_ENV} is missing): run it with --proxy-only")
    if args.concurrency < 1 or args.sequential_files < 1:
        sys.exit("--concurrency and --sequential-files take a positive number")
    # A stop (SIGTERM) still runs the clean-up: the proxy under test, the temp dir, the folders.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    results = run(args.size_mib, args.files, args.concurrency, args.sequential_files, args.proxy_only)
    print(json.dumps(results, indent=2) if args.json else "\n".join(report(results)))


if __name__ == "__main__":
    main()
