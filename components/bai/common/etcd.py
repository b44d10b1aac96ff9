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

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, unquote

import aiohttp

from bai.common.bounded import read_bounded

#: The most we read of one etcd answer: a whole config tree is a few KiB; anything near this
#: is not an answer we can use.
MAX_REPLY_BYTES = 16 * 1024 * 1024

log = logging.getLogger(__name__)


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


#: How long one connection attempt to one member may take before the next member is tried
#: (a member whose host is down drops SYNs; a refused connection fails at once anyway).
CONNECT_TIMEOUT = 3.0


class _Gateway:
    """aiohttp calls to the members of one etcd cluster; every call bounded by ``deadline`` seconds.

    A member that cannot be reached (refused, reset, silent past its share of the deadline, or
    answering 503 "unavailable", e.g. without a leader) makes the call move on to the next one;
    the member that last answered is asked first next time. A call that etcd answered with an
    error is not tried elsewhere: every member would say the same. A transaction (which is not
    idempotent) moves on only when its request cannot have reached the member, i.e. when the
    connection could not be made."""

    def __init__(self, base_urls: Sequence[str], deadline: float) -> None:
        if not base_urls:
            raise ValueError("no etcd endpoint given")
        self._bases = [u.rstrip("/") for u in base_urls]
        self._current = 0
        self._deadline = deadline
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=deadline),
            connector=aiohttp.TCPConnector(limit=8),
            json_serialize=json.dumps,
        )

    @property
    def current(self) -> str:
        """The member asked first (the one that answered last)."""
        return self._bases[self._current]

    async def call(self, path: str, body: Mapping[str, Any], *, idempotent: bool = True) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        ends = loop.time() + self._deadline
        count = len(self._bases)
        failures: list[str] = []
        for attempt in range(count):
            index = (self._current + attempt) % count
            left = ends - loop.time()
            if left <= 0:
                break
            # Each member still to try gets an equal share of what is left of the deadline, so
            # one silent member cannot use up the time of the others (a single member: all of it).
            share = left / (count - attempt)
            try:
                reply = await self._call_one(self._bases[index], path, body, share, idempotent)
            except _MemberUnusable as exc:
                failures.append(str(exc))
                continue
            if index != self._current:
                log.warning("etcd: %s answers; %s did not", self._bases[index], self.current)
                self._current = index
            return reply
        raise EtcdUnreachable(f"etcd unreachable for {path}: " + "; ".join(failures or ["deadline passed"]))

    async def _call_one(self, base: str, path: str, body: Mapping[str, Any], budget: float,
                        idempotent: bool) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=budget, sock_connect=min(budget, CONNECT_TIMEOUT))
        try:
            async with self._session.post(base + path, json=body, timeout=timeout) as resp:
                raw = await read_bounded(resp, MAX_REPLY_BYTES)
                status = resp.status
        except aiohttp.ClientConnectorError as exc:  # the request never left: safe to send elsewhere
            raise _MemberUnusable(f"{base}: {exc!r}") from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise _MemberUnusable(f"{base}: no connection within {timeout.sock_connect:.1f} s") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            if idempotent:
                raise _MemberUnusable(f"{base}: {exc!r}") from exc
            raise EtcdError(f"etcd at {base} failed during {path} (it may or may not have been applied): "
                            f"{exc!r}") from exc
        if len(raw) > MAX_REPLY_BYTES:
            raise EtcdError(f"etcd answered {path} with more than {MAX_REPLY_BYTES} bytes")
        try:
            reply = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise EtcdError(f"etcd answered {path} with malformed JSON") from exc
        if status != 200 or not isinstance(reply, dict):
            message = reply.get("message") or reply.get("error") if isinstance(reply, dict) else None
            text = f"HTTP {status} {message or ''}".rstrip()
            if status == 503 and idempotent:  # this member cannot serve (no leader, stopping)
                raise _MemberUnusable(f"{base}: {text}")
            raise EtcdError(f"etcd refused {path}: {text}")
        return reply

    async def close(self) -> None:
        await self._session.close()


class EtcdUnreachable(EtcdError, ConnectionError):
    """No member could serve the call within its deadline: transient (a ConnectionError, so the
    daemons answer 503 and retry, as for any backing service that is away for a moment)."""


class _MemberUnusable(Exception):
    """One member could not serve a call another member may serve."""


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
        reply = await self._gw.call("/v3/kv/txn", idempotent=False, body={
            "compare": [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": k, "value": _b64(value.encode())}}],
        })
        return bool(reply.get("succeeded"))

    async def put_if_less(self, key: str, value: str) -> bool:
        """Atomically set ``key`` to ``value`` when it is absent or its value sorts before
        ``value`` (bytewise: pad numbers to one width); False if it was kept."""
        if await self.put_if_absent(key, value):
            return True
        k = _b64(self._k(key))
        reply = await self._gw.call("/v3/kv/txn", idempotent=False, body={
            "compare": [{"key": k, "target": "VALUE", "result": "LESS", "value": _b64(value.encode())}],
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


def parse_addr_list(addrs: str, default_port: int) -> list[tuple[str, int]]:
    """``"h1:2379,h2:2379"`` (a single address too) as ``[(host, port), ...]``; ValueError names
    the entry that is not ``host[:port]`` with a port in 1-65535."""
    out: list[tuple[str, int]] = []
    for entry in (e.strip() for e in addrs.split(",")):
        try:
            host, port = parse_addr(entry, default_port)
        except ValueError:
            host, port = "", 0
        if not host or not 0 < port < 65536 or any(c in host for c in "/ @?#"):
            raise ValueError(f"not a host:port address: {entry!r}")
        out.append((host, port))
    return out


@asynccontextmanager
async def connect(addr: str, namespace: str, call_deadline: int = 10) -> AsyncIterator[EtcdStore]:
    """``addr`` is one member's ``host:port`` or a comma-separated list of a cluster's members.
    ``call_deadline`` (seconds) bounds every etcd call, over all the members it tries: a hung
    etcd must fail a request, not hold it forever (we use no watches, whose streams such a
    deadline would cut)."""
    gateway = _Gateway([f"http://{host}:{port}" for host, port in parse_addr_list(addr, 2379)], call_deadline)
    try:
        yield EtcdStore(gateway, namespace)
    finally:
        await gateway.close()
