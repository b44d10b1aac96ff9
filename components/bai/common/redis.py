"""One way to open Redis for every bai daemon, with deadlines on everything.

Every command has a socket timeout (pub/sub listening is exempt: redis-py waits on it without
one), connects are bounded, and keep-alive plus health checks notice a Redis that went away
while a connection sat idle.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from bai.common.etcd import parse_addr


def open_redis(addr: str, db: int, password: str | None, timeout: float = 10.0) -> aioredis.Redis:
    host, port = parse_addr(addr, 6379)
    return aioredis.Redis(host=host, port=port, db=db, password=password or None, decode_responses=False,
                          socket_timeout=timeout, socket_connect_timeout=min(timeout, 5.0),
                          socket_keepalive=True, health_check_interval=15)
