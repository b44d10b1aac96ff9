"""Storage proxy transfer benchmark (issue 7), one run on this machine, stops by itself.

Prints, next to the targets:
  (1) one 1 GiB file, upload and download through the storage proxy the way the official client
      24.03.11 moves files: its own code runs the transfers (``aiotusclient``'s uploader with the
      SDK's 16 MiB chunks; ``VFolder._download_file`` with its 16 MiB reads and writer thread),
      in the official client's virtualenv, after a token is minted per file on the proxy's
      manager-facing API (the call the manager makes for ``request-upload``/``request-download``);
  (2) baselines in the same run on the same disk: ``cp``, and the same bytes over a bare aiohttp
      loopback server (PUT streamed to a file, GET answered with a FileResponse) in its own process;
  (3) 10,000 files of 4 KiB, uploaded then downloaded one after the other as the official client
      does (token, then tus PATCH / GET, per file), next to ``cp -r`` and the bare aiohttp server;
  (4) the proxy process's peak RSS (VmHWM) over the 1 GiB upload and download.
The large-file ratios compare the same client code (the official client's) against the proxy and
against the bare server, so they measure the proxy; the bare-client figures are printed too.
Targets: large-file throughput >= 70 % of the aiohttp baseline in both directions; the 10,000
small files in under 60 s each way; proxy peak RSS < 150 MiB.

Everything lives in a temp dir under /var/tmp (the root disk, as /var/lib/bai), removed at the end.
Usage: /opt/bai/venv/bin/python bench/storage_transfer.py [--size-mib 1024] [--files 10000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

OFFICIAL_PY = Path("/var/cache/bai/official-client-venv/bin/python")
PROXY_EXE = Path(sys.executable).parent / "bai-storage-proxy"
MIB = 2**20
SDK_CHUNK = 16 * MIB
TARGET_RATIO, TARGET_SMALL_S, TARGET_RSS_MIB = 0.70, 60.0, 150.0
AUTH = "X-BackendAI-Storage-Auth-Token"

# Runs in the official client's virtualenv: its transfer code, per file as the SDK does.
OFFICIAL_WORKER = textwrap.dedent('''
    import asyncio, json, sys, time
    from pathlib import Path
    import aiohttp
    from yarl import URL
    from aiotusclient import client
    from ai.backend.client.func.vfolder import VFolder

    job = json.loads(Path(sys.argv[1]).read_text())
    CHUNK = 16 * 2**20

    async def mint(http, op, relpath, size):
        body = {"volume": "volume1", "vfid": job["vfid"], "relpath": relpath}
        if op == "upload":
            body["size"] = size
        async with http.post(job["mgr"] + "/folder/file/" + op, json=body,
                             headers={"X-BackendAI-Storage-Auth-Token": job["secret"]}) as resp:
            assert resp.status == 200, await resp.text()
            return (await resp.json())["token"]

    async def main():
        folder = object.__new__(VFolder)  # only its file-transfer method is used
        async with aiohttp.ClientSession() as http:
            started = time.perf_counter()
            for local, relpath in job["files"]:
                if job["op"] in ("upload", "upload-url"):
                    if job["op"] == "upload":
                        token = await mint(http, "upload", relpath, Path(local).stat().st_size)
                        url = URL(job["client"] + "/upload").with_query(token=token)
                    else:  # the same client code against any URL (the bare server's)
                        url = URL(relpath)
                    with open(local, "rb") as stream:
                        uploader = client.TusClient().async_uploader(
                            file_stream=stream, url=url, upload_checksum=False, chunk_size=CHUNK)
                        await uploader.upload()
                elif job["op"] == "download":
                    token = await mint(http, "download", relpath, 0)
                    url = URL(job["client"] + "/download").with_query(token=token)
                    await folder._download_file(Path(local), url, CHUNK, 5, False)
                else:  # the same client code against any URL (the bare server's)
                    await folder._download_file(Path(local), URL(relpath), CHUNK, 5, False)
            print(json.dumps({"seconds": time.perf_counter() - started}))

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

    def official(self, op: str, vfid: str, files: list[tuple[str, str]], work: Path) -> float:
        job = {"op": op, "vfid": vfid, "files": files, "secret": self.secret,
               "mgr": f"http://127.0.0.1:{self.mport}", "client": f"http://127.0.0.1:{self.cport}"}
        job_log, job_file = work / f"official-{op}.log", work / f"official-{op}.json"
        job_file.write_text(json.dumps(job))
        with job_log.open("wb") as err:  # the SDK's progress bars go here
            done = subprocess.run([str(OFFICIAL_PY), "-c", OFFICIAL_WORKER, str(job_file)],
                                  stdout=subprocess.PIPE, stderr=err, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"official client {op} failed:\n{job_log.read_text()[-3000:]}")
        return float(json.loads(done.stdout.decode().strip().splitlines()[-1])["seconds"])


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


def run(size_mib: int, n_files: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bai-bench-storage-", dir="/var/tmp"))
    results: dict[str, Any] = {"size_mib": size_mib, "files": n_files}
    baseline_root = work / "baseline-server"
    baseline_root.mkdir()
    bport = free_port()
    server = subprocess.Popen([sys.executable, "-c", BASELINE_SERVER, str(baseline_root), str(bport)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = ProxyUnderTest(work)
    try:
        wait_port(bport, server)
        size = size_mib * MIB
        big = work / "big.bin"
        make_file(big, size)
        big_sha = sha256_of(big)

        # --- one large file -----------------------------------------------------------------
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

        proxy.start()  # a fresh process: its VmHWM covers exactly the 1 GiB transfers
        vfid, folder = asyncio.run(proxy.new_folder())
        results["proxy_rss_before_mib"] = rss_hwm_mib(proxy.pid)
        results["proxy_up_big_s"] = proxy.official("upload", vfid, [(str(big), "big.bin")], work)
        assert sha256_of(folder / "big.bin") == big_sha, "uploaded bytes differ"
        results["proxy_down_big_s"] = proxy.official("download", vfid, [(str(work / "big.down"), "big.bin")], work)
        assert sha256_of(work / "big.down") == big_sha, "downloaded bytes differ"
        results["proxy_rss_peak_mib"] = rss_hwm_mib(proxy.pid)
        results["sha256_equal"] = True
        for path in (work / "big.down", folder / "big.bin", big):
            path.unlink()

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
        shutil.rmtree(down_dir)
        down_dir.mkdir()
        vfid, folder = asyncio.run(proxy.new_folder())
        results["proxy_up_small_s"] = proxy.official(
            "upload", vfid, [(str(small_dir / n), f"small/{n}") for n in names], work)
        results["proxy_down_small_s"] = proxy.official(
            "download", vfid, [(str(down_dir / n), f"small/{n}") for n in names], work)
        assert all((down_dir / n).read_bytes() == (small_dir / n).read_bytes() for n in names), "small files differ"
        results["proxy_rss_after_small_mib"] = rss_hwm_mib(proxy.pid)
    finally:
        proxy.stop()
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    return results


def report(r: dict[str, Any]) -> list[str]:
    mib = r["size_mib"]

    def rate(seconds: float) -> str:
        return f"{mib / seconds:8.1f} MiB/s ({seconds:6.2f} s)"

    # Both sides with the official client's transfer code (its 16 MiB chunks read into memory, a
    # new connection per PATCH, its writer thread and queue cost the same whoever serves), so the
    # ratios are the proxy's own cost; the bare-client figures are printed next to them.
    up_ratio = r["http_up_big_official_s"] / r["proxy_up_big_s"]
    down_ratio = r["http_down_big_official_s"] / r["proxy_down_big_s"]
    ok = {
        "upload": up_ratio >= TARGET_RATIO, "download": down_ratio >= TARGET_RATIO,
        "small up": r["proxy_up_small_s"] < TARGET_SMALL_S, "small down": r["proxy_down_small_s"] < TARGET_SMALL_S,
        "rss": r["proxy_rss_peak_mib"] < TARGET_RSS_MIB,
    }
    mark = {True: "PASS", False: "FAIL"}
    return [
        f"one {mib} MiB file (sha256 equal after the round trip: {r['sha256_equal']})",
        f"  cp on the same disk           {rate(r['cp_big_s'])}",
        f"  bare aiohttp upload           {rate(r['http_up_big_s'])}  (bare aiohttp client, one PUT)",
        f"  bare aiohttp upload           {rate(r['http_up_big_official_s'])}  (official client's tus code)",
        f"  bare aiohttp download         {rate(r['http_down_big_s'])}  (bare aiohttp client)",
        f"  bare aiohttp download         {rate(r['http_down_big_official_s'])}  (official client's download code)",
        f"  proxy upload (official tus)   {rate(r['proxy_up_big_s'])}  {up_ratio:5.0%} of aiohttp, same client "
        f"[target >= {TARGET_RATIO:.0%}: {mark[ok['upload']]}]",
        f"  proxy download (official)     {rate(r['proxy_down_big_s'])}  {down_ratio:5.0%} of aiohttp, same client "
        f"[target >= {TARGET_RATIO:.0%}: {mark[ok['download']]}]",
        f"  proxy peak RSS (VmHWM)        {r['proxy_rss_peak_mib']:.1f} MiB (at start {r['proxy_rss_before_mib']:.1f})"
        f" [target < {TARGET_RSS_MIB:.0f} MiB: {mark[ok['rss']]}]",
        f"{r['files']} files of 4 KiB, one after the other",
        f"  cp -r                         {r['cp_small_s']:6.2f} s",
        f"  bare aiohttp up / down        {r['http_up_small_s']:6.2f} s / {r['http_down_small_s']:6.2f} s",
        f"  proxy upload (official)       {r['proxy_up_small_s']:6.2f} s [target < {TARGET_SMALL_S:.0f} s: "
        f"{mark[ok['small up']]}]",
        f"  proxy download (official)     {r['proxy_down_small_s']:6.2f} s [target < {TARGET_SMALL_S:.0f} s: "
        f"{mark[ok['small down']]}]",
        f"  proxy peak RSS after all      {r['proxy_rss_after_small_mib']:.1f} MiB",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not OFFICIAL_PY.exists():
        sys.exit(f"the official client's virtualenv is missing ({OFFICIAL_PY})")
    results = run(args.size_mib, args.files)
    print(json.dumps(results, indent=2) if args.json else "\n".join(report(results)))


if __name__ == "__main__":
    main()
