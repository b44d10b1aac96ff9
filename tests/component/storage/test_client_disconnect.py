"""A client that goes away in the middle of a tus PATCH is a client event: what arrived is kept
(the upload resumes from HEAD's offset) and the proxy logs one line, no traceback."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from .conftest import Proxy


async def _offset(proxy: Proxy, token: str) -> int:
    async with proxy.http.head(proxy.client_url + "/upload", params={"token": token},
                               headers={"Tus-Resumable": "1.0.0"}) as resp:
        assert resp.status == 200
        return int(resp.headers["Upload-Offset"])


async def test_client_gone_mid_patch_is_one_log_line(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    vfid = await proxy.new_folder()
    size, sent = 8 * 2**20, 3 * 2**20
    token = await proxy.upload_token(vfid, "big.bin", size)
    host, port = proxy.config.api.client.service_addr.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (f"PATCH /upload?token={token} HTTP/1.1\r\nHost: {host}\r\nTus-Resumable: 1.0.0\r\n"
            f"Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {size}\r\n\r\n")
    writer.write(head.encode() + b"\0" * sent)
    await writer.drain()
    writer.transport.abort()  # gone without a word, most of the body unsent

    deadline = time.monotonic() + 15
    while "went away" not in caplog.text:  # the handler has seen the disconnect
        assert time.monotonic() < deadline, caplog.text
        await asyncio.sleep(0.05)
    # What arrived is kept: the upload resumes from there.
    assert await _offset(proxy, token) == sent
    storage_records = [r for r in caplog.records if r.name.startswith("bai.storage")]
    assert [r for r in storage_records if r.exc_info] == [], caplog.text
    gone = [r for r in storage_records if "went away" in r.getMessage()]
    assert len(gone) == 1 and gone[0].levelno == logging.INFO, caplog.text


async def test_client_gone_mid_download_logs_no_traceback(proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    vfid = await proxy.new_folder()
    size = 64 * 2**20
    (proxy.folder_path(vfid) / "big.bin").write_bytes(b"\1" * size)
    token = await proxy.download_token(vfid, "big.bin")
    host, port = proxy.config.api.client.service_addr.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port), limit=2**16)
    writer.write(f"GET /download?token={token} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    await reader.readexactly(2**16)
    writer.transport.abort()  # gone in the middle of the body

    # The proxy is still well: the same file downloads whole afterwards.
    async with proxy.http.get(proxy.client_url + "/download", params={"token": token}) as resp:
        assert resp.status == 200
        assert len(await resp.read()) == size
    storage_records = [r for r in caplog.records if r.name.startswith("bai.storage")]
    assert [r for r in storage_records if r.exc_info] == [], caplog.text
