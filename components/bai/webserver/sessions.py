"""Browser logins kept in Redis.

A login is one Redis key ``bai.web.session.<sha256(id)>`` holding JSON: the keypair the manager
gave at login (the secret key never leaves the server), who logged in, when, and the login's CSRF
token. The cookie carries only the random id (``secrets.token_urlsafe(32)``); Redis holds its hash,
so a leaked Redis dump does not hand out cookies. The key expires after ``idle_timeout`` and every
request pushes that back (one ``GETEX``); ``max_age`` since login is checked on each read. Logout
deletes the key, which ends the login for every webserver process at once.

Each process keeps the logins it read for ``CACHE_SECONDS`` (so most requests cost no Redis round
trip), but only while it listens on the ``bai.web.session-ended`` channel: logout (and any other
end) publishes the key there and every webserver drops it at once. A process whose subscription is
down caches nothing and asks Redis every time.

Failed logins are counted per user id and per client address (``INCR`` + ``EXPIRE`` on first
failure) for ``login_block_time``; past the allowed count a login answers 429 before the manager
is asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .config import SessionSection
from .errors import SessionStoreDown

log = logging.getLogger(__name__)

KEY_PREFIX = "bai.web.session."
ENDED_CHANNEL = "bai.web.session-ended"
#: Seconds a process reuses a login it read (ended logins are dropped at once through the channel).
CACHE_SECONDS = 5.0
#: Logins a process keeps at most (the cache starts over past it).
MAX_CACHED = 10000
FAIL_PREFIX = "bai.web.login-fail."
#: Seconds a request waits for the session store at most (then 503): Redis answers in
#: milliseconds, and redis-py retries a refused connection for seconds before it gives up.
STORE_DEADLINE = 1.5
#: Bytes of a cookie value we look up at all (token_urlsafe(32) is 43 characters).
MAX_COOKIE_LENGTH = 128


@dataclass(frozen=True)
class Login:
    access_key: str
    secret_key: str
    user_id: str
    role: str
    status: str
    domain: str
    created: float
    csrf_token: str

    def public(self) -> dict[str, str]:
        """What a browser may see of its login (never the secret key)."""
        return {"access_key": self.access_key, "role": self.role, "status": self.status,
                "user_id": self.user_id, "domain": self.domain}

    def signing_key(self, day: str, host: str) -> bytes:
        """The key that signs this login's calls on ``day`` (``YYYYMMDD``, UTC) to ``host``: the
        first two of the three HMACs of a signature (bai.common.auth.signature), which depend on
        nothing else. Kept on this object, so it is derived once per login per process while the
        login is cached (not on every relayed call) and it is dropped with the login: a logout,
        an expiry or a new keypair (a new login object) never signs with an old key."""
        memo = self.__dict__.get("_signing")
        if memo is not None and memo[0] == day and memo[1] == host:
            return memo[2]  # type: ignore[no-any-return]
        k1 = hmac.new(self.secret_key.encode(), day.encode(), "sha256").digest()
        key = hmac.new(k1, host.encode("utf-8", "surrogateescape"), "sha256").digest()
        object.__setattr__(self, "_signing", (day, host, key))  # not a field: never stored in Redis
        return key


def _key(session_id: str) -> str:
    return KEY_PREFIX + hashlib.sha256(session_id.encode()).hexdigest()


def _fail_key(kind: str, value: str) -> str:
    return FAIL_PREFIX + kind + "." + hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


class SessionStore:
    def __init__(self, redis: aioredis.Redis, cfg: SessionSection) -> None:
        self.redis, self.cfg = redis, cfg
        self._cache: dict[str, tuple[Login, float]] = {}
        #: Set while the ended-logins subscription is live; the cache is used only then.
        self.listening = asyncio.Event()

    @contextlib.asynccontextmanager
    async def _answering(self) -> AsyncIterator[None]:
        """One exchange with Redis on a request's behalf: an unreachable, failing or slow Redis
        (past ``STORE_DEADLINE``, its client's own retries included) is a 503, never a 500 or a
        request that hangs."""
        try:
            async with asyncio.timeout(STORE_DEADLINE):
                yield
        except (RedisError, OSError, TimeoutError) as exc:
            raise SessionStoreDown() from exc

    async def follow_ends(self) -> None:
        """Drop ended logins from the cache as other processes (and this one) announce them;
        runs until cancelled, subscribing again after a lost connection."""
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(ENDED_CHANNEL)
                async for msg in pubsub.listen():
                    if msg.get("type") == "subscribe":
                        self._cache.clear()  # whatever ended while we were not listening
                        self.listening.set()
                    elif msg.get("type") == "message":
                        data = msg.get("data")
                        self._cache.pop(data.decode() if isinstance(data, bytes) else str(data), None)
            except (RedisError, OSError) as exc:
                log.warning("the ended-logins subscription is lost (%r); caching no login until it is back", exc)
            finally:
                self.listening.clear()
                self._cache.clear()
                await pubsub.aclose()
            await asyncio.sleep(1.0)

    async def create(self, *, access_key: str, secret_key: str, user_id: str, role: str, status: str,
                     domain: str) -> tuple[str, Login]:
        session_id = secrets.token_urlsafe(32)
        login = Login(access_key=access_key, secret_key=secret_key, user_id=user_id, role=role, status=status,
                      domain=domain, created=time.time(), csrf_token=secrets.token_urlsafe(32))
        async with self._answering():
            await self.redis.set(_key(session_id), json.dumps(asdict(login)), ex=self._ttl(login))
        return session_id, login

    def _ttl(self, login: Login) -> int:
        left = login.created + self.cfg.max_age - time.time()
        return max(1, int(min(self.cfg.idle_timeout, left)))

    async def get(self, session_id: str | None) -> Login | None:
        """The login behind a cookie value (its idle expiry pushed back), or None."""
        if not session_id or len(session_id) > MAX_COOKIE_LENGTH:
            return None
        key = _key(session_id)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and self.listening.is_set() and now - cached[1] < CACHE_SECONDS:
            if time.time() - cached[0].created < self.cfg.max_age:
                return cached[0]
            self._cache.pop(key, None)
        async with self._answering():
            raw = await self.redis.getex(key, ex=max(1, int(self.cfg.idle_timeout)))
        if raw is None:
            return None
        try:
            login = Login(**json.loads(raw))
        except (ValueError, TypeError):
            await self.delete(session_id)
            return None
        if time.time() - login.created >= self.cfg.max_age:
            await self.delete(session_id)
            return None
        if self.cfg.max_age - (time.time() - login.created) < self.cfg.idle_timeout:
            # Near the end of max_age: the key must not outlive it.
            async with self._answering():
                await self.redis.expire(key, self._ttl(login))
        if self.listening.is_set():
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache[key] = (login, now)
        return login

    async def delete(self, session_id: str | None) -> None:
        if not session_id or len(session_id) > MAX_COOKIE_LENGTH:
            return
        key = _key(session_id)
        self._cache.pop(key, None)
        async with self._answering():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.delete(key)
                pipe.publish(ENDED_CHANNEL, key)
                await pipe.execute()

    async def flush(self) -> int:
        """Every login ends (``flush_on_startup``); answers how many there were."""
        count = 0
        try:
            async for key in self.redis.scan_iter(match=KEY_PREFIX + "*", count=500):
                count += await self.redis.delete(key)
                await self.redis.publish(ENDED_CHANNEL, key)
        except (RedisError, OSError) as exc:
            raise SessionStoreDown() from exc
        return count

    # -- login throttling --

    async def blocked_for(self, user_id: str, address: str) -> int:
        """Seconds until this user id or address may try again (0: now)."""
        user_key, addr_key = _fail_key("user", user_id.lower()), _fail_key("addr", address)
        async with self._answering():
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in (user_key, addr_key):
                    pipe.get(key)
                    pipe.ttl(key)
                user_fails, user_ttl, addr_fails, addr_ttl = await pipe.execute()
        wait = 0
        if user_fails is not None and int(user_fails) >= self.cfg.login_allowed_fail_count:
            wait = max(wait, int(user_ttl), 1)
        if addr_fails is not None and int(addr_fails) >= self.cfg.login_allowed_fail_count_per_addr:
            wait = max(wait, int(addr_ttl), 1)
        return wait

    async def record_failure(self, user_id: str, address: str) -> None:
        block = max(1, int(self.cfg.login_block_time))
        async with self._answering():
            async with self.redis.pipeline(transaction=True) as pipe:
                for key in (_fail_key("user", user_id.lower()), _fail_key("addr", address)):
                    # NX: the window starts at the first failure and is not pushed back by later ones.
                    pipe.incr(key)
                    pipe.expire(key, block, nx=True)
                await pipe.execute()

    async def clear_failures(self, user_id: str) -> None:
        """A successful login clears its user id's count (not its address's: a valid account of
        one's own must not reset the count of guesses at others)."""
        async with self._answering():
            await self.redis.delete(_fail_key("user", user_id.lower()))
