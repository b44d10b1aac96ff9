"""A storage proxy served in-process on free loopback ports over a throwaway volume, and small
clients for its two APIs (aiohttp, as the manager and the official client use)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bai.storage.config import StorageProxyConfig
from bai.storage.server import running
from tests.fixtures.halfstack import free_port

AUTH = "X-BackendAI-Storage-Auth-Token"


def make_config(volume_root: Path, *, manager_port: int, client_port: int, **proxy: Any) -> StorageProxyConfig:
    return StorageProxyConfig.model_validate({
        "storage-proxy": {"node-id": "i-test", "secret": secrets.token_hex(16), "session-expire": 600,
                          "usage-cache-ttl": 0, **proxy},
        "api": {"client": {"service-addr": f"127.0.0.1:{client_port}"},
                "manager": {"service-addr": f"127.0.0.1:{manager_port}", "secret": secrets.token_hex(16)}},
        "volume": {"volume1": {"backend": "vfs", "path": str(volume_root)}},
    })


@dataclass
class Proxy:
    config: StorageProxyConfig
    volume_root: Path
    http: aiohttp.ClientSession

    @property
    def manager_url(self) -> str:
        return f"http://{self.config.api.manager.service_addr}"

    @property
    def client_url(self) -> str:
        return f"http://{self.config.api.client.service_addr}"

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None,
                   *, auth: str | None = None) -> tuple[int, Any]:
        """The manager-facing API; the JSON reply (or None for an empty one)."""
        headers = {AUTH: self.config.api.manager.secret if auth is None else auth}
        async with self.http.request(method, self.manager_url + path, json=body, headers=headers) as resp:
            raw = await resp.read()
            return resp.status, (await resp.json(content_type=None) if raw else None)

    async def new_folder(self, kind: str = "user", scope: uuid.UUID | None = None,
                         options: dict[str, Any] | None = None) -> str:
        vfid = f"{kind}:{scope or uuid.uuid4()}/{uuid.uuid4().hex}"
        status, _ = await self.call("POST", "/folder/create", {"volume": "volume1", "vfid": vfid,
                                                               "options": options or {}})
        assert status == 204
        return vfid

    def folder_path(self, vfid: str) -> Path:
        qsid, _, hexid = vfid.rpartition("/")
        return self.volume_root / uuid.UUID(qsid.split(":", 1)[1]).hex / hexid[:2] / hexid[2:4] / hexid[4:]

    async def upload_token(self, vfid: str, relpath: str, size: int) -> str:
        status, reply = await self.call("POST", "/folder/file/upload",
                                        {"volume": "volume1", "vfid": vfid, "relpath": relpath, "size": size})
        assert status == 200, reply
        return str(reply["token"])

    async def download_token(self, vfid: str, relpath: str, archive: bool = False) -> str:
        status, reply = await self.call("POST", "/folder/file/download",
                                        {"volume": "volume1", "vfid": vfid, "relpath": relpath, "archive": archive})
        assert status == 200, reply
        return str(reply["token"])

    async def patch(self, token: str, data: bytes, offset: int, **query: str) -> aiohttp.ClientResponse:
        headers = {"Tus-Resumable": "1.0.0", "Upload-Offset": str(offset),
                   "Content-Type": "application/offset+octet-stream"}
        async with self.http.patch(self.client_url + "/upload", params={"token": token, **query},
                                   data=data, headers=headers) as resp:
            await resp.read()
            return resp

    async def upload(self, vfid: str, relpath: str, data: bytes, chunk: int = 64 * 1024) -> None:
        token = await self.upload_token(vfid, relpath, len(data))
        offset = 0
        while offset < len(data):
            resp = await self.patch(token, data[offset:offset + chunk], offset)
            assert resp.status == 204, await resp.text()
            offset = int(resp.headers["Upload-Offset"])


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[Proxy]:
    volume_root = tmp_path / "volume1"
    volume_root.mkdir()
    config = make_config(volume_root, manager_port=free_port(), client_port=free_port())
    async with running(config), aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        yield Proxy(config, volume_root, http)
