"""Shared config in etcd, behind a small store interface.

We speak etcd v3's JSON gateway (``POST /v3/kv/range`` and friends, served by every etcd >= 3.3
on its client port) through aiohttp, which every one of our daemons has loaded anyway. A gRPC
client (aetcd, before) cost each process about 11 MiB of resident memory for its C core and
protobuf runtime and broke child processes forked after it loaded; what we use of etcd is small
(get, prefix scans, one compare-and-put, leases; no watches) and maps one-to-one onto the
gateway's documented calls.

Keys are laid out as the original: ``/sorna/<namespace>/<key>``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, unquote

import aiohttp

from bai.common.bounded import read_bounded

#: The most we read of one etcd answer: a whole config tree is a few KiB; anything near this
#: is not an answer we can use.
MAX_REPLY_BYTES = 16 * 1024 * 1024


class EtcdError(Exception):
    """etcd refused a call, or could not be reached or did not answer within the deadline."""


def quote_key(part: str) -> str:
    """Registry names and image aliases are URL-quoted inside keys (``/`` and ``:``)."""
    return quote(part, safe="")


def unquote_key(part: str) -> str:
    return unquote(part)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def _prefix_end(prefix: bytes) -> bytes:
    """The first key after every key starting with ``prefix`` (etcd's ``range_end``)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


class _Gateway:
    """One aiohttp session to one etcd member; every call bounded by ``deadline`` seconds."""

    def __init__(self, base_url: str, deadline: float) -> None:
        self._base = base_url.rstrip("/")
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=deadline),
            connector=aiohttp.TCPConnector(limit=8),
            json_serialize=json.dumps,
        )

    async def call(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            async with self._session.post(self._base + path, json=body) as resp:
                raw = await read_bounded(resp, MAX_REPLY_BYTES)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EtcdError(f"etcd at {self._base} unreachable: {exc!r}") from exc
        if len(raw) > MAX_REPLY_BYTES:
            raise EtcdError(f"etcd answered {path} with more than {MAX_REPLY_BYTES} bytes")
        try:
            reply = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise EtcdError(f"etcd answered {path} with malformed JSON") from exc
        if status != 200 or not isinstance(reply, dict):
            message = reply.get("message") or reply.get("error") if isinstance(reply, dict) else None
            raise EtcdError(f"etcd refused {path}: HTTP {status} {message or ''}".rstrip())
        return reply

    async def close(self) -> None:
        await self._session.close()


class Lease:
    """An etcd lease: keys put with it vanish ``ttl`` seconds after its last refresh."""

    def __init__(self, gateway: _Gateway, lease_id: str, ttl: int) -> None:
        self._gw = gateway
        self.id = lease_id
        self.ttl = ttl

    async def refresh(self) -> int:
        """Keep the lease alive; the TTL etcd granted again, or 0 when etcd no longer knows it
        (restarted, or we were cut off past its TTL) and whoever holds it must register again."""
        reply = await self._gw.call("/v3/lease/keepalive", {"ID": self.id})
        return int((reply.get("result") or {}).get("TTL") or 0)

    async def revoke(self) -> None:
        await self._gw.call("/v3/lease/revoke", {"ID": self.id})


class EtcdStore:
    """A namespaced view of etcd. All keys passed in are relative to ``/sorna/<namespace>/``."""

    def __init__(self, gateway: _Gateway, namespace: str) -> None:
        self._gw = gateway
        self.prefix = f"/sorna/{namespace}/"

    def _k(self, key: str) -> bytes:
        return (self.prefix + key.lstrip("/")).encode()

    async def get(self, key: str) -> str | None:
        reply = await self._gw.call("/v3/kv/range", {"key": _b64(self._k(key))})
        kvs = reply.get("kvs") or []
        return _unb64(kvs[0].get("value")).decode() if kvs else None

    async def put(self, key: str, value: str, lease: Lease | None = None) -> None:
        body: dict[str, Any] = {"key": _b64(self._k(key)), "value": _b64(value.encode())}
        if lease is not None:
            body["lease"] = lease.id
        await self._gw.call("/v3/kv/put", body)

    async def put_if_absent(self, key: str, value: str) -> bool:
        """Atomically create ``key``; return False if it already existed."""
        k = _b64(self._k(key))
        reply = await self._gw.call("/v3/kv/txn", {
            "compare": [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": k, "value": _b64(value.encode())}}],
        })
        return bool(reply.get("succeeded"))

    async def put_dict(self, prefix: str, values: Mapping[str, object]) -> None:
        """Flatten a nested mapping under ``prefix`` (``{"a": {"b": 1}}`` -> ``prefix/a/b = 1``)."""
        for key, value in values.items():
            path = f"{prefix.rstrip('/')}/{key}" if prefix else key
            if isinstance(value, Mapping):
                await self.put_dict(path, value)
            else:
                await self.put(path, str(value))

    async def get_prefix(self, prefix: str) -> dict[str, str]:
        """Flat ``{relative key: value}`` of everything under ``prefix``."""
        full = self._k(prefix)
        reply = await self._gw.call("/v3/kv/range", {"key": _b64(full), "range_end": _b64(_prefix_end(full))})
        out: dict[str, str] = {}
        for kv in reply.get("kvs") or []:
            out[_unb64(kv.get("key")).decode()[len(full):].lstrip("/")] = _unb64(kv.get("value")).decode()
        return out

    async def delete(self, key: str) -> None:
        await self._gw.call("/v3/kv/deleterange", {"key": _b64(self._k(key))})

    async def delete_prefix(self, prefix: str) -> None:
        full = self._k(prefix)
        await self._gw.call("/v3/kv/deleterange", {"key": _b64(full), "range_end": _b64(_prefix_end(full))})

    async def lease(self, ttl: int) -> Lease:
        reply = await self._gw.call("/v3/lease/grant", {"TTL": ttl})
        return Lease(self._gw, str(reply["ID"]), int(reply.get("TTL") or ttl))


def parse_addr(addr: str, default_port: int) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep:
        return addr, default_port
    return host, int(port)


@asynccontextmanager
async def connect(addr: str, namespace: str, call_deadline: int = 10) -> AsyncIterator[EtcdStore]:
    """``call_deadline`` (seconds) bounds every etcd call: a hung etcd must fail a request, not
    hold it forever (we use no watches, whose streams such a deadline would cut)."""
    host, port = parse_addr(addr, 2379)
    gateway = _Gateway(f"http://{host}:{port}", call_deadline)
    try:
        yield EtcdStore(gateway, namespace)
    finally:
        await gateway.close()
