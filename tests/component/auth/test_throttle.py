"""Throttling of /auth/authorize and /auth/signup (per client address and per user name, counted in
Redis), the bound on concurrent password hashing, sign-up's switch and its capped policy."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from bai.manager import errors
from bai.manager.config import AuthConfig
from bai.manager.services import auth as auth_service
from bai.manager.services.throttle import HashingGate
from bai.manager.store import fixtures
from bai.manager.store import tables as t

from .conftest import ADMIN_PASSWORD, PROBS, AuthEnv

LIMIT = 3
WINDOW = 60
# The test client connects from 127.0.0.1; trusting it as a proxy lets each test pick its own
# client address with X-Forwarded-For, so tests do not share counters.
AUTH_CONFIG = AuthConfig(signup_enabled=True, max_failed_attempts=LIMIT, failed_attempts_window=WINDOW,
                         trusted_proxies=frozenset({"127.0.0.1"}))


def _address() -> str:
    return f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250)}"


def _login(username: str, password: str) -> dict[str, str]:
    return {"type": "keypair", "domain": "default", "username": username, "password": password}


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Counts the real PBKDF2 verifications the login path performs."""
    calls: list[str] = []
    real = auth_service.verify_password

    def counting(password: str, stored: str) -> bool:
        calls.append(password)
        return real(password, stored)

    monkeypatch.setattr(auth_service, "verify_password", counting)
    yield calls


async def _authorize(env: AuthEnv, address: str, username: str, password: str) -> tuple[int, dict, dict]:  # type: ignore[type-arg]
    reply, headers = await env.api.call_with_headers("POST", "/auth/authorize", _login(username, password),
                                                     extra={"X-Forwarded-For": address})
    return reply.status, reply.body, headers


async def test_failed_logins_per_address_then_429_without_hashing(env: AuthEnv, hashes: list[str]) -> None:
    addr = _address()
    for i in range(LIMIT):
        status, body, _ = await _authorize(env, addr, f"nobody{i}-{uuid.uuid4().hex[:6]}", "wrong")
        assert (status, body["type"]) == (401, PROBS + "auth-failed")
    assert len(hashes) == LIMIT
    started = time.monotonic()
    # Even the right password is refused now from this address, and no hash is computed.
    status, body, headers = await _authorize(env, addr, "admin", ADMIN_PASSWORD)
    assert time.monotonic() - started < 0.2
    assert (status, body["type"], body["title"]) == (429, PROBS + "too-many-requests", "Too many failed login attempts.")
    assert headers["Content-Type"].startswith("application/problem+json")
    assert 1 <= int(headers["Retry-After"]) <= WINDOW and body["data"]["retry_after"] == int(headers["Retry-After"])
    assert len(hashes) == LIMIT
    # Other addresses are not affected.
    status, _, _ = await _authorize(env, _address(), "admin", ADMIN_PASSWORD)
    assert status == 200


async def test_failed_logins_per_user_name(env: AuthEnv, hashes: list[str]) -> None:
    email, password, _ = await env.signup()
    for _ in range(LIMIT):  # a distributed guesser: a new address for every guess
        status, _, _ = await _authorize(env, _address(), email, "guess-" + secrets.token_hex(3))
        assert status == 401
    status, body, headers = await _authorize(env, _address(), email.upper(), password)  # case variants too
    assert (status, body["type"]) == (429, PROBS + "too-many-requests") and int(headers["Retry-After"]) >= 1
    status, _, _ = await _authorize(env, _address(), email, password)
    assert status == 429
    assert len(hashes) == LIMIT


async def test_successful_logins_do_not_count(env: AuthEnv) -> None:
    addr = _address()
    for _ in range(LIMIT + 2):
        status, body, _ = await _authorize(env, addr, "admin", ADMIN_PASSWORD)
        assert status == 200, body
    for _ in range(LIMIT):
        assert (await _authorize(env, addr, "nobody-" + secrets.token_hex(3), "x"))[0] == 401
    assert (await _authorize(env, addr, "admin", ADMIN_PASSWORD))[0] == 429


async def test_concurrent_guesses_cannot_overshoot(env: AuthEnv, hashes: list[str]) -> None:
    addr = _address()
    replies = await asyncio.gather(*(_authorize(env, addr, f"flood-{i}", "x") for i in range(12)))
    statuses = sorted(r[0] for r in replies)
    assert statuses == [401] * LIMIT + [429] * (12 - LIMIT)
    assert len(hashes) == LIMIT


async def test_counters_live_in_redis_with_a_window(env: AuthEnv) -> None:
    addr = _address()
    await _authorize(env, addr, "nobody-" + secrets.token_hex(3), "x")
    key = f"auth.throttle.login.addr.{addr}"
    redis = env.api.ctx.redis_ratelimit
    assert await redis.zcard(key) == 1 and 0 < await redis.ttl(key) <= WINDOW + 1
    # The window slides: once the attempts are older than it, the address may try again.
    for _ in range(LIMIT - 1):
        await _authorize(env, addr, "nobody-" + secrets.token_hex(3), "x")
    assert (await _authorize(env, addr, "admin", ADMIN_PASSWORD))[0] == 429
    await redis.zremrangebyscore(key, "-inf", "+inf")  # what the passing of WINDOW seconds does
    assert (await _authorize(env, addr, "admin", ADMIN_PASSWORD))[0] == 200


async def test_signup_attempts_are_throttled(env: AuthEnv) -> None:
    addr = _address()
    for _ in range(LIMIT):
        body = {"domain": "default", "email": f"s{uuid.uuid4().hex[:8]}@example.com", "password": "p"}
        got = await env.api.call("POST", "/auth/signup", body, headers={"X-Forwarded-For": addr})
        assert got.status == 201, got.body
    before = await env.counts()
    body = {"domain": "default", "email": f"s{uuid.uuid4().hex[:8]}@example.com", "password": "p"}
    got, headers = await env.api.call_with_headers("POST", "/auth/signup", body, extra={"X-Forwarded-For": addr})
    assert (got.status, got.body["type"]) == (429, PROBS + "too-many-requests") and "Retry-After" in headers
    assert await env.counts() == before


async def test_signup_disabled_by_default(env: AuthEnv) -> None:
    assert AuthConfig().signup_enabled is False
    ctx = env.api.ctx
    enabled = ctx.config
    ctx.config = enabled.model_copy(update={"auth": AuthConfig()})
    try:
        before = await env.counts()
        got = await env.api.call("POST", "/auth/signup", {"domain": "default", "email": "x@example.com",
                                                          "password": "p"}, headers={"X-Forwarded-For": _address()})
        assert (got.status, got.content_type, got.body["type"]) == (
            403, "application/problem+json", PROBS + "generic-forbidden")
        assert await env.counts() == before
    finally:
        ctx.config = enabled


async def test_signed_up_keypairs_get_the_capped_policy(env: AuthEnv) -> None:
    email, _, creds = await env.signup()
    [kp] = await env.keypairs_of(email)
    assert kp.resource_policy == fixtures.SIGNUP_POLICY == AuthConfig().signup_resource_policy
    async with env.engine.connect() as conn:
        policy = (await conn.execute(sa.select(t.keypair_resource_policies).where(
            t.keypair_resource_policies.c.name == kp.resource_policy))).one()
    assert {"cpu", "mem"} <= set(policy.total_resource_slots)
    requester = await env.api.ctx.requesters.get(creds.access_key)
    assert requester is not None and requester.policy.total_resource_slots["cpu"] == 2


@pytest.mark.parametrize("policy", ["no-such-policy", "default"])  # missing, and one without slot limits
async def test_signup_refuses_a_policy_without_limits(env: AuthEnv, policy: str) -> None:
    ctx = env.api.ctx
    configured = ctx.config
    ctx.config = configured.model_copy(update={"auth": configured.auth.model_copy(
        update={"signup_resource_policy": policy})})
    try:
        before = await env.counts()
        got = await env.api.call("POST", "/auth/signup", {
            "domain": "default", "email": f"p{uuid.uuid4().hex[:6]}@example.com", "password": "p"},
            headers={"X-Forwarded-For": _address()})
        assert (got.status, got.body["type"]) == (500, PROBS + "server-misconfigured")
        assert await env.counts() == before
    finally:
        ctx.config = configured


# ------------------------------------------------------------------ the hashing gate

async def test_hashing_gate_bounds_concurrency() -> None:
    gate = HashingGate(slots=2, max_waiting=100)
    lock = threading.Lock()
    running, peak = [0], [0]

    def work(password: str) -> str:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            return fixtures.hash_password(password)
        finally:
            with lock:
                running[0] -= 1

    results = await asyncio.wait_for(asyncio.gather(*(gate.run(work, f"p{i}") for i in range(6))), 60)
    assert len(set(results)) == 6 and peak[0] == 2


async def test_hashing_gate_refuses_past_its_queue() -> None:
    gate = HashingGate(slots=1, max_waiting=1)
    release = threading.Event()
    first = asyncio.create_task(gate.run(release.wait, 30))
    second = asyncio.create_task(gate.run(lambda: "second"))
    for _ in range(100):  # a few loop turns: first takes the slot, second queues behind it
        if gate.waiting == 1:
            break
        await asyncio.sleep(0)
    assert gate.waiting == 1
    with pytest.raises(errors.TooManyRequests) as refused:
        await gate.run(lambda: "third")
    assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "1"
    release.set()
    assert await asyncio.wait_for(first, 10) is True and await asyncio.wait_for(second, 10) == "second"
