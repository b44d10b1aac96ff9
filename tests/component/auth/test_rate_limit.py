"""The per-keypair rate limit (rolling 15-minute window in Redis): a refused request does not use up
budget, so a client that keeps calling past its limit is not locked out for longer."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from bai.manager.store import tables as t

from .conftest import PROBS, AuthEnv, Creds


async def _limited_keypair(env: AuthEnv, limit: int) -> Creds:
    _, _, creds = await env.signup()
    await env.execute(sa.update(t.keypairs).where(t.keypairs.c.access_key == creds.access_key)
                      .values(rate_limit=limit))
    env.api.ctx.requesters.invalidate(creds.access_key)
    return creds


async def test_refused_requests_do_not_consume_budget(env: AuthEnv) -> None:
    creds = await _limited_keypair(env, 3)
    remaining = []
    for _ in range(3):
        reply, headers = await env.api.call_with_headers("GET", "/auth/test", creds=creds)
        assert reply.status == 200
        remaining.append(headers["X-RateLimit-Remaining"])
        assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Window"]) == ("3", "900")
    assert remaining == ["2", "1", "0"]
    for _ in range(10):
        reply, headers = await env.api.call_with_headers("GET", "/auth/test", creds=creds)
        assert (reply.status, reply.body["type"]) == (429, PROBS + "rate-limit-exceeded")
        assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("3", "0")
    key = f"ratelimit.{creds.access_key}"
    redis = env.api.ctx.redis_ratelimit
    assert await redis.zcard(key) == 3  # the ten refusals were not recorded
    # Once the oldest request leaves the window, exactly one more request fits.
    oldest = await redis.zrange(key, 0, 0)
    await redis.zrem(key, *oldest)
    reply, headers = await env.api.call_with_headers("GET", "/auth/test", creds=creds)
    assert reply.status == 200 and headers["X-RateLimit-Remaining"] == "0"
    assert (await env.api.call("GET", "/auth/test", creds=creds)).status == 429


async def test_concurrent_requests_cannot_overshoot_the_limit(env: AuthEnv) -> None:
    creds = await _limited_keypair(env, 5)
    replies = await asyncio.gather(*(env.api.call("GET", "/auth/test", creds=creds) for _ in range(12)))
    assert sorted(r.status for r in replies) == [200] * 5 + [429] * 7
    assert await env.api.ctx.redis_ratelimit.zcard(f"ratelimit.{creds.access_key}") == 5


async def test_unlimited_keypairs_report_the_default_headers(env: AuthEnv) -> None:
    creds = await _limited_keypair(env, 1)
    await env.execute(sa.update(t.keypairs).where(t.keypairs.c.access_key == creds.access_key)
                      .values(rate_limit=None))
    env.api.ctx.requesters.invalidate(creds.access_key)
    for _ in range(3):
        reply, headers = await env.api.call_with_headers("GET", "/auth/test", creds=creds)
        assert reply.status == 200
        assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("1000", "1000")
