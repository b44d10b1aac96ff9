"""/auth/signout, /auth/update-password and /auth/update-full-name against a real database."""

from __future__ import annotations

import secrets

import pytest
import sqlalchemy as sa

from bai.manager.store import fixtures
from bai.manager.store import tables as t

from .conftest import PROBS, AuthEnv


def _login(username: str, password: str) -> dict[str, str]:
    return {"type": "keypair", "domain": "default", "username": username, "password": password}


# --- /auth/signout ---------------------------------------------------------------------------------

async def test_signout_deactivates_at_once(env: AuthEnv) -> None:
    email, password, creds = await env.signup()
    user = await env.user(email)
    await env.execute(sa.insert(t.keypairs).values(
        access_key="AKIASECOND" + user.uuid.hex[:10].upper(), secret_key="s" * 40, user_id=email,
        user=user.uuid, is_active=True, resource_policy="default"))
    # Warm the requester cache so the test proves signout invalidates it (no waiting out its TTL).
    assert (await env.api.call("GET", "/auth/test", creds=creds)).status == 200
    got = await env.api.call("POST", "/auth/signout", {"email": email, "password": password}, creds)
    assert (got.status, got.body) == (200, {})
    assert (await env.user(email)).status == "inactive"
    assert [kp.is_active for kp in await env.keypairs_of(email)] == [False, False]
    got = await env.api.call("GET", "/auth/test", creds=creds)
    assert (got.status, got.body["msg"]) == (401, "Access key not found")
    got = await env.api.call("POST", "/auth/authorize", _login(email, password))
    assert got.status == 401


async def test_signout_by_username(env: AuthEnv) -> None:
    email, password, creds = await env.signup(username="leaver-" + secrets.token_hex(3))
    username = (await env.user(email)).username
    got = await env.api.call("POST", "/auth/signout", {"username": username, "password": password}, creds)
    assert (got.status, got.body) == (200, {})
    assert (await env.user(email)).status == "inactive"


async def test_signout_failures_change_nothing(env: AuthEnv) -> None:
    email, password, creds = await env.signup()
    other, _, _ = await env.signup()
    cases = [
        ({"email": email, "password": "wrong"}, 401, "auth-failed"),
        ({"email": other, "password": password}, 403, "generic-forbidden"),
        ({"email": email}, 400, "invalid-api-params"),
        ({"email": email, "password": password, "extra": 1}, 400, "invalid-api-params"),
    ]
    for body, status, kind in cases:
        got = await env.api.call("POST", "/auth/signout", body, creds)
        assert (got.status, got.body["type"]) == (status, PROBS + kind), body
        assert (await env.user(email)).status == "active"
        assert (await env.user(other)).status == "active"
        assert all(kp.is_active for kp in await env.keypairs_of(email))
    got = await env.api.call("POST", "/auth/signout", {"email": email, "password": password})
    assert got.status == 401
    assert (await env.api.call("GET", "/auth/test", creds=creds)).status == 200


# --- /auth/update-password -------------------------------------------------------------------------

async def test_update_password(env: AuthEnv) -> None:
    email, password, creds = await env.signup()
    before = (await env.user(email)).password_changed_at
    body = {"old_password": password, "new_password": "n3w-pass", "new_password2": "n3w-pass"}
    got = await env.api.call("POST", "/auth/update-password", body, creds)
    assert (got.status, got.body) == (200, {})
    user = await env.user(email)
    assert "n3w-pass" not in user.password and fixtures.verify_password("n3w-pass", user.password)
    assert user.password_changed_at > before and user.need_password_change is False
    assert (await env.api.call("POST", "/auth/authorize", _login(email, "n3w-pass"))).status == 200
    assert (await env.api.call("POST", "/auth/authorize", _login(email, password))).status == 401


@pytest.mark.parametrize("case", ["mismatch", "wrong-old", "missing", "extra", "unsigned"])
async def test_update_password_failures_change_nothing(env: AuthEnv, case: str) -> None:
    email, password, creds = await env.signup()
    stored = (await env.user(email)).password
    ok = {"old_password": password, "new_password": "a-new-one", "new_password2": "a-new-one"}
    body, expect_status = {
        "mismatch": ({**ok, "new_password2": "different"}, 400),
        "wrong-old": ({**ok, "old_password": "wrong"}, 401),
        "missing": ({"old_password": password, "new_password": "x"}, 400),
        "extra": ({**ok, "email": email}, 400),
        "unsigned": (ok, 401),
    }[case]
    got = await env.api.call("POST", "/auth/update-password", body, None if case == "unsigned" else creds)
    assert got.status == expect_status
    if case == "mismatch":  # the original's plain (non-problem) body
        assert got.content_type == "application/json" and got.body == {"error_msg": "new password mismatch"}
    elif case == "wrong-old":
        assert got.body["type"] == PROBS + "auth-failed"
    assert (await env.user(email)).password == stored


# --- /auth/update-full-name ------------------------------------------------------------------------

async def test_update_full_name(env: AuthEnv) -> None:
    email, _, creds = await env.signup(full_name="Before")
    got = await env.api.call("POST", "/auth/update-full-name", {"email": email, "full_name": "After Name"}, creds)
    assert (got.status, got.body) == (200, {})
    assert (await env.user(email)).full_name == "After Name"


async def test_update_full_name_failures_change_nothing(env: AuthEnv) -> None:
    email, _, creds = await env.signup(full_name="Kept")
    for body, creds_used, status in (
        ({"email": email}, creds, 400),
        ({"email": email, "full_name": "x" * 65}, creds, 400),
        ({"email": email, "full_name": "n", "bogus": 1}, creds, 400),
        ({"email": email, "full_name": "n"}, None, 401),
    ):
        got = await env.api.call("POST", "/auth/update-full-name", body, creds_used)
        assert got.status == status, body
        assert (await env.user(email)).full_name == "Kept"
