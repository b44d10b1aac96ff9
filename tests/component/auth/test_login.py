"""/auth, /auth/test, /auth/role, /auth/authorize and /auth/signup against a real database."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa

from bai.manager.services import auth as auth_service
from bai.manager.store import fixtures
from bai.manager.store import tables as t

from .conftest import ADMIN_PASSWORD, PROBS, AuthEnv, Creds

MISMATCH = "User credential mismatch."


# --- /auth, /auth/test -----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/auth", "/auth/test"])
async def test_auth_test_echo(env: AuthEnv, path: str) -> None:
    got = await env.api.call("POST", path, {"echo": "hi"}, env.admin)
    assert (got.status, got.body) == (200, {"authorized": "yes", "echo": "hi"})
    got = await env.api.call("GET", path + "?echo=q", creds=env.admin)
    assert (got.status, got.body) == (200, {"authorized": "yes", "echo": "q"})
    got = await env.api.call("GET", path)
    assert got.status == 401 and got.body["type"] == PROBS + "auth-failed"
    assert got.content_type == "application/problem+json"


# --- /auth/role ------------------------------------------------------------------------------------

async def test_role(env: AuthEnv) -> None:
    got = await env.api.call("GET", "/auth/role", creds=env.admin)
    assert got.body == {"global_role": "superadmin", "domain_role": "admin", "group_role": None}
    async with env.engine.connect() as conn:
        gid = await conn.scalar(sa.select(t.groups.c.id).where(t.groups.c.name == "default"))
    got = await env.api.call("GET", f"/auth/role?group={gid}", creds=env.admin)
    assert got.body == {"global_role": "superadmin", "domain_role": "admin", "group_role": "user"}
    _, _, user = await env.signup()
    got = await env.api.call("GET", f"/auth/role?group={gid}", creds=user)
    assert got.body == {"global_role": "user", "domain_role": "user", "group_role": "user"}


async def test_role_failures(env: AuthEnv) -> None:
    got = await env.api.call("GET", f"/auth/role?group={uuid.uuid4()}", creds=env.admin)
    assert got.status == 404 and got.body["type"] == PROBS + "object-not-found"
    got = await env.api.call("GET", "/auth/role?group=not-a-uuid", creds=env.admin)
    assert got.status == 400 and got.body["type"] == PROBS + "invalid-api-params" and "group" in got.body["data"]
    got = await env.api.call("GET", "/auth/role?bogus=1", creds=env.admin)
    assert got.status == 400 and "bogus" in got.body["data"]
    assert (await env.api.call("GET", "/auth/role")).status == 401


# --- /auth/authorize -------------------------------------------------------------------------------

def _login(username: str, password: str, domain: str = "default", **extra: object) -> dict[str, object]:
    return {"type": "keypair", "domain": domain, "username": username, "password": password, **extra}


async def test_authorize_by_email_and_username_then_use_keys(env: AuthEnv) -> None:
    for name in (fixtures.ADMIN_EMAIL, "admin"):
        got = await env.api.call("POST", "/auth/authorize", _login(name, ADMIN_PASSWORD, stoken="x"))
        assert got.status == 200, got.body
        assert got.body == {"data": {"access_key": env.admin.access_key, "secret_key": env.admin.secret_key,
                                     "role": "superadmin", "status": "active"}}
    email, password, _ = await env.signup(username="someone-" + uuid.uuid4().hex[:6])
    got = await env.api.call("POST", "/auth/authorize", _login(email, password))
    data = got.body["data"]
    assert (data["role"], data["status"]) == ("user", "active")
    echo = await env.api.call("POST", "/auth/test", {"echo": "ok"}, Creds(data["access_key"], data["secret_key"]))
    assert echo.body == {"authorized": "yes", "echo": "ok"}


async def test_authorize_prefers_admin_keypair(env: AuthEnv) -> None:
    email, password, first = await env.signup()
    user = await env.user(email)
    await env.execute(sa.insert(t.keypairs).values(
        access_key="AKIAADMINKEY" + uuid.uuid4().hex[:8].upper(), secret_key="s" * 40, user_id=email,
        user=user.uuid, is_active=True, is_admin=True, resource_policy="default"))
    got = await env.api.call("POST", "/auth/authorize", _login(email, password))
    assert got.body["data"]["access_key"].startswith("AKIAADMINKEY")
    assert got.body["data"]["access_key"] != first.access_key


@pytest.mark.parametrize("case", ["wrong-password", "unknown-user", "other-domain"])
async def test_authorize_mismatch(env: AuthEnv, case: str) -> None:
    body = {"wrong-password": _login("admin", "nope"), "unknown-user": _login("ghost@example.com", "x"),
            "other-domain": _login("admin", ADMIN_PASSWORD, domain="elsewhere")}[case]
    got = await env.api.call("POST", "/auth/authorize", body)
    assert (got.status, got.body["type"], got.body["msg"]) == (401, PROBS + "auth-failed", MISMATCH)


async def test_authorize_inactive_user_and_no_keypairs(env: AuthEnv) -> None:
    email, password, _ = await env.signup()
    await env.execute(sa.update(t.keypairs).where(t.keypairs.c.user_id == email).values(is_active=False))
    got = await env.api.call("POST", "/auth/authorize", _login(email, password))
    assert (got.status, got.body["msg"]) == (401, "No API keypairs found.")
    await env.execute(sa.update(t.users).where(t.users.c.email == email).values(status="inactive"))
    got = await env.api.call("POST", "/auth/authorize", _login(email, password))
    assert (got.status, got.body["msg"]) == (401, MISMATCH)
    await env.execute(sa.update(t.users).where(t.users.c.email == email).values(status="before-verification"))
    got = await env.api.call("POST", "/auth/authorize", _login(email, password))
    assert (got.status, got.body["msg"]) == (401, "This account needs email verification.")


async def test_authorize_bad_params(env: AuthEnv) -> None:
    got = await env.api.call("POST", "/auth/authorize", {**_login("admin", ADMIN_PASSWORD), "type": "jwt"})
    assert (got.status, got.body["type"]) == (400, PROBS + "invalid-api-params")
    got = await env.api.call("POST", "/auth/authorize", {"type": "keypair", "domain": "default"})
    assert got.status == 400 and set(got.body["data"]) == {"username", "password"}
    got = await env.api.call("POST", "/auth/authorize", {**_login("admin", ADMIN_PASSWORD), "type": "oauth"})
    assert got.status == 400 and "type" in got.body["data"]


# --- /auth/signup ----------------------------------------------------------------------------------

async def test_signup_creates_user_keypair_and_membership(env: AuthEnv) -> None:
    before = await env.counts()
    email, password, creds = await env.signup(username="newbie-" + uuid.uuid4().hex[:6], full_name="New Bie",
                                              description="hello", group="ignored-extra")
    assert await env.counts() == (before[0] + 1, before[1] + 1, before[2] + 1)
    user = await env.user(email)
    assert (user.role, user.status, user.resource_policy, user.full_name, user.description) == (
        "user", "active", "default", "New Bie", "hello")
    assert user.main_access_key == creds.access_key
    assert password not in user.password and fixtures.verify_password(password, user.password)
    [kp] = await env.keypairs_of(email)
    assert (kp.access_key, kp.secret_key, kp.rate_limit, kp.resource_policy, kp.is_active, kp.is_admin) == (
        creds.access_key, creds.secret_key, 1000, fixtures.SIGNUP_POLICY, True, False)
    async with env.engine.connect() as conn:
        group = await conn.scalar(
            sa.select(t.groups.c.name).join(t.association_groups_users,
                                            t.association_groups_users.c.group_id == t.groups.c.id)
            .where(t.association_groups_users.c.user_id == user.uuid))
    assert group == "default"
    got = await env.api.call("GET", "/auth/test?echo=1", creds=creds)
    assert got.body == {"authorized": "yes", "echo": "1"}


async def test_signup_username_defaults_to_email(env: AuthEnv) -> None:
    email, _, _ = await env.signup()
    assert (await env.user(email)).username == email


async def test_signup_rejections_leave_nothing(env: AuthEnv) -> None:
    email, _, _ = await env.signup(username="taken-" + uuid.uuid4().hex[:6])
    taken_username = (await env.user(email)).username
    await env.execute(sa.insert(t.domains).values(name="closed", is_active=False))
    before = await env.counts()
    fresh = f"f{uuid.uuid4().hex[:6]}@example.com"
    for body in (
        {"domain": "default", "email": email, "password": "p"},                          # duplicate email
        {"domain": "default", "email": fresh, "password": "p", "username": taken_username},  # duplicate username
        {"domain": "nowhere", "email": fresh, "password": "p"},                          # unknown domain
        {"domain": "closed", "email": fresh, "password": "p"},                           # inactive domain
        {"domain": "default", "email": fresh},                                           # missing password
        {"domain": "default", "email": "x" * 70 + "@example.com", "password": "p"},      # too long
    ):
        got = await env.api.call("POST", "/auth/signup", body)
        assert (got.status, got.body["type"]) == (400, PROBS + "invalid-api-params"), body
        assert await env.counts() == before, body
    assert await env.user(fresh) is None


async def test_signup_is_one_transaction(env: AuthEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the user row is written (here: a keypair access-key collision) rolls back all."""
    monkeypatch.setattr(auth_service, "generate_keypair", lambda: (env.admin.access_key, "s" * 40))
    before = await env.counts()
    email = f"atomic{uuid.uuid4().hex[:6]}@example.com"
    got = await env.api.call("POST", "/auth/signup", {"domain": "default", "email": email, "password": "p"})
    assert got.status == 400
    assert await env.counts() == before and await env.user(email) is None


async def test_concurrent_duplicate_signups(env: AuthEnv) -> None:
    before = await env.counts()
    body = {"domain": "default", "email": f"race{uuid.uuid4().hex[:6]}@example.com", "password": "p"}
    replies = await asyncio.gather(*(env.api.call("POST", "/auth/signup", body) for _ in range(3)))
    assert sorted(r.status for r in replies) == [201, 400, 400]
    assert await env.counts() == (before[0] + 1, before[1] + 1, before[2] + 1)
