"""Password login with a pending password change, the password policy of /auth/update-password,
and keypair rotation (POST /auth/rotate-keypair: a successor keypair, the old one valid for the
grace period, then retired) with who may rotate whose keypair; against a real database."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import dateutil.parser
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from bai.manager.config import AuthConfig
from bai.manager.services import auth as auth_svc
from bai.manager.store import fixtures
from bai.manager.store import tables as t

from .conftest import PROBS, AuthEnv, Creds

AUTH_CONFIG = AuthConfig(signup_enabled=True, max_failed_attempts=10_000)


def _login(username: str, password: str) -> dict[str, str]:
    return {"type": "keypair", "domain": "default", "username": username, "password": password}


async def _works(env: AuthEnv, creds: Creds) -> bool:
    got = await env.api.call("GET", "/auth/test", creds=creds)
    assert got.status in (200, 401), got.body
    return got.status == 200


async def _add_account(env: AuthEnv, role: str, domain: str = "default") -> tuple[str, Creds]:
    """A user of ``role`` in ``domain`` with one keypair (straight into the database)."""
    email = f"{role}-{secrets.token_hex(4)}@{domain}.example.com"
    uid = uuid.uuid4()
    ak, sk = fixtures.generate_keypair()
    async with env.engine.begin() as conn:
        await conn.execute(pg_insert(t.domains).values(name=domain).on_conflict_do_nothing())
        await conn.execute(sa.insert(t.users).values(
            uuid=uid, username=email, email=email, status="active", domain_name=domain, role=role,
            resource_policy="default", main_access_key=ak))
        await conn.execute(sa.insert(t.keypairs).values(
            access_key=ak, secret_key=sk, user_id=email, user=uid, is_active=True, is_admin=role != "user",
            rate_limit=777, resource_policy="default"))
    return email, Creds(ak, sk)


@contextmanager
def grace(env: AuthEnv, seconds: float) -> Iterator[None]:
    """This module's manager configured with another ``[auth] rotation-grace`` for a while."""
    ctx = env.api.ctx
    saved = ctx.config
    ctx.config = saved.model_copy(update={"auth": saved.auth.model_copy(update={"rotation_grace": seconds})})
    try:
        yield
    finally:
        ctx.config = saved


async def _rotate(env: AuthEnv, creds: Creds, access_key: str | None = None) -> Any:
    return await env.api.call("POST", "/auth/rotate-keypair",
                              {} if access_key is None else {"access_key": access_key}, creds)


# --- password login and change -----------------------------------------------------------------

async def test_a_pending_password_change_does_not_stop_a_login(env: AuthEnv) -> None:
    """As the original: need_password_change is for the client to act on; the login answers the
    keypair, and a password change clears the flag."""
    email, password, creds = await env.signup()
    await env.execute(sa.update(t.users).where(t.users.c.email == email).values(need_password_change=True))
    got = await env.api.call("POST", "/auth/authorize", _login(email, password))
    assert got.status == 200
    assert got.body == {"data": {"access_key": creds.access_key, "secret_key": creds.secret_key,
                                 "role": "user", "status": "active"}}
    before = (await env.user(email)).password_changed_at
    body = {"old_password": password, "new_password": "long-enough-1", "new_password2": "long-enough-1"}
    assert (await env.api.call("POST", "/auth/update-password", body, creds)).status == 200
    user = await env.user(email)
    assert user.need_password_change is False and user.password_changed_at > before


async def test_a_weak_new_password_is_refused_and_changes_nothing(env: AuthEnv) -> None:
    email, password, creds = await env.signup()
    await env.execute(sa.update(t.users).where(t.users.c.email == email).values(need_password_change=True))
    stored = await env.user(email)
    for new, why in (("short", "too short"), (password, "differ")):
        got = await env.api.call("POST", "/auth/update-password",
                                 {"old_password": password, "new_password": new, "new_password2": new}, creds)
        assert (got.status, got.content_type) == (400, "application/problem+json")
        assert got.body["type"] == PROBS + "invalid-api-params" and why in got.body["msg"]
        after = await env.user(email)
        assert (after.password, after.password_changed_at, after.need_password_change) == (
            stored.password, stored.password_changed_at, True)
    assert (await env.api.call("POST", "/auth/authorize", _login(email, password))).status == 200


# --- keypair rotation --------------------------------------------------------------------------

async def test_rotating_ones_own_keypair_keeps_both_working_for_the_grace(env: AuthEnv) -> None:
    email, password, old = await env.signup()
    got = await _rotate(env, old)
    assert got.status == 201, got.body
    new = Creds(got.body["access_key"], got.body["secret_key"])
    assert new.access_key != old.access_key and got.body["previous_access_key"] == old.access_key
    expires = dateutil.parser.isoparse(got.body["previous_expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=1))) < timedelta(minutes=1)  # the default grace
    assert await _works(env, new) and await _works(env, old)
    rows = {kp.access_key: kp for kp in await env.keypairs_of(email)}
    for column in ("is_admin", "rate_limit", "resource_policy", "user", "user_id", "is_active"):
        assert getattr(rows[new.access_key], column) == getattr(rows[old.access_key], column), column
    assert (await env.user(email)).main_access_key == new.access_key
    login = await env.api.call("POST", "/auth/authorize", _login(email, password))
    assert login.body["data"]["access_key"] == new.access_key  # not the key on its way out
    again = await _rotate(env, old)
    assert again.status == 400 and "successor" in again.body["msg"]
    assert len(await env.keypairs_of(email)) == 2


async def test_a_rotated_keypair_stops_at_the_end_of_its_grace(env: AuthEnv) -> None:
    _, _, old = await env.signup()
    with grace(env, 0.5):
        got = await _rotate(env, old)
    assert got.status == 201
    new = Creds(got.body["access_key"], got.body["secret_key"])
    assert await _works(env, old)
    end = time.monotonic() + 10
    while not await auth_svc.retire_rotated_keypairs(env.api.ctx):
        assert time.monotonic() < end, "the rotated keypair was never retired"
        await asyncio.sleep(0.1)
    assert not await _works(env, old) and await _works(env, new)


async def test_with_no_grace_the_old_keypair_stops_at_once(env: AuthEnv) -> None:
    _, _, old = await env.signup()
    assert await _works(env, old)  # cached: the rotation must drop it from the cache
    with grace(env, 0):
        got = await _rotate(env, old)
    assert got.status == 201
    assert not await _works(env, old)
    assert await _works(env, Creds(got.body["access_key"], got.body["secret_key"]))


async def test_who_may_rotate_whose_keypair(env: AuthEnv) -> None:
    user_email, user = await _add_account(env, "user")
    _, other_user = await _add_account(env, "user")
    _, domain_admin = await _add_account(env, "admin")
    _, monitor = await _add_account(env, "monitor")
    _, foreign_admin = await _add_account(env, "admin", domain=f"d{secrets.token_hex(3)}")
    refusals = [
        (other_user, user.access_key, 403), (monitor, user.access_key, 403),
        (foreign_admin, user.access_key, 403), (domain_admin, env.admin.access_key, 403),
        (domain_admin, monitor.access_key, 403), (env.admin, "AKIANOSUCHKEY0000000", 404),
    ]
    for caller, target, status in refusals:
        got = await _rotate(env, caller, target)
        assert got.status == status, (caller, target, got.body)
        assert got.body["type"] == PROBS + ("object-not-found" if status == 404 else "generic-forbidden")
    assert len(await env.keypairs_of(user_email)) == 1
    # a domain admin rotates a user of their domain, but does not get to read the new secret
    got = await _rotate(env, domain_admin, user.access_key)
    assert got.status == 201 and got.body["secret_key"] is None
    [successor] = [kp for kp in await env.keypairs_of(user_email) if kp.access_key == got.body["access_key"]]
    assert await _works(env, Creds(successor.access_key, successor.secret_key))
    # a superadmin rotates anyone's and gets the secret
    got = await _rotate(env, env.admin, other_user.access_key)
    assert got.status == 201 and got.body["secret_key"]
    assert await _works(env, Creds(got.body["access_key"], got.body["secret_key"]))


async def test_bad_rotation_requests_change_nothing(env: AuthEnv) -> None:
    email, _, creds = await env.signup()
    inactive = "AKIAOFF" + secrets.token_hex(6).upper()
    user = await env.user(email)
    await env.execute(sa.insert(t.keypairs).values(
        access_key=inactive, secret_key="s" * 40, user_id=email, user=user.uuid, is_active=False,
        resource_policy="default"))
    cases = [
        ({"access_key": inactive}, creds, 400, "invalid-api-params"),
        ({"access_key": ""}, creds, 400, "invalid-api-params"),
        ({"access_key": "x" * 21}, creds, 400, "invalid-api-params"),
        ({"grace": 0}, creds, 400, "invalid-api-params"),
        ({}, None, 401, "auth-failed"),
    ]
    for body, caller, status, kind in cases:
        got = await env.api.call("POST", "/auth/rotate-keypair", body, caller)
        assert (got.status, got.body["type"]) == (status, PROBS + kind), body
    assert len(await env.keypairs_of(email)) == 2 and (await env.user(email)).main_access_key == creds.access_key
