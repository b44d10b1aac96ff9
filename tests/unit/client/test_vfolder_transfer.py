"""Uploads (tus 1.0.0) and downloads of the SDK and of ``backend.ai vfolder upload|download``
against a tiny real peer: an aiohttp app, on its own thread, that answers the manager's transfer
calls (``request-upload``, ``request-download``, ``files``, ``mkdir``) and the storage proxy's
client API (``HEAD``/``PATCH /upload``, ``GET /download`` with ranges), keeping the folder on disk.

The peer checks what a strict tus server checks (``Tus-Resumable``, ``Content-Type``,
``Upload-Offset`` = what it holds, else 409) and can be told to fail or stall a chunk.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner, Result

from bai.client import vfolder as sdk
from bai.client.cli.main import cli
from bai.client.config import APIConfig
from bai.client.exceptions import BackendClientError
from bai.client.request import APISession
from bai.client.transfer import DownloadStateStore, TransferError, UploadStateStore, partial_path

FOLDER = "vf1"


@dataclass
class Upload:
    folder: str
    path: str
    size: int
    data: bytearray = field(default_factory=bytearray)


class Peer:
    """Manager transfer calls + storage proxy client API, serving ``root/<folder>/...``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uploads: dict[str, Upload] = {}
        self.downloads: dict[str, tuple[str, str, bool]] = {}
        self.patches: list[tuple[str, int]] = []  # (Upload-Offset sent, bytes)
        self.heads = 0
        self.request_uploads: list[dict[str, Any]] = []
        self.mkdirs: list[Any] = []
        self.download_headers: list[dict[str, str]] = []
        self.fail_next_patch: int | None = None  # status to answer the next PATCH with
        self.stall_after: int | None = None  # PATCHes beyond this many wait for `release`
        self.cut_next_download = False  # send half the bytes, then drop the connection
        self.complete_empty_at_once = False  # an empty upload is placed by request-upload
        self.restart_after: int | None = None  # the PATCH after this many drops its connection and
        self.restarts = 0  # the peer stops listening for a while (a proxy restart)
        self._site: web.TCPSite
        #: other /folders (and /admin/gql) calls: recorded, answered from `canned` (default 200 {})
        self.recorded: list[tuple[str, str, Any]] = []
        self.canned: dict[tuple[str, str], tuple[int, Any]] = {}
        self.bgtask_script: list[tuple[str, dict[str, Any]]] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self._release: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()

    # -- lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="vfolder-peer", daemon=True)
        self._thread.start()
        assert self._started.wait(10), "peer did not start"

    def stop(self) -> None:
        self.release()
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def release(self) -> None:
        if self.loop is not None and self._release is not None:
            self.loop.call_soon_threadsafe(self._release.set)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self._serve())
        self._started.set()
        loop.run_forever()
        if self._runner is not None:
            loop.run_until_complete(self._runner.cleanup())
        loop.close()

    async def _serve(self) -> None:
        self._release = asyncio.Event()
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_get("/", self.root_info)
        app.router.add_post("/folders/{name}/request-upload", self.request_upload)
        app.router.add_post("/folders/{name}/request-download", self.request_download)
        app.router.add_get("/folders/{name}/files", self.list_files)
        app.router.add_post("/folders/{name}/mkdir", self.mkdir)
        app.router.add_route("HEAD", "/upload", self.tus_head)
        app.router.add_patch("/upload", self.tus_patch)
        app.router.add_get("/download", self.download)
        app.router.add_get("/events/background-task", self.bgtask_events)
        app.router.add_route("*", "/admin/gql", self.record)
        app.router.add_route("*", "/folders{tail:.*}", self.record)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._site = site

    async def _restart(self, down_for: float) -> None:
        """Stop listening (connections are refused), then listen again on the same port: what a
        client sees of a proxy restart."""
        await self._site.stop()
        self.restarts += 1
        await asyncio.sleep(down_for)  # the restart's duration (not a synchronisation)
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await self._site.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def folder(self, name: str = FOLDER) -> Path:
        return self.root / name

    def env(self) -> dict[str, str]:
        return {"BACKEND_ENDPOINT": self.url, "BACKEND_ACCESS_KEY": "AKIAIOSFODNN7EXAMPLE",
                "BACKEND_SECRET_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}

    # -- manager side

    async def root_info(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "v8.20240315", "manager": "24.03.11"})

    async def request_upload(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.request_uploads.append(body)
        token = uuid.uuid4().hex
        if self.complete_empty_at_once and int(body["size"]) == 0:
            (self.folder(request.match_info["name"]) / body["path"]).write_bytes(b"")
        else:
            self.uploads[token] = Upload(request.match_info["name"], body["path"], int(body["size"]))
        return web.json_response({"token": token, "url": f"{self.url}/upload"})

    async def request_download(self, request: web.Request) -> web.Response:
        body = await request.json()
        target = self.folder(request.match_info["name"]) / body["path"]
        if not target.exists():
            return web.json_response({"title": "No such file"}, status=404)
        token = uuid.uuid4().hex
        self.downloads[token] = (request.match_info["name"], body["path"], bool(body.get("archive")))
        return web.json_response({"token": token, "url": f"{self.url}/download"})

    async def list_files(self, request: web.Request) -> web.Response:
        base = self.folder(request.match_info["name"]) / request.query.get("path", ".")
        items = [{"name": p.name, "type": "DIRECTORY" if p.is_dir() else "FILE", "size": p.stat().st_size,
                  "mode": "644", "created": "2026-11-26T17:47:27.727916+00:00",
                  "modified": "2026-11-26T17:47:27.727916+00:00"} for p in sorted(base.iterdir())]
        return web.json_response({"items": items, "files": "[]"})

    async def mkdir(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.mkdirs.append(body)
        self.recorded.append((request.method, request.path_qs, body))
        paths = body["path"] if isinstance(body["path"], list) else [body["path"]]
        for p in paths:
            (self.folder(request.match_info["name"]) / p).mkdir(parents=True, exist_ok=True)
        return web.json_response({"results": {"success": [{"item": p} for p in paths], "failed": []}},
                                 status=201)

    async def record(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.recorded.append((request.method, request.path_qs, body))
        status, answer = self.canned.get((request.method, request.path), (200, {}))
        if status == 204:
            return web.Response(status=204)
        ctype = "application/problem+json" if status >= 400 else "application/json"
        return web.Response(status=status, text=json.dumps(answer), content_type=ctype)

    async def bgtask_events(self, request: web.Request) -> web.StreamResponse:
        self.recorded.append((request.method, request.path_qs, None))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for event, data in self.bgtask_script:
            await resp.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
        return resp

    # -- storage proxy side

    def _session(self, request: web.Request) -> Upload | None:
        return self.uploads.get(request.query.get("token", ""))

    async def tus_head(self, request: web.Request) -> web.Response:
        self.heads += 1
        up = self._session(request)
        if up is None:
            return web.json_response({"title": "No such upload session"}, status=404)
        return web.Response(status=200, headers={"Upload-Offset": str(len(up.data)), "Upload-Length": str(up.size),
                                                 "Tus-Resumable": "1.0.0", "Cache-Control": "no-store"})

    async def tus_patch(self, request: web.Request) -> web.Response:
        assert request.headers.get("Tus-Resumable") == "1.0.0"
        assert request.headers.get("Content-Type") == "application/offset+octet-stream"
        up = self._session(request)
        if up is None:
            return web.json_response({"title": "No such upload session"}, status=404)
        if self.stall_after is not None and len(self.patches) >= self.stall_after:
            assert self._release is not None
            await self._release.wait()
            return web.json_response({"title": "stalled"}, status=503)
        if self.restart_after is not None and len(self.patches) >= self.restart_after:
            self.restart_after = None
            assert request.transport is not None
            request.transport.close()  # the chunk in flight is lost with the connection
            asyncio.get_running_loop().create_task(self._restart(0.5))
            return web.Response(status=503)
        if self.fail_next_patch is not None:
            status, self.fail_next_patch = self.fail_next_patch, None
            return web.json_response({"type": "https://api.backend.ai/probs/quota-exceeded",
                                      "title": "Quota exceeded", "msg": "the folder is full"}, status=status)
        offset = request.headers.get("Upload-Offset", "")
        if offset != str(len(up.data)):
            return web.json_response({"title": "Offset mismatch"}, status=409)
        data = await request.read()
        self.patches.append((offset, len(data)))
        if len(up.data) + len(data) > up.size:
            return web.json_response({"title": "Too much data"}, status=400)
        up.data += data
        if len(up.data) == up.size:
            target = self.folder(up.folder) / up.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(bytes(up.data))
        return web.Response(status=204, headers={"Upload-Offset": str(len(up.data)), "Tus-Resumable": "1.0.0"})

    async def download(self, request: web.Request) -> web.StreamResponse:
        self.download_headers.append(dict(request.headers))
        ticket = self.downloads.get(request.query.get("token", ""))
        if ticket is None:
            return web.json_response({"title": "Invalid token"}, status=401)
        folder, path, archive = ticket
        target = self.folder(folder) / path
        if target.is_dir():
            if not archive or request.query.get("archive") != "true":
                return web.json_response({"title": "A directory needs archive=true"}, status=400)
            import io
            import zipfile

            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                for p in sorted(target.rglob("*")):
                    if p.is_file():
                        z.write(p, p.relative_to(target).as_posix())
            return web.Response(body=buf.getvalue(), content_type="application/zip")
        if self.cut_next_download:
            self.cut_next_download = False
            data = target.read_bytes()
            resp = web.StreamResponse(headers={"Content-Length": str(len(data)), "ETag": _etag(target),
                                               "Last-Modified": _http_date(target.stat().st_mtime)})
            await resp.prepare(request)
            await resp.write(data[: len(data) // 2])
            assert request.transport is not None
            request.transport.close()
            return resp
        return web.FileResponse(target)


def _http_date(ts: float) -> str:
    from email.utils import formatdate

    return formatdate(ts, usegmt=True)


@pytest.fixture(scope="module")
def peer_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    peer = Peer(tmp_path_factory.mktemp("peer"))
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def peer(peer_server: Peer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Peer:
    """The peer, reset, with the client environment (and its cache dir) pointing at it."""
    import shutil

    p = peer_server
    shutil.rmtree(p.root, ignore_errors=True)
    p.folder().mkdir(parents=True)
    p.uploads.clear()
    p.downloads.clear()
    p.patches.clear()
    p.request_uploads.clear()
    p.mkdirs.clear()
    p.download_headers.clear()
    p.heads = 0
    p.fail_next_patch = None
    p.stall_after = None
    p.cut_next_download = False
    p.complete_empty_at_once = False
    p.restart_after = None
    p.restarts = 0
    p.recorded.clear()
    p.canned.clear()
    p.bgtask_script.clear()
    if p.loop is not None and p._release is not None:
        fut = asyncio.run_coroutine_threadsafe(_new_event(p), p.loop)
        fut.result(5)
    for key in list(os.environ):
        if key.startswith(("BACKEND_", "SORNA_")):
            monkeypatch.delenv(key)
    for k, v in p.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return p


async def _new_event(p: Peer) -> None:
    p._release = asyncio.Event()


def api() -> APISession:
    return APISession(APIConfig.from_env(dotenv=False))


def make_file(path: Path, size: int, seed: int = 1) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB of varied bytes
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= min(left, len(block))
    return sha256(path)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def wait_for(check: Any, what: str, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


# -- tus uploads (SDK) ------------------------------------------------------------------------


async def test_upload_sends_tus_chunks_with_offsets(peer: Peer, tmp_path: Path) -> None:
    src = tmp_path / "work" / "data.bin"
    digest = make_file(src, 3 * 256 * 1024 + 123)
    item = sdk.walk_sources([Path("data.bin")], Path.cwd(), recursive=False)[1][0]
    async with api() as s:
        result = await sdk.upload_file(s, FOLDER, item, chunk_size=256 * 1024)
    assert result.path == "data.bin" and result.size == src.stat().st_size and result.resumed_from == 0
    assert peer.request_uploads == [{"path": "data.bin", "size": src.stat().st_size}]
    assert peer.patches == [("0", 262144), ("262144", 262144), ("524288", 262144), ("786432", 123)]
    assert sha256(peer.folder() / "data.bin") == digest
    assert not list((tmp_path / "cache" / "backend.ai" / "uploads").glob("*.json")), "state removed on completion"


@pytest.mark.parametrize("completes_at_once", [False, True])
async def test_empty_files_are_completed(peer: Peer, tmp_path: Path, completes_at_once: bool) -> None:
    """A proxy that completes an empty upload when its session is made gets no PATCH; one that
    keeps the session open gets one empty PATCH."""
    (tmp_path / "work" / "empty").write_bytes(b"")
    item = sdk.walk_sources([Path("empty")], Path.cwd(), recursive=False)[1][0]
    peer.complete_empty_at_once = completes_at_once
    async with api() as s:
        await sdk.upload_file(s, FOLDER, item)
    assert peer.patches == ([] if completes_at_once else [("0", 0)])
    assert (peer.folder() / "empty").read_bytes() == b""


async def test_a_5xx_is_retried_from_the_proxy_offset(peer: Peer, tmp_path: Path) -> None:
    digest = make_file(tmp_path / "work" / "f.bin", 600_000)
    item = sdk.walk_sources([Path("f.bin")], Path.cwd(), recursive=False)[1][0]
    peer.fail_next_patch = 503
    async with api() as s:
        await sdk.upload_file(s, FOLDER, item, chunk_size=200_000)
    assert peer.heads >= 1, "the offset was asked again after the failure"
    assert [o for o, _ in peer.patches] == ["0", "200000", "400000"]
    assert sha256(peer.folder() / "f.bin") == digest


async def test_a_proxy_restart_mid_upload_is_ridden_out(peer: Peer, tmp_path: Path) -> None:
    """The connection drops mid-chunk and the proxy refuses connections for half a second: the
    client retries with backoff, asks the offset again and finishes the same upload session."""
    digest = make_file(tmp_path / "work" / "f.bin", 1_000_000)
    item = sdk.walk_sources([Path("f.bin")], Path.cwd(), recursive=False)[1][0]
    peer.restart_after = 3
    async with api() as s:
        result = await sdk.upload_file(s, FOLDER, item, chunk_size=100_000)
    assert peer.restarts == 1 and peer.heads >= 1
    assert result.resumed_from == 0 and len(peer.request_uploads) == 1
    assert [o for o, _ in peer.patches] == [str(n) for n in range(0, 1_000_000, 100_000)]
    assert sha256(peer.folder() / "f.bin") == digest


async def test_a_4xx_stops_the_upload_with_the_proxy_reason(peer: Peer, tmp_path: Path) -> None:
    make_file(tmp_path / "work" / "f.bin", 100_000)
    item = sdk.walk_sources([Path("f.bin")], Path.cwd(), recursive=False)[1][0]
    peer.fail_next_patch = 413
    async with api() as s:
        with pytest.raises(TransferError, match=r"HTTP 413.*Quota exceeded: the folder is full"):
            await sdk.upload_file(s, FOLDER, item)
    assert peer.patches == [] and not (peer.folder() / "f.bin").exists()
    assert not list((tmp_path / "cache" / "backend.ai" / "uploads").glob("*.json")), "nothing left to resume"


async def test_interrupted_upload_resumes_from_the_proxy_offset(peer: Peer, tmp_path: Path) -> None:
    src = tmp_path / "work" / "big.bin"
    digest = make_file(src, 1_000_000)
    item = sdk.walk_sources([Path("big.bin")], Path.cwd(), recursive=False)[1][0]
    peer.stall_after = 2  # the third chunk hangs until released: interrupt the client there
    async with api() as s:
        task = asyncio.create_task(sdk.upload_file(s, FOLDER, item, chunk_size=100_000))
        await wait_for(lambda: len(peer.patches) >= 2, "two chunks acknowledged")
        task.cancel()  # as Ctrl-C does
        with pytest.raises(asyncio.CancelledError):
            await task
    states = list((tmp_path / "cache" / "backend.ai" / "uploads").glob("*.json"))
    assert len(states) == 1 and oct(states[0].stat().st_mode & 0o777) == "0o600"
    (held_upload,) = peer.uploads.values()
    held = len(held_upload.data)
    assert 200_000 <= held < 1_000_000 and held % 100_000 == 0
    sent_before = len(peer.patches)
    peer.stall_after = None
    peer.release()
    async with api() as s:
        result = await sdk.upload_file(s, FOLDER, item, chunk_size=100_000)
    assert result.resumed_from == held, (peer.patches, peer.heads)
    assert len(peer.request_uploads) == 1, "the second run asked the proxy, not the manager"
    assert [o for o, _ in peer.patches][sent_before:] == [str(n) for n in range(held, 1_000_000, 100_000)]
    assert sha256(peer.folder() / "big.bin") == digest
    assert not list((tmp_path / "cache" / "backend.ai" / "uploads").glob("*.json"))


async def test_a_forgotten_or_changed_upload_starts_afresh(peer: Peer, tmp_path: Path) -> None:
    src = tmp_path / "work" / "f.bin"
    make_file(src, 300_000)
    item = sdk.walk_sources([Path("f.bin")], Path.cwd(), recursive=False)[1][0]
    store = UploadStateStore()
    async with api() as s:
        key = store.key_for(sdk._identity(s), FOLDER, "f.bin", src)
        store.save(key, {"url": f"{peer.url}/upload", "token": "forgotten", "size": item.size})
        result = await sdk.upload_file(s, FOLDER, item)
    assert result.resumed_from == 0 and len(peer.request_uploads) == 1
    assert store.load(key) is None
    # a file changed since (new mtime) has another key: its old state is not used
    digest = make_file(src, 300_000, seed=2)
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))
    item = sdk.walk_sources([Path("f.bin")], Path.cwd(), recursive=False)[1][0]
    async with api() as s:
        assert (await sdk.upload_file(s, FOLDER, item)).resumed_from == 0
    assert sha256(peer.folder() / "f.bin") == digest


# -- downloads (SDK) --------------------------------------------------------------------------


async def test_download_streams_and_never_overwrites(peer: Peer, tmp_path: Path) -> None:
    digest = make_file(peer.folder() / "d" / "x.bin", 2_500_000)
    dest = tmp_path / "work" / "d" / "x.bin"
    async with api() as s:
        result = await sdk.download_file(s, FOLDER, "d/x.bin", dest)
        assert result.size == 2_500_000 and sha256(dest) == digest
        assert not partial_path(dest).exists()
        with pytest.raises(BackendClientError, match="already exists"):
            await sdk.download_file(s, FOLDER, "d/x.bin", dest)
    assert sha256(dest) == digest


async def test_a_cut_download_resumes_with_range(peer: Peer, tmp_path: Path) -> None:
    digest = make_file(peer.folder() / "x.bin", 3_000_000)
    dest = tmp_path / "work" / "x.bin"
    peer.cut_next_download = True
    async with api() as s:
        await sdk.download_file(s, FOLDER, "x.bin", dest)
    assert sha256(dest) == digest
    assert len(peer.download_headers) == 2
    second = peer.download_headers[1]
    assert second["Range"].startswith("bytes=") and int(second["Range"][6:-1]) > 0
    assert "If-Range" not in second, "with an ETag the client checks the answer itself"


async def test_a_partial_file_resumes_across_runs_unless_the_file_changed(peer: Peer, tmp_path: Path) -> None:
    src = peer.folder() / "x.bin"
    digest = make_file(src, 1_000_000)
    dest = tmp_path / "work" / "x.bin"
    store = DownloadStateStore()
    async with api() as s:
        key = store.key_for(sdk._identity(s), FOLDER, "x.bin", dest)
        # an earlier run left 400,000 good bytes and the server's ETag for them
        partial_path(dest).write_bytes(src.read_bytes()[:400_000])
        store.save(key, {"etag": _etag(src), "last_modified": _http_date(src.stat().st_mtime), "total": 1_000_000})
        await sdk.download_file(s, FOLDER, "x.bin", dest)
        assert sha256(dest) == digest
        assert peer.download_headers[-1]["Range"] == "bytes=400000-"
        assert len(peer.download_headers) == 1 and store.load(key) is None
        # the server's file changed since the partial download: it is fetched whole
        dest.unlink()
        partial_path(dest).write_bytes(b"stale" * 1000)
        store.save(key, {"etag": '"0-0"', "last_modified": None, "total": 1_000_000})
        await sdk.download_file(s, FOLDER, "x.bin", dest)
        assert sha256(dest) == digest
        assert "Range" in peer.download_headers[-2] and "Range" not in peer.download_headers[-1]
        # a server without ETags decides with If-Range: an older date gets the whole file
        dest.unlink()
        partial_path(dest).write_bytes(b"stale" * 1000)
        store.save(key, {"etag": None, "last_modified": _http_date(src.stat().st_mtime - 3600), "total": 1_000_000})
        await sdk.download_file(s, FOLDER, "x.bin", dest)
        assert peer.download_headers[-1]["If-Range"] and sha256(dest) == digest


def _etag(path: Path) -> str:
    st = path.stat()
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'


# -- the CLI ----------------------------------------------------------------------------------


def invoke(args: list[str]) -> Result:
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_cli_upload_recursive_with_base_dir_and_download_back(peer: Peer, tmp_path: Path) -> None:
    base = tmp_path / "src"
    digests = {
        "proj/a.txt": make_file(base / "proj" / "a.txt", 10),
        "proj/sub/b.bin": make_file(base / "proj" / "sub" / "b.bin", 300_000, seed=3),
        "top.bin": make_file(base / "top.bin", 5, seed=4),
    }
    (base / "proj" / "empty").mkdir()
    r = invoke(["--output", "json", "vfolder", "upload", FOLDER, "proj", "top.bin", "-b", str(base), "-r",
                "--chunk-size", "64k"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["ok"] is True
    assert sorted(u["path"] for u in out["uploaded"]) == sorted(digests)
    assert out["directories"] == ["proj", "proj/empty", "proj/sub"]
    assert peer.mkdirs == [{"path": ["proj", "proj/empty", "proj/sub"], "parents": True, "exist_ok": True}]
    for rel, digest in digests.items():
        assert sha256(peer.folder() / rel) == digest
    assert (peer.folder() / "proj" / "empty").is_dir()
    assert max(n for _, n in peer.patches) <= 64 * 1024

    dl = tmp_path / "dl"
    r = invoke(["vfolder", "download", FOLDER, "proj/sub/b.bin", "top.bin", "-b", str(dl)])
    assert r.exit_code == 0, r.output
    assert sha256(dl / "proj" / "sub" / "b.bin") == digests["proj/sub/b.bin"]
    assert sha256(dl / "top.bin") == digests["top.bin"]
    assert "Done." in r.stderr
    # a directory comes as a zip archive
    r = invoke(["--output", "json", "vfolder", "download", FOLDER, "proj", "-b", str(dl)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["downloaded"][0]["archive"] is True
    import zipfile

    with zipfile.ZipFile(dl / "proj.zip") as z:
        assert sorted(z.namelist()) == ["a.txt", "sub/b.bin"]
    # downloading again refuses to overwrite, in one line
    again = invoke(["vfolder", "download", FOLDER, "top.bin", "-b", str(dl)])
    assert again.exit_code == 1
    assert again.stderr.strip().startswith("\u2717 vfolder download failed: The target file already exists")
    assert len(again.stderr.strip().splitlines()) == 1


def test_cli_refuses_bad_local_paths_before_any_request(peer: Peer, tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("x")
    (tmp_path / "work" / "d").mkdir()
    cases = [
        (["vfolder", "upload", FOLDER, "../outside.txt"], "outside the base directory"),
        (["vfolder", "upload", FOLDER, "d"], "use -r/--recursive"),
        (["vfolder", "upload", FOLDER, "missing.txt"], "no such file"),
        (["vfolder", "download", FOLDER, "../../etc/passwd"], "must stay inside the folder"),
        (["vfolder", "download", FOLDER, "/etc/passwd"], "must stay inside the folder"),
        (["vfolder", "upload", "../admin", "x"], ""),
    ]
    for args, expected in cases:
        r = invoke(args)
        assert r.exit_code != 0, args
        assert expected in r.stderr, (args, r.stderr)
    assert peer.request_uploads == [] and peer.downloads == {}


def test_cli_upload_failure_is_one_line_and_json_mode_is_json(peer: Peer, tmp_path: Path) -> None:
    make_file(tmp_path / "work" / "f.bin", 1000)
    peer.fail_next_patch = 413
    r = invoke(["vfolder", "upload", FOLDER, "f.bin"])
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert lines[-1] == ("\u2717 vfolder upload failed: The storage proxy refused the upload (HTTP 413): "
                         "Quota exceeded: the folder is full")
    peer.fail_next_patch = 413
    r = invoke(["--output", "json", "vfolder", "upload", FOLDER, "f.bin"])
    assert r.exit_code == 1 and r.stdout == ""
    assert "HTTP 413" in json.loads(r.stderr.strip().splitlines()[-1])["error"]


def test_cli_ls_table(peer: Peer) -> None:
    (peer.folder() / "hello.txt").write_text("hi")
    (peer.folder() / "sub").mkdir()
    r = invoke(["vfolder", "ls", FOLDER])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["file", "name", "size", "modified", "mode"]
    assert lines[2].split()[0] == "hello.txt" and lines[2].split()[-1] == "-rw-r--r--"
    assert lines[3].split()[0] == "sub" and lines[3].split()[-1] == "drw-r--r--"
    r = invoke(["--output", "json", "vfolder", "ls", FOLDER])
    assert [i["name"] for i in json.loads(r.stdout)["items"]] == ["hello.txt", "sub"]
