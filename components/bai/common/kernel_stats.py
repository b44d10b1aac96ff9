"""Live statistics of running kernels, handed from the agent to the manager through Redis.

Every heartbeat the agent measures its running kernels through its compute plugins and leaves each
kernel's figures under ``bai.kernel-stat.<kernel id>`` (JSON, expiring after a few heartbeats, so a
kernel whose agent went away stops showing any). The manager reads them for ``live_stat``. A stat is
the original's shape: ``{metric: {"current", "capacity", "pct", "unit_hint", "version": 2}}`` with
decimal strings, plus ``"devices": {device id: "value"}`` for per-device metrics (``cuda_util``...).
The figures are informative only: nothing is decided on them, so a reader bounds what it accepts
and ignores anything malformed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis

__all__ = ["MAX_STAT_BYTES", "publish", "read_many"]

#: A stat larger than this is not stored (or not believed when read).
MAX_STAT_BYTES = 64 * 1024


def _key(kernel_id: str) -> str:
    return f"bai.kernel-stat.{kernel_id}"


async def publish(redis: aioredis.Redis, stats: Mapping[str, Mapping[str, Any]], ttl: int) -> None:
    """Store each kernel's stat (one round trip for all of them)."""
    if not stats:
        return
    pipe = redis.pipeline(transaction=False)
    for kernel_id, stat in stats.items():
        data = json.dumps(stat, separators=(",", ":")).encode()
        if len(data) <= MAX_STAT_BYTES:
            pipe.set(_key(kernel_id), data, ex=max(int(ttl), 1))
    await pipe.execute()


async def read_many(redis: aioredis.Redis, kernel_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The stats there are of ``kernel_ids`` (kernels without one are left out)."""
    if not kernel_ids:
        return {}
    values = await redis.mget([_key(kid) for kid in kernel_ids])
    out: dict[str, dict[str, Any]] = {}
    for kernel_id, raw in zip(kernel_ids, values, strict=True):
        if not isinstance(raw, bytes) or len(raw) > MAX_STAT_BYTES:
            continue
        try:
            stat = json.loads(raw)
        except ValueError:
            continue
        if isinstance(stat, dict):
            out[kernel_id] = stat
    return out
