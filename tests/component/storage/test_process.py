"""A real ``bai-storage-proxy`` process: it starts from its TOML file, and an upload interrupted
by a ``kill -9`` resumes on the restarted proxy (HEAD answers the bytes on disk) and lands whole."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.fixtures.halfstack import free_port

from .conftest import AUTH

EXE = shutil.which("bai-storage-proxy") or str(Path(sys.executable).parent / "bai-storage-proxy")


class ProxyProcess:
    def __init__(self, tmp: Path) -> None:
        self.volume = tmp / "vol"
        self.volume.mkdir()
        self.manager_port, self.client_port = free_port(), free_port()
        self.manager_secret, self.jwt_secret = secrets.token_hex(16), secrets.token_hex(16)
        self.config = tmp / "storage-proxy.toml"
        self.config.write_text(f"""
[etcd]
namespace = "local"
addr = "127.0.0.1:2379"

[storage-proxy]
node-id = "i-storage-test"
secret = "{self.jwt_secret}"
session-expire = "1d"
max-upload-size = "1g"
scandir-limit = 1000

[api.client]
service-addr = "127.0.0.1:{self.client_port}"

[api.manager]
service-addr = "127.0.0.1:{self.manager_port}"
secret = "{self.manager_secret}"

[volume.volume1]
backend = "vfs"
path = "{self.volume}"

[logging]
level = "INFO"
""")
        self.log = tmp / "proxy.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([EXE, "start", "--config", str(self.config)], stdout=log, stderr=log)

    async def wait_ready(self, http: aiohttp.ClientSession, deadline: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        while True:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            try:
                async with http.get(f"http://127.0.0.1:{self.client_port}/") as a, \
                        http.get(f"http://127.0.0.1:{self.manager_port}/status") as b:
                    if a.status == 200 and b.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert loop.time() < end, "the storage proxy did not come up: " + self.log.read_text()
            await asyncio.sleep(0.05)

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=15)


@pytest.fixture
def proxy_process(tmp_path: Path) -> Iterator[ProxyProcess]:
    proc = ProxyProcess(tmp_path)
    try:
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.kill()


async def test_upload_survives_a_proxy_restart(proxy_process: ProxyProcess) -> None:
    pp = proxy_process
    data = os.urandom(24 * 1024 * 1024 + 5)
    vfid = f"user:{uuid.uuid4()}/{uuid.uuid4().hex}"
    mgr = f"http://127.0.0.1:{pp.manager_port}"
    upload_url = f"http://127.0.0.1:{pp.client_port}/upload"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        pp.start()
        await pp.wait_ready(http)
        headers = {AUTH: pp.manager_secret}
        async with http.post(mgr + "/folder/create", json={"volume": "volume1", "vfid": vfid}, headers=headers) as r:
            assert r.status == 204
        async with http.post(mgr + "/folder/file/upload", headers=headers,
                             json={"volume": "volume1", "vfid": vfid, "relpath": "big.bin", "size": len(data)}) as r:
            token = (await r.json())["token"]
        half = len(data) // 2
        tus = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}
        async with http.patch(upload_url, params={"token": token}, data=data[:half],
                              headers={**tus, "Upload-Offset": "0"}) as r:
            assert r.status == 204 and int(r.headers["Upload-Offset"]) == half

        assert pp.kill() == -signal.SIGKILL
        pp.start()
        await pp.wait_ready(http)

        async with http.head(upload_url, params={"token": token}, headers=tus) as r:
            assert r.status == 200
            offset = int(r.headers["Upload-Offset"])
            assert offset == half and int(r.headers["Upload-Length"]) == len(data)
        async with http.patch(upload_url, params={"token": token}, data=data[offset:],
                              headers={**tus, "Upload-Offset": str(offset)}) as r:
            assert r.status == 204 and int(r.headers["Upload-Offset"]) == len(data)
        async with http.post(mgr + "/folder/file/download", headers=headers,
                             json={"volume": "volume1", "vfid": vfid, "relpath": "big.bin"}) as r:
            dtoken = (await r.json())["token"]
        digest = hashlib.sha256()
        async with http.get(f"http://127.0.0.1:{pp.client_port}/download", params={"token": dtoken}) as r:
            assert r.status == 200
            async for chunk in r.content.iter_chunked(1 << 20):
                digest.update(chunk)
        assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert pp.kill(signal.SIGTERM) == 0  # a clean stop on SIGTERM


def test_a_bad_config_or_missing_volume_stops_with_a_clear_message(tmp_path: Path) -> None:
    pp = ProxyProcess(tmp_path)
    shutil.rmtree(pp.volume)
    done = subprocess.run([EXE, "start", "--config", str(pp.config)], capture_output=True, timeout=30)
    assert done.returncode == 1 and b"volume1" in done.stderr and b"not a writable directory" in done.stderr
    pp.config.write_text(pp.config.read_text().replace('node-id = "i-storage-test"', "bogus = 1"))
    done = subprocess.run([EXE, "start", "--config", str(pp.config)], capture_output=True, timeout=30)
    assert done.returncode == 2 and b"storage-proxy.bogus" in done.stderr
