"""Execution in full on a whole node (real manager, agent, Docker and kernel image): rich console
items, completion, interrupt, batch mode, and files in and out of /home/work with refused paths.

The node here has small upload limits (max-request-size 4 MiB, max-upload-file-size 2 MiB) so
that the 413 cases stay fast; one session serves every test of the module."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import secrets
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bai.common.auth import API_VERSION, sign_request
from bai.manager.server import build_app
from tests.fixtures.halfstack import HalfStack
from tests.fixtures.node_parts import node_parts

from .conftest import Node

MAX_REQUEST = 4 * 2**20
MAX_FILE = 2 * 2**20


@pytest.fixture(scope="module")
async def node(halfstack: HalfStack, kernel_image: str) -> AsyncIterator[Node]:
    overrides = {"max-request-size": MAX_REQUEST, "max-upload-file-size": MAX_FILE}
    async with node_parts(halfstack, "nodex", overrides) as parts:
        client = TestClient(TestServer(build_app(parts.manager_config), host="127.0.0.1"))
        await client.start_server()
        await parts.agent.start()
        try:
            await parts.wait_agent_registered()
            yield Node(client, parts.db, parts.access_key, parts.secret_key, parts.agent, parts.redis_addr)
        finally:
            await client.close()
            await parts.agent.stop()


@pytest.fixture(scope="module")
async def sess(node: Node) -> AsyncIterator[str]:
    name = f"x-{secrets.token_hex(4)}"
    st, body = await node.call("POST", "/session", {"name": name, "image": "python"})
    assert st == 201 and body["status"] == "RUNNING", body
    try:
        yield name
    finally:
        await node.call("DELETE", f"/session/{name}")


async def run_all(node: Node, ref: str, body: dict[str, Any], deadline: float = 60.0) -> list[dict[str, Any]]:
    """Every result of one REST run, continuing as the official client does."""
    results: list[dict[str, Any]] = []
    async with asyncio.timeout(deadline):
        st, reply = await node.call("POST", f"/session/{ref}", {"runId": None, **body})
        while True:
            assert st == 200, reply
            results.append(reply["result"])
            status = results[-1]["status"]
            if status == "finished":
                return results
            st, reply = await node.call("POST", f"/session/{ref}", {"mode": "continue", "code": "",
                                                                   "runId": results[-1]["runId"]})


async def query(node: Node, ref: str, code: str) -> dict[str, Any]:
    results = await run_all(node, ref, {"mode": "query", "code": code})
    console = [item for r in results for item in r["console"]]
    return {"console": console, "exitCode": results[-1]["exitCode"]}


async def signed(node: Node, method: str, path: str, *, data: bytes, ctype: str, mime: str) -> aiohttp.ClientResponse:
    host = f"{node.client.host}:{node.client.port}"
    sig = sign_request(node.access_key, node.secret_key, method, path, host, mime)
    headers = {"Content-Type": ctype, "X-BackendAI-Version": API_VERSION, "Host": host, "Date": sig.date,
               "Authorization": sig.authorization}
    return await node.client.request(method, path, data=data, headers=headers)


def multipart(files: dict[str, bytes]) -> tuple[bytes, str]:
    boundary = secrets.token_hex(12)
    body = b""
    for path, content in files.items():
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="src"; filename="{path}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def upload(node: Node, ref: str, files: dict[str, bytes]) -> tuple[int, Any]:
    data, ctype = multipart(files)
    resp = await signed(node, "POST", f"/session/{ref}/upload", data=data, ctype=ctype, mime="multipart/form-data")
    raw = await resp.read()
    return resp.status, (json.loads(raw) if raw else None)


async def download(node: Node, ref: str, paths: list[str]) -> tuple[int, dict[str, bytes] | Any]:
    host = f"{node.client.host}:{node.client.port}"
    sig = sign_request(node.access_key, node.secret_key, "POST", f"/session/{ref}/download", host, "application/json")
    resp = await node.client.post(f"/session/{ref}/download", data=json.dumps({"files": paths}).encode(), headers={
        "Content-Type": "application/json", "X-BackendAI-Version": API_VERSION, "Host": host, "Date": sig.date,
        "Authorization": sig.authorization})
    if resp.status != 200:
        return resp.status, await resp.json(content_type=None)
    got: dict[str, bytes] = {}
    reader = aiohttp.MultipartReader.from_response(resp)
    while (part := await reader.next()) is not None:
        assert isinstance(part, aiohttp.BodyPartReader)
        assert part.headers.get("Content-Encoding") == "identity"
        with tarfile.open(fileobj=io.BytesIO(await part.read())) as tar:
            for member in tar.getmembers():
                extracted = tar.extractfile(member)
                assert extracted is not None
                got[member.name] = extracted.read()
    return 200, got


async def download_tars(node: Node, ref: str, paths: list[str]) -> tuple[int, list[bytes] | Any]:
    """The raw tar archive of each part of a download (or the problem body)."""
    host = f"{node.client.host}:{node.client.port}"
    sig = sign_request(node.access_key, node.secret_key, "POST", f"/session/{ref}/download", host, "application/json")
    resp = await node.client.post(f"/session/{ref}/download", data=json.dumps({"files": paths}).encode(), headers={
        "Content-Type": "application/json", "X-BackendAI-Version": API_VERSION, "Host": host, "Date": sig.date,
        "Authorization": sig.authorization})
    if resp.status != 200:
        return resp.status, await resp.json(content_type=None)
    tars: list[bytes] = []
    reader = aiohttp.MultipartReader.from_response(resp)
    while (part := await reader.next()) is not None:
        assert isinstance(part, aiohttp.BodyPartReader)
        tars.append(bytes(await part.read()))
    return 200, tars


async def test_media_html_and_log_items(node: Node, sess: str) -> None:
    png = os.urandom(64)
    result = await query(node, sess, (
        "import bai_display\n"
        "print('plot:')\n"
        f"bai_display.display_media('image/png', {png!r})\n"
        "bai_display.display_html('<table><tr><td>1</td></tr></table>')\n"
        "bai_display.log('done', level='info')\n"))
    assert result["console"][:3] == [
        ["stdout", "plot:\n"], ["media", ["image/png", "data:image/png;base64," + base64.b64encode(png).decode()]],
        ["html", "<table><tr><td>1</td></tr></table>"]]
    kind, (level, _stamp, logger, message) = result["console"][3]
    assert (kind, level, logger, message) == ("log", "INFO", "user", "done")
    assert result["exitCode"] == 0


async def test_completion(node: Node, sess: str) -> None:
    await query(node, sess, "import collections\nmy_alpha = 1\nmy_beta = 2")
    st, body = await node.call("POST", f"/session/{sess}/complete",
                               {"code": "my_", "options": {"row": 0, "col": 3, "line": "my_", "post": ""}})
    assert st == 200, body
    assert body == {"result": {"status": "finished", "completions": ["my_alpha", "my_beta"]}}
    st, body = await node.call("POST", f"/session/{sess}/complete", {"code": "collections.Ord"})
    assert body["result"]["completions"] == ["collections.OrderedDict("]


async def test_interrupt_a_busy_loop_then_run_again(node: Node, sess: str) -> None:
    st, first = await node.call("POST", f"/session/{sess}", {"mode": "query", "runId": None,
                                                            "code": "print('spinning', flush=True)\nwhile True: pass"})
    assert st == 200 and first["result"]["status"] == "continued", first
    st, body = await node.call("POST", f"/session/{sess}/interrupt")
    assert st == 204, body
    results = [first["result"]]
    async with asyncio.timeout(20):
        while results[-1]["status"] != "finished":
            st, reply = await node.call("POST", f"/session/{sess}", {"mode": "continue", "code": "",
                                                                    "runId": first["result"]["runId"]})
            results.append(reply["result"])
    stderr = "".join(c[1] for r in results for c in r["console"] if c[0] == "stderr")
    assert "KeyboardInterrupt" in stderr
    assert results[-1]["exitCode"] == 1
    after = await query(node, sess, "print('still here')")
    assert after["console"] == [["stdout", "still here\n"]]
    # Interrupting an idle session is harmless.
    st, _ = await node.call("POST", f"/session/{sess}/interrupt")
    assert st == 204


async def test_batch_mode_failing_build_reports_its_exit_code(node: Node, sess: str) -> None:
    opts = {"clean": "rm -rf out && echo cleaned", "build": "mkdir out && echo compiling && exit 4",
            "exec": "echo should-not-run > out/ran"}
    results = await run_all(node, sess, {"mode": "batch", "code": "", "options": opts})
    steps = [(r["status"], r["exitCode"]) for r in results if r["status"] != "continued"]
    assert steps == [("clean-finished", 0), ("build-finished", 4), ("finished", 4)]
    out = "".join(c[1] for r in results for c in r["console"] if c[0] == "stdout")
    assert out == "cleaned\ncompiling\n"
    listing = await node.call("GET", f"/session/{sess}/files", {"path": "out"})
    assert json.loads(listing[1]["files"]) == []


async def test_batch_mode_over_the_websocket(node: Node, sess: str) -> None:
    await upload(node, sess, {"main.py": b"print('hello from main')\n"})
    host = f"{node.client.host}:{node.client.port}"
    path = f"/stream/session/{sess}/execute"
    sig = sign_request(node.access_key, node.secret_key, "GET", path, host, "application/json")
    ws = await node.client.ws_connect(path, headers={
        "Content-Type": "application/json", "X-BackendAI-Version": API_VERSION, "Host": host, "Date": sig.date,
        "Authorization": sig.authorization})
    await ws.send_json({"mode": "batch", "code": "", "options": {"clean": "*", "build": "*", "exec": "*"}})
    frames = []
    async with asyncio.timeout(30):
        async for msg in ws:
            frames.append(json.loads(msg.data))
    statuses = [(f["status"], f["exitCode"]) for f in frames if f["status"] != "continued"]
    assert statuses == [("clean-finished", 0), ("build-finished", 0), ("finished", 0)]
    assert ["stdout", "hello from main\n"] in [c for f in frames for c in f["console"]]


async def test_upload_list_download_round_trip(node: Node, sess: str) -> None:
    data = os.urandom(MAX_FILE - 1000)
    st, body = await upload(node, sess, {"data/blob.bin": data, "notes.txt": b"hello\n"})
    assert st == 204, body
    st, listing = await node.call("GET", f"/session/{sess}/files", {"path": "/home/work/data"})
    assert st == 200, listing
    assert listing["abspath"] == "/home/work/data" and listing["errors"] == ""
    (entry,) = json.loads(listing["files"])
    assert (entry["filename"], entry["size"], entry["mode"]) == ("blob.bin", len(data), "-rw-r--r--")
    st, files = await download(node, sess, ["data/blob.bin", "/home/work/notes.txt"])
    assert st == 200, files
    assert hashlib.sha256(files["blob.bin"]).hexdigest() == hashlib.sha256(data).hexdigest()
    assert files["notes.txt"] == b"hello\n"
    # The kernel sees the uploaded file, owned by its user.
    seen = await query(node, sess, "import hashlib, os\n"
                                   "p = '/home/work/data/blob.bin'\n"
                                   "print(hashlib.sha256(open(p, 'rb').read()).hexdigest(), os.stat(p).st_uid)")
    assert seen["console"] == [["stdout", f"{hashlib.sha256(data).hexdigest()} 1000\n"]]
    # download_single answers the raw bytes.
    host = f"{node.client.host}:{node.client.port}"
    sig = sign_request(node.access_key, node.secret_key, "POST", f"/session/{sess}/download_single", host,
                       "application/json")
    resp = await node.client.post(f"/session/{sess}/download_single", data=b'{"file": "notes.txt"}', headers={
        "Content-Type": "application/json", "X-BackendAI-Version": API_VERSION, "Host": host, "Date": sig.date,
        "Authorization": sig.authorization})
    assert resp.status == 200 and await resp.read() == b"hello\n"


async def test_refused_paths_and_planted_symlinks(node: Node, sess: str) -> None:
    planted = await query(node, sess, (
        "import os\n"
        "for name, target in [('etc-link', '/etc'), ('passwd-link', '/etc/passwd'), ('ipc-link', '/opt/bai/ipc'),\n"
        "                     ('host-link', '/proc/1/root'), ('runner-link', '/opt/bai/kernel')]:\n"
        "    os.symlink(target, '/home/work/' + name)\n"
        "print('planted')"))
    assert planted["console"] == [["stdout", "planted\n"]], planted
    for path in ("../../etc/passwd", "/etc/passwd", "a/../../../etc/passwd", "etc-link/passwd", "passwd-link",
                 "ipc-link/agent.sock", "host-link/etc/hostname", "runner-link/runner.py"):
        st, body = await download(node, sess, [path])
        assert st == 400, (path, body)
        assert body["type"].endswith("invalid-api-params"), body
    # aiohttp's multipart parser drops a filename's leading slashes: this one lands in /home/work/etc.
    st, body = await upload(node, sess, {"/etc/planted": b"planted"})
    assert st == 204, body
    st, listing = await node.call("GET", f"/session/{sess}/files", {"path": "etc"})
    assert [e["filename"] for e in json.loads(listing["files"])] == ["planted"]
    for path in ("../escape.txt", "etc-link/planted", "host-link/tmp/planted", "ipc-link/planted",
                 "runner-link/planted.py", "etc-link/new-dir/planted"):
        st, body = await upload(node, sess, {path: b"planted"})
        assert st == 400, (path, body)
    for path in ("../", "/etc", "etc-link", "host-link/etc"):
        st, body = await node.call("GET", f"/session/{sess}/files", {"path": path})
        assert st == 400, (path, body)
    st, body = await download(node, sess, ["no-such-file.txt"])
    assert st == 404, body
    # Nothing was written anywhere: not in the container, not on the host.
    check = await query(node, sess, (
        "import os\n"
        "print(os.path.exists('/etc/planted'), os.path.exists('/tmp/planted'), os.path.exists('/etc/new-dir'),"
        " os.path.exists('/home/escape.txt'))"))
    assert check["console"] == [["stdout", "False False False False\n"]]
    assert not any(Path(p).exists() for p in ("/tmp/planted", "/etc/planted"))  # noqa: ASYNC240


async def test_oversized_uploads_are_refused_and_leave_nothing(node: Node, sess: str) -> None:
    st, body = await upload(node, sess, {"huge.bin": os.urandom(MAX_REQUEST + 10)})
    assert st == 413, body
    st, body = await upload(node, sess, {"ok.bin": b"fine", "big.bin": os.urandom(MAX_FILE + 1)})
    assert st == 413, body
    st, listing = await node.call("GET", f"/session/{sess}/files", {"path": "."})
    names = {e["filename"] for e in json.loads(listing["files"])}
    assert "huge.bin" not in names and "big.bin" not in names and "ok.bin" in names
    # The broken-off upload's temporary file goes as soon as the agent sees the body end.
    async with asyncio.timeout(10):
        while True:
            left = await query(node, sess, "import os; print([n for n in os.listdir('.') if n.startswith('.bai')])")
            if left["console"] == [["stdout", "[]\n"]]:
                break
            await asyncio.sleep(0.1)
    st, body = await upload(node, sess, {f"f{i}.txt": b"x" for i in range(21)})
    assert st == 400 and "Too many files" in body["msg"], body


async def test_file_endpoints_of_a_missing_session_are_404(node: Node) -> None:
    for method, path, body in (("POST", "/session/nope-nope/interrupt", None),
                               ("POST", "/session/nope-nope/complete", {"code": "x"}),
                               ("GET", "/session/nope-nope/files", {"path": "."}),
                               ("POST", "/session/nope-nope/download", {"files": ["a"]})):
        st, reply = await node.call(method, path, body)
        assert st == 404, (path, reply)


async def test_download_a_directory_with_nested_files_and_a_symlink(node: Node, sess: str) -> None:
    made = await query(node, sess, (
        "import os\n"
        "os.makedirs('/home/work/tree/sub/deeper')\n"
        "open('/home/work/tree/top.txt', 'wb').write(b'top\\n')\n"
        "open('/home/work/tree/sub/blob.bin', 'wb').write(bytes(range(256)) * 4000)\n"
        "open('/home/work/tree/sub/deeper/note.txt', 'wb').write(b'deep\\n')\n"
        "os.symlink('/etc', '/home/work/tree/sub/etc-link')\n"
        "os.mkfifo('/home/work/tree/fifo')\n"
        "print('made')"))
    assert made["console"] == [["stdout", "made\n"]], made
    st, tars = await download_tars(node, sess, ["tree", "tree/top.txt"])
    assert st == 200, tars
    with tarfile.open(fileobj=io.BytesIO(tars[0])) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == ["tree", "tree/sub", "tree/sub/blob.bin", "tree/sub/deeper",
                                   "tree/sub/deeper/note.txt", "tree/sub/etc-link", "tree/top.txt"]
        contents = {name: tar.extractfile(m).read() for name, m in members.items() if m.isreg()}  # type: ignore[union-attr]
    assert contents == {"tree/top.txt": b"top\n", "tree/sub/blob.bin": bytes(range(256)) * 4000,
                        "tree/sub/deeper/note.txt": b"deep\n"}
    link = members["tree/sub/etc-link"]
    assert link.issym() and link.linkname == "/etc" and link.size == 0  # a link entry, never /etc's files
    assert members["tree/sub"].isdir() and members["tree"].isdir()
    with tarfile.open(fileobj=io.BytesIO(tars[1])) as tar:
        assert [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()] == [("top.txt", b"top\n")]  # type: ignore[union-attr]
    # A directory reached through a symlink is refused, like a file is.
    st, body = await download_tars(node, sess, ["tree/sub/etc-link"])
    assert st == 400 and body["type"].endswith("invalid-api-params"), body


async def test_an_oversized_directory_download_is_refused_cleanly(node: Node, sess: str) -> None:
    made = await query(node, sess, (
        "import os\n"
        "os.makedirs('/home/work/many')\n"
        "for i in range(10001): open(f'/home/work/many/{i}', 'wb').close()\n"
        "print('made')"))
    assert made["console"] == [["stdout", "made\n"]], made
    st, body = await download_tars(node, sess, ["many"])
    assert st == 413 and "more than 10000 entries" in body["msg"], body
    # Nothing is left held: the session still answers downloads.
    st, tars = await download_tars(node, sess, ["many/0"])
    assert st == 200 and len(tars) == 1, tars
