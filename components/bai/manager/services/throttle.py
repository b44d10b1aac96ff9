"""Abuse guards for password checks: failed-attempt throttling shared by every manager (Redis),
and a bound on concurrent password hashing in this process.

Each login guess costs a 600k-round PBKDF2 (a few hundred ms of CPU) on the shared thread pool.
The throttle refuses a client address or a user name that failed too often in the last window
*before* any hashing; the gate keeps a flood from occupying every worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from bai.manager import errors
from bai.manager.config import AuthConfig

from .context import ManagerContext

T = TypeVar("T")

# A sliding window per key (a sorted set of attempt times). Refuse when any key is full and say
# how long until its oldest attempt leaves the window; otherwise record the attempt on all keys.
# Atomic, so concurrent guesses cannot all slip in at count limit-1. Returns seconds as a string
# (a Lua number would be truncated to an integer). ARGV: now, window, limit, member.
_RESERVE_LUA = """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local wait = 0
for _, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= limit then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    local w = tonumber(oldest[2]) + window - now
    if w > wait then wait = w end
  end
end
if wait > 0 then return tostring(wait) end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[4])
  redis.call('EXPIRE', key, math.ceil(window) + 1)
end
return '0'
"""


class Attempt:
    """One recorded attempt; ``forgive()`` takes it back (the password was right)."""

    def __init__(self, redis: aioredis.Redis, keys: list[str], member: str) -> None:
        self._redis, self._keys, self._member = redis, keys, member

    async def forgive(self) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for key in self._keys:
            pipe.zrem(key, self._member)
        await pipe.execute()


class AttemptThrottle:
    """At most ``limit`` counted attempts per client address and per user name in ``window``
    seconds, across all managers sharing the rate-limit Redis."""

    def __init__(self, redis: aioredis.Redis, limit: int, window: float) -> None:
        self._redis = redis
        self._limit = limit
        self._window = window
        self._script: AsyncScript = redis.register_script(_RESERVE_LUA)

    @staticmethod
    def keys(action: str, address: str, name: str) -> list[str]:
        # Names are hashed: they come from the request body (any length, any characters), and
        # case variants of one name share a counter.
        digest = hashlib.sha256(name.strip().casefold().encode("utf-8", "surrogatepass")).hexdigest()
        return [f"auth.throttle.{action}.addr.{address}", f"auth.throttle.{action}.name.{digest}"]

    async def reserve(self, action: str, address: str, name: str) -> Attempt:
        """Record an attempt, or raise TooManyFailedAttempts (429, Retry-After) without one."""
        keys = self.keys(action, address, name)
        member = f"{time.time():.6f}.{secrets.token_hex(4)}"
        wait = float(await self._script(keys=keys, args=[time.time(), self._window, self._limit, member]))
        if wait > 0:
            raise errors.TooManyFailedAttempts(
                max(1, math.ceil(wait)), f"Too many failed attempts; try again in {math.ceil(wait)} s.")
        return Attempt(self._redis, keys, member)


class HashingGate:
    """Runs password hashing in worker threads, at most ``slots`` at a time; a request that would
    wait behind more than ``max_waiting`` others is refused (429) instead of queueing forever."""

    def __init__(self, slots: int, max_waiting: int) -> None:
        self._sem = asyncio.Semaphore(slots)
        self._max_waiting = max_waiting
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Requests queued for a hashing slot now."""
        return self._waiting

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._sem.locked() and self._waiting >= self._max_waiting:
            raise errors.TooManyRequests(1, "Too many password checks in progress; try again shortly.")
        self._waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self._waiting -= 1
        try:
            return await asyncio.to_thread(fn, *args)
        finally:
            self._sem.release()


class AuthGuard:
    """The throttle and the gate of one manager process."""

    def __init__(self, config: AuthConfig, redis: aioredis.Redis) -> None:
        self.config = config
        self.throttle = AttemptThrottle(redis, config.max_failed_attempts, config.failed_attempts_window)
        self.gate = HashingGate(config.max_concurrent_hashing, config.max_hashing_queue)


def guard_of(ctx: ManagerContext) -> AuthGuard:
    """The AuthGuard of a manager context, made on first use (one per context)."""
    guard = ctx.extra.get(_GUARD)
    if not isinstance(guard, AuthGuard):
        guard = ctx.extra[_GUARD] = AuthGuard(ctx.config.auth, ctx.redis_ratelimit)
    return guard


_GUARD = "auth_guard"
