"""One way to open Redis for every bai daemon, with deadlines on everything.

Every command has a socket timeout (pub/sub listening is exempt: redis-py waits on it without
one), connects are bounded, and keep-alive plus health checks notice a Redis that went away
while a connection sat idle.

A Redis is either one server (``addr``) or a primary watched by Redis Sentinel (``sentinel``: the
sentinels' addresses, and the ``service_name`` they monitor it as). Through Sentinel every new
connection asks the sentinels for the current primary, so after a failover the connections
broken by it are made again to the new primary: commands fail only while the sentinels elect it,
and pub/sub and stream readers (which subscribe or read again after a lost connection) carry on.
"""

from __future__ import annotations

from typing import Annotated, Any

import redis.asyncio as aioredis
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError
from redis.asyncio.sentinel import Sentinel

from bai.common.etcd import EtcdStore, parse_addr, parse_addr_list

DEFAULT_SERVICE_NAME = "mymaster"


def _sentinel_list(value: Any) -> Any:
    if isinstance(value, str):  # etcd's ``config/redis/sentinel`` is a comma list
        value = [v for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return tuple(f"{h}:{p}" for v in value for h, p in parse_addr_list(str(v), 26379))
    return value


def _service_name(value: str) -> str:
    if not value or len(value) > 128 or any(c.isspace() for c in value):
        raise ValueError(f"not a Sentinel service name: {value!r}")
    return value


#: Sentinels' ``host:port`` addresses, given as a list or as one comma-separated string.
SentinelAddrs = Annotated[tuple[str, ...], BeforeValidator(_sentinel_list)]
ServiceName = Annotated[str, AfterValidator(_service_name)]


class RedisTarget(BaseModel):
    """Where a daemon's Redis is: one server, or the primary Sentinel names ``service_name``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    addr: str = "127.0.0.1:6379"
    password: str | None = None
    #: ``host:port`` of each sentinel; empty: no Sentinel, ``addr`` is the server.
    sentinel: SentinelAddrs = ()
    service_name: ServiceName = DEFAULT_SERVICE_NAME

    def describe(self) -> str:
        """For messages: where this Redis is, without the password."""
        if self.sentinel:
            return f"Sentinel service {self.service_name!r} via {','.join(self.sentinel)}"
        return self.addr


async def redis_target_from_etcd(etcd: EtcdStore) -> RedisTarget | None:
    """The cluster's Redis as the installer publishes it in etcd (``config/redis/addr``, or
    ``config/redis/sentinel`` + ``config/redis/service_name``, and ``config/redis/password``),
    read in one call; None when etcd names neither an address nor sentinels."""
    keys = await etcd.get_prefix("config/redis/")
    addr, sentinel = keys.get("addr", ""), keys.get("sentinel", "")
    if not addr and not sentinel:
        return None
    try:
        return RedisTarget(addr=addr or RedisTarget().addr, password=keys.get("password") or None,
                           sentinel=sentinel, service_name=keys.get("service_name") or DEFAULT_SERVICE_NAME)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"etcd's config/redis/ keys are invalid: {problems}") from None


def _options(timeout: float) -> dict[str, Any]:
    return {"socket_timeout": timeout, "socket_connect_timeout": min(timeout, 5.0),
            "socket_keepalive": True, "health_check_interval": 15}


def open_redis(addr: str, db: int, password: str | None, timeout: float = 10.0) -> aioredis.Redis:
    host, port = parse_addr(addr, 6379)
    return aioredis.Redis(host=host, port=port, db=db, password=password or None, decode_responses=False,
                          **_options(timeout))


class _SentinelRedis(aioredis.Redis):
    """A client of the Sentinel-named primary that also closes its connections to the sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        pool = self.connection_pool
        await super().aclose(close_connection_pool)
        manager = getattr(pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):  # each client: older redis-py has no Sentinel.aclose
            await sentinel.aclose()


def open_redis_target(target: RedisTarget, db: int, timeout: float = 10.0) -> aioredis.Redis:
    """A client of ``target`` (one server, or the primary its sentinels name) with
    :func:`open_redis`'s deadlines; ``aclose()`` closes everything it opened."""
    if not target.sentinel:
        return open_redis(target.addr, db, target.password, timeout)
    options = _options(timeout)
    sentinels = [parse_addr(s, 26379) for s in target.sentinel]
    # The sentinels require the same password as the data nodes (the installer sets both).
    sentinel_options = {k: v for k, v in options.items() if k != "health_check_interval"}
    sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves its __init__ unannotated
        sentinels, sentinel_kwargs={**sentinel_options, "password": target.password or None})
    client: aioredis.Redis = sentinel.master_for(
        target.service_name, redis_class=_SentinelRedis, db=db, password=target.password or None,
        decode_responses=False, check_connection=True, **options)
    return client
