"""Safety beyond the original: hostile paths (``..`` at any depth, raw or percent-encoded,
absolute, control characters, reserved names, symlinks leading out) are refused with 4xx and
touch nothing outside the folder; quota and size overflows stop an upload and leave nothing
partial; concurrent uploads to one path leave one complete file."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from pathlib import Path

import jwt
import pytest

from .conftest import Proxy

HOSTILE = ["..", "../secret.txt", "a/../../secret.txt", "a/b/../../../secret.txt", "%2e%2e/secret.txt",
           "a/%2E%2e/%2e%2E/secret.txt", "%252e%252e/secret.txt", "/etc/passwd", "%2fetc/passwd",
           "a\x00b", "a/\x01b", "line\nbreak", "x" * 300]


def _outside_snapshot(volume_root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in volume_root.parent.iterdir() if p.is_file()}


@pytest.fixture
def secret_outside(proxy: Proxy) -> Path:
    """A file next to the volume, the prize of every traversal attempt."""
    secret = proxy.volume_root.parent / "secret.txt"
    secret.write_bytes(b"top secret")
    return secret


@pytest.mark.parametrize("bad", HOSTILE)
async def test_hostile_relpaths_are_refused_everywhere(proxy: Proxy, secret_outside: Path, bad: str) -> None:
    vfid = await proxy.new_folder()
    base = {"volume": "volume1", "vfid": vfid}
    before = _outside_snapshot(proxy.volume_root)
    calls = [
        ("POST", "/folder/file/upload", {**base, "relpath": bad, "size": 4}),
        ("POST", "/folder/file/download", {**base, "relpath": bad}),
        ("POST", "/folder/file/mkdir", {**base, "relpath": bad}),
        ("POST", "/folder/file/list", {**base, "relpath": bad}),
        ("POST", "/folder/file/rename", {**base, "relpath": bad, "new_name": "x"}),
        ("POST", "/folder/file/move", {**base, "src_relpath": bad, "dst_relpath": "x"}),
        ("POST", "/folder/file/move", {**base, "src_relpath": "x", "dst_relpath": bad}),
        ("POST", "/folder/file/delete", {**base, "relpaths": [bad], "recursive": True}),
        ("POST", "/folder/file/fetch", {**base, "relpath": bad}),
        ("GET", "/folder/mount", {**base, "subpath": bad}),
    ]
    for method, path, body in calls:
        status, reply = await proxy.call(method, path, body)
        assert status == 400, (path, bad, status, reply)
        assert str(proxy.volume_root) not in str(reply)  # no host path in the error
    # the same through the client API's dst_dir
    token = await proxy.upload_token(vfid, "ok.txt", 4)
    resp = await proxy.patch(token, b"evil", 0, dst_dir=bad)
    assert resp.status == 400, bad
    download = await proxy.download_token(vfid, ".")
    async with proxy.http.get(proxy.client_url + "/download", params={"token": download, "dst_dir": bad}) as r:
        assert r.status == 400
    assert _outside_snapshot(proxy.volume_root) == before


async def test_reserved_names(proxy: Proxy) -> None:
    vfid = await proxy.new_folder()
    base = {"volume": "volume1", "vfid": vfid}
    for relpath in (".upload/x", ".upload"):
        status, _ = await proxy.call("POST", "/folder/file/upload", {**base, "relpath": relpath, "size": 1})
        assert status == 400
        status, _ = await proxy.call("POST", "/folder/file/mkdir", {**base, "relpath": relpath})
        assert status == 400
    (proxy.folder_path(vfid) / "f").write_text("x")
    for name in (".upload", "..", ".", "a/b", "", "x\ty"):
        status, _ = await proxy.call("POST", "/folder/file/rename", {**base, "relpath": "f", "new_name": name})
        assert status == 400, name
    token = await proxy.upload_token(vfid, "f", 1)
    assert (await proxy.patch(token, b"y", 0, dst_dir=".upload")).status == 400


async def test_symlinks_leading_outside_are_refused(proxy: Proxy, secret_outside: Path) -> None:
    vfid = await proxy.new_folder()
    root = proxy.folder_path(vfid)
    outside_dir = proxy.volume_root.parent / "outside"
    outside_dir.mkdir()
    (root / "leak").symlink_to(secret_outside)
    (root / "dirlink").symlink_to(outside_dir)
    (root / "inner").symlink_to("real")
    (root / "real").write_bytes(b"mine")
    (root / "d").mkdir()
    (root / "d" / "out").symlink_to(secret_outside)
    base = {"volume": "volume1", "vfid": vfid}
    before = _outside_snapshot(proxy.volume_root)

    for relpath in ("leak", "dirlink/x", "dirlink"):
        token = await proxy.download_token(vfid, relpath)
        async with proxy.http.get(proxy.client_url + "/download", params={"token": token}) as resp:
            assert resp.status == 400, relpath
            assert b"top secret" not in await resp.read()
    # a link inside the folder is followed
    token = await proxy.download_token(vfid, "inner")
    async with proxy.http.get(proxy.client_url + "/download", params={"token": token}) as resp:
        assert resp.status == 200 and await resp.read() == b"mine"
    # a zip of a directory leaves every link out
    token = await proxy.download_token(vfid, "d", archive=True)
    async with proxy.http.get(proxy.client_url + "/download", params={"token": token}) as resp:
        assert resp.status == 200 and b"top secret" not in await resp.read()
    # writes through a link are refused: upload into it, mkdir in it, listing it
    status, _ = await proxy.call("POST", "/folder/file/upload", {**base, "relpath": "dirlink/new.txt", "size": 3})
    assert status == 400
    token = await proxy.upload_token(vfid, "new.txt", 3)
    assert (await proxy.patch(token, b"abc", 0, dst_dir="dirlink")).status == 400
    status, _ = await proxy.call("POST", "/folder/file/mkdir", {**base, "relpath": "dirlink/sub"})
    assert status == 400
    status, _ = await proxy.call("POST", "/folder/file/list", {**base, "relpath": "dirlink"})
    assert status == 400
    status, _ = await proxy.call("POST", "/folder/file/move", {**base, "src_relpath": "real",
                                                               "dst_relpath": "dirlink/real"})
    assert status == 400
    # deleting the link removes the link, never its target
    status, _ = await proxy.call("POST", "/folder/file/delete", {**base, "relpaths": ["leak", "dirlink"],
                                                                 "recursive": True})
    assert status == 200
    assert os.listdir(outside_dir) == [] and _outside_snapshot(proxy.volume_root) == before  # secret.txt kept


async def test_a_symlink_swapped_in_after_the_token_is_not_followed(proxy: Proxy, secret_outside: Path) -> None:
    vfid = await proxy.new_folder()
    root = proxy.folder_path(vfid)
    token = await proxy.upload_token(vfid, "target/file.txt", 5)
    outside_dir = proxy.volume_root.parent / "outside2"
    outside_dir.mkdir()
    (root / "target").symlink_to(outside_dir)  # made by a session after the token was minted
    resp = await proxy.patch(token, b"12345", 0)
    assert resp.status == 400
    assert list(outside_dir.iterdir()) == []


async def test_quota_overflow_mid_upload_leaves_nothing(proxy: Proxy) -> None:
    scope = uuid.uuid4()
    vfid = await proxy.new_folder("user", scope, {"initial_max_size_for_quota_scope": 1_000_000})
    base = {"volume": "volume1", "vfid": vfid}
    status, reply = await proxy.call("POST", "/folder/file/upload", {**base, "relpath": "big", "size": 2_000_000})
    assert status == 413 and "quota" in reply["msg"]

    token = await proxy.upload_token(vfid, "f.bin", 900_000)
    assert (await proxy.patch(token, os.urandom(300_000), 0)).status == 204
    # meanwhile a session fills the folder: the scope is full before the upload ends
    (proxy.folder_path(vfid) / "from-session.bin").write_bytes(b"s" * 500_000)
    assert proxy.config.storage_proxy.usage_cache_ttl == 0  # the test proxy walks the scope every time
    resp = await proxy.patch(token, os.urandom(600_000), 300_000)
    assert resp.status == 413
    assert resp.content_type == "application/problem+json"
    root = proxy.folder_path(vfid)
    assert not (root / "f.bin").exists()
    assert list((root / ".upload").iterdir()) == []  # the partial temp file is gone
    async with proxy.http.head(proxy.client_url + "/upload", params={"token": token}) as head:
        assert head.status == 404


async def test_body_larger_than_declared_and_max_upload_size(proxy: Proxy) -> None:
    vfid = await proxy.new_folder()
    token = await proxy.upload_token(vfid, "f.bin", 10)
    assert (await proxy.patch(token, b"x" * 11, 0)).status == 413
    assert not (proxy.folder_path(vfid) / "f.bin").exists()
    assert list((proxy.folder_path(vfid) / ".upload").iterdir()) == []
    status, reply = await proxy.call("POST", "/folder/file/upload",
                                     {"volume": "volume1", "vfid": vfid, "relpath": "huge",
                                      "size": proxy.config.storage_proxy.max_upload_size + 1})
    assert status == 413 and "max-upload-size" in reply["msg"]


async def test_concurrent_uploads_to_one_path_leave_one_complete_file(proxy: Proxy) -> None:
    vfid = await proxy.new_folder()
    blobs = [bytes([i]) * (2 * 1024 * 1024) for i in range(4)]
    await asyncio.gather(*(proxy.upload(vfid, "same.bin", blob, chunk=256 * 1024) for blob in blobs))
    landed = (proxy.folder_path(vfid) / "same.bin").read_bytes()
    assert hashlib.sha256(landed).digest() in {hashlib.sha256(b).digest() for b in blobs}
    assert list((proxy.folder_path(vfid) / ".upload").iterdir()) == []


async def test_another_folders_token_cannot_reach_this_one(proxy: Proxy) -> None:
    """A token signed with another key, or expired, is refused."""
    vfid = await proxy.new_folder()
    (proxy.folder_path(vfid) / "f").write_bytes(b"data")
    forged = jwt.encode({"op": "download", "volume": "volume1", "vfid": vfid, "relpath": "f",
                         "archive": False, "unmanaged_path": None, "exp": 2**40}, "not-the-secret-" + "x" * 32,
                        algorithm="HS256")
    async with proxy.http.get(proxy.client_url + "/download", params={"token": forged}) as resp:
        assert resp.status == 403 and b"data" not in await resp.read()
    expired = jwt.encode({"op": "download", "volume": "volume1", "vfid": vfid, "relpath": "f", "exp": 1},
                         proxy.config.storage_proxy.secret, algorithm="HS256")
    async with proxy.http.get(proxy.client_url + "/download", params={"token": expired}) as resp:
        assert resp.status == 403 and "expired" in (await resp.json(content_type=None))["msg"]
