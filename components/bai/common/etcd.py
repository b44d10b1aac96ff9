"""Shared config in etcd, behind a small store interface.

We use ``aetcd`` because the client the original names (``etcd3`` 0.12) no longer imports with
current protobuf releases, and aetcd covers what we need (get, prefix scans, transactions,
leases, watch) while co-installing with pulumi's grpcio/protobuf pins.

Keys are laid out as the original: ``/sorna/<namespace>/<key>``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from urllib.parse import quote, unquote

import aetcd


def quote_key(part: str) -> str:
    """Registry names and image aliases are URL-quoted inside keys (``/`` and ``:``)."""
    return quote(part, safe="")


def unquote_key(part: str) -> str:
    return unquote(part)


class EtcdStore:
    """A namespaced view of etcd. All keys passed in are relative to ``/sorna/<namespace>/``."""

    def __init__(self, client: aetcd.Client, namespace: str) -> None:
        self._client = client
        self.prefix = f"/sorna/{namespace}/"

    def _k(self, key: str) -> bytes:
        return (self.prefix + key.lstrip("/")).encode()

    async def get(self, key: str) -> str | None:
        result = await self._client.get(self._k(key))
        return None if result is None else result.value.decode()

    async def put(self, key: str, value: str, lease: aetcd.Lease | None = None) -> None:
        await self._client.put(self._k(key), value.encode(), lease=lease)

    async def put_if_absent(self, key: str, value: str) -> bool:
        """Atomically create ``key``; return False if it already existed."""
        k = self._k(key)
        ok, _ = await self._client.transaction(
            compare=[self._client.transactions.create(k) == 0],
            success=[self._client.transactions.put(k, value.encode())],
            failure=[],
        )
        return bool(ok)

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
        out: dict[str, str] = {}
        async for kv in await self._client.get_prefix(full):
            out[kv.key.decode()[len(full):].lstrip("/")] = kv.value.decode()
        return out

    async def delete(self, key: str) -> None:
        await self._client.delete(self._k(key))

    async def delete_prefix(self, prefix: str) -> None:
        await self._client.delete_prefix(self._k(prefix))

    async def lease(self, ttl: int) -> aetcd.Lease:
        return await self._client.lease(ttl)


def parse_addr(addr: str, default_port: int) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep:
        return addr, default_port
    return host, int(port)


@asynccontextmanager
async def connect(addr: str, namespace: str, call_deadline: int = 10) -> AsyncIterator[EtcdStore]:
    """``call_deadline`` (seconds) bounds every etcd call (gRPC deadline): a hung etcd must fail a
    request, not hold it forever. We use no watches, whose streams such a deadline would cut."""
    host, port = parse_addr(addr, 2379)
    client = aetcd.Client(host=host, port=port, timeout=call_deadline)
    try:
        yield EtcdStore(client, namespace)
    finally:
        await client.close()
