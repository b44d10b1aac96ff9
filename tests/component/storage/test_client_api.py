"""The client-facing API through real HTTP: tus discovery, chunked uploads with resumption,
offset checks, downloads with ranges and as zip archives, CORS."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import zipfile

from .conftest import Proxy


async def test_tus_discovery_and_cors(proxy: Proxy) -> None:
    async with proxy.http.options(proxy.client_url + "/upload") as resp:
        assert resp.status in (200, 204)
        assert resp.headers["Tus-Resumable"] == "1.0.0" and resp.headers["Tus-Version"] == "1.0.0"
        assert int(resp.headers["Tus-Max-Size"]) == proxy.config.storage_proxy.max_upload_size
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert "Upload-Offset" in resp.headers["Access-Control-Expose-Headers"]
    async with proxy.http.get(proxy.client_url + "/") as resp:
        body = await resp.json()
        assert body["type"] == "client-facing" and resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_chunked_upload_resumes_and_lands_whole(proxy: Proxy) -> None:
    vfid = await proxy.new_folder()
    data = os.urandom(3 * 1024 * 1024 + 17)
    token = await proxy.upload_token(vfid, "deep/dir/blob.bin", len(data))
    head = await _head(proxy, token)
    assert (head["Upload-Offset"], head["Upload-Length"]) == ("0", str(len(data)))
    assert head["Tus-Resumable"] == "1.0.0" and head["Cache-Control"] == "no-store"

    resp = await proxy.patch(token, data[:1_000_000], 0)
    assert resp.status == 204 and resp.headers["Upload-Offset"] == "1000000"
    # a client that lost track: a wrong offset is refused and changes nothing
    resp = await proxy.patch(token, data[500:1000], 500)
    assert resp.status == 409
    assert (await _head(proxy, token))["Upload-Offset"] == "1000000"
    # an interrupted PATCH keeps what arrived; the client resumes from HEAD's offset
    await _interrupted_patch(proxy, token, data[1_000_000:2_500_000], 1_000_000, send=700_000)
    offset = int(await _wait_offset(proxy, token, 1_700_000))
    resp = await proxy.patch(token, data[offset:], offset)
    assert resp.status == 204 and resp.headers["Upload-Offset"] == str(len(data))
    landed = proxy.folder_path(vfid) / "deep" / "dir" / "blob.bin"
    assert hashlib.sha256(landed.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert list((proxy.folder_path(vfid) / ".upload").iterdir()) == []
    async with proxy.http.head(proxy.client_url + "/upload", params={"token": token}) as resp:
        assert resp.status == 404  # the session ended with the upload


async def test_zero_byte_upload_is_placed_at_once(proxy: Proxy) -> None:
    vfid = await proxy.new_folder()
    await proxy.upload_token(vfid, "empty.txt", 0)
    assert (proxy.folder_path(vfid) / "empty.txt").read_bytes() == b""


async def test_upload_into_dst_dir(proxy: Proxy) -> None:
    vfid = await proxy.new_folder()
    token = await proxy.upload_token(vfid, "f.txt", 3)
    resp = await proxy.patch(token, b"abc", 0, dst_dir="sub/dir")
    assert resp.status == 204
    assert (proxy.folder_path(vfid) / "sub" / "dir" / "f.txt").read_bytes() == b"abc"


async def test_download_file_with_ranges_and_headers(proxy: Proxy) -> None:
    vfid = await proxy.new_folder()
    data = os.urandom(2 * 1024 * 1024)
    await proxy.upload(vfid, "dir/Résumé \"1\".bin", data, chunk=512 * 1024)
    token = await proxy.download_token(vfid, "dir/Résumé \"1\".bin")
    url = proxy.client_url + "/download"
    async with proxy.http.get(url, params={"token": token, "no_cache": "true"}) as resp:
        assert resp.status == 200
        body = await resp.read()
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
        assert resp.headers["Content-Type"] == "application/octet-stream"
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["Content-Disposition"] == \
            "attachment;filename=\"Rsum \\\"1\\\".bin\"; filename*=UTF-8''R%C3%A9sum%C3%A9%20%221%22.bin"
        last_modified = resp.headers["Last-Modified"]
    async with proxy.http.get(url, params={"token": token},
                              headers={"Range": "bytes=1000-", "If-Range": last_modified}) as resp:
        assert resp.status == 206 and await resp.read() == data[1000:]
    async with proxy.http.head(url, params={"token": token}) as resp:
        assert resp.status == 200 and resp.headers["Content-Length"] == str(len(data))
        assert resp.headers["Accept-Ranges"] == "bytes"
    async with proxy.http.get(url, params={"token": token + "x"}) as resp:
        assert resp.status == 403
    async with proxy.http.get(url) as resp:
        assert resp.status == 400 and resp.content_type == "application/problem+json"
    token = await proxy.download_token(vfid, "missing.bin")
    async with proxy.http.get(url, params={"token": token}) as resp:
        assert resp.status == 404
    upload_token = await proxy.upload_token(vfid, "x", 1)
    async with proxy.http.get(url, params={"token": upload_token}) as resp:
        assert resp.status == 403  # an upload token does not download


async def test_download_directory_as_zip(proxy: Proxy) -> None:
    vfid = await proxy.new_folder()
    root = proxy.folder_path(vfid)
    (root / "d" / "sub").mkdir(parents=True)
    (root / "d" / "empty").mkdir()
    (root / "d" / "a.txt").write_bytes(b"A" * 1000)
    (root / "d" / "sub" / "b.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    token = await proxy.download_token(vfid, "d", archive=True)
    async with proxy.http.get(proxy.client_url + "/download", params={"token": token}) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "application/zip"
        assert "d.zip" in resp.headers["Content-Disposition"]
        raw = await resp.read()
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        assert sorted(zf.namelist()) == ["a.txt", "empty/", "sub/b.bin"]
        assert zf.read("sub/b.bin") == (root / "d" / "sub" / "b.bin").read_bytes()
    token = await proxy.download_token(vfid, "d")
    async with proxy.http.get(proxy.client_url + "/download", params={"token": token}) as resp:
        assert resp.status == 400  # a directory without archive
    async with proxy.http.get(proxy.client_url + "/download", params={"token": token, "archive": "true"}) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "application/zip"
        await resp.read()


async def _head(proxy: Proxy, token: str) -> dict[str, str]:
    async with proxy.http.head(proxy.client_url + "/upload", params={"token": token},
                               headers={"Tus-Resumable": "1.0.0"}) as resp:
        assert resp.status == 200
        return dict(resp.headers)


async def _wait_offset(proxy: Proxy, token: str, expected: int) -> str:
    """The server sees the cut connection a moment after the client: poll until it settled."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        offset = (await _head(proxy, token))["Upload-Offset"]
        if int(offset) >= expected or asyncio.get_running_loop().time() > deadline:
            assert int(offset) == expected
            return offset
        await asyncio.sleep(0.05)


async def _interrupted_patch(proxy: Proxy, token: str, data: bytes, offset: int, send: int) -> None:
    """A PATCH declaring ``len(data)`` bytes whose connection drops after ``send`` of them."""
    host, port = proxy.config.api.client.host_port
    reader, writer = await asyncio.open_connection(host, port)
    head = (f"PATCH /upload?token={token} HTTP/1.1\r\nHost: {host}\r\nTus-Resumable: 1.0.0\r\n"
            f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode()
    writer.write(head + data[:send])
    await writer.drain()
    writer.close()
    await writer.wait_closed()
