"""The GraphQL account mutations (users, keypairs, domains, projects) against a real database,
with the documents the official client 24.3.11 sends for `backend.ai admin ... add/update/delete/
purge/activate/deactivate/add-users/remove-users`: every happy path, the ok=false answers for
what is missing or taken, bad input refused as a GraphQL error, and every privilege escalation
refused with the database left exactly as it was."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from bai.manager.api import gql
from bai.manager.store import fixtures
from bai.manager.store import tables as t

from .conftest import ApiClient, Creds, ManagerDB
from .test_gql import Owner, _add_user

# --- the official client's documents (func/user.py, keypair.py, domain.py, group.py of 24.3.11) ---
CREATE_USER = ("mutation($email: String!, $input: UserInput!) {\n    create_user(email: $email, props: $input) {\n"
               "        ok msg user {domain_name email username uuid groups { id name }}\n    }\n}\n")
MODIFY_USER = ("mutation($email: String!, $input: ModifyUserInput!) {\n    modify_user(email: $email, props: $input) {\n"
               "        ok msg\n    }\n}\n")
DELETE_USER = "mutation($email: String!) {\n    delete_user(email: $email) {\n        ok msg\n    }\n}\n"
PURGE_USER = ("mutation($email: String!, $input: PurgeUserInput!) {\n    purge_user(email: $email, props: $input) {\n"
              "        ok msg\n    }\n}\n")
CREATE_KEYPAIR = ("mutation($user_id: String!, $input: KeyPairInput!) {  create_keypair(user_id: $user_id, "
                  "props: $input) {    ok msg keypair { access_key secret_key }  }}")
MODIFY_KEYPAIR = ("mutation($access_key: String!, $input: ModifyKeyPairInput!) {  modify_keypair(access_key: "
                  "$access_key, props: $input) {    ok msg  }}")
DELETE_KEYPAIR = "mutation($access_key: String!) {  delete_keypair(access_key: $access_key) {    ok msg  }}"
CREATE_DOMAIN = ("mutation($name: String!, $input: DomainInput!) {\n    create_domain(name: $name, props: $input) {\n"
                 "        ok msg domain {name description is_active total_resource_slots allowed_docker_registries "
                 "integration_id}\n    }\n}\n")
MODIFY_DOMAIN = ("mutation($name: String!, $input: ModifyDomainInput!) {\n    modify_domain(name: $name, "
                 "props: $input) {\n        ok msg\n    }\n}\n")
DELETE_DOMAIN = "mutation($name: String!) {\n    delete_domain(name: $name) {\n        ok msg\n    }\n}\n"
PURGE_DOMAIN = "mutation($name: String!) {\n    purge_domain(name: $name) {\n        ok msg\n    }\n}\n"
CREATE_GROUP = ("mutation($name: String!, $input: GroupInput!) {\n    create_group(name: $name, props: $input) {\n"
                "        ok msg group {id domain_name name}\n    }\n}\n")
MODIFY_GROUP = ("mutation($gid: UUID!, $input: ModifyGroupInput!) {\n    modify_group(gid: $gid, props: $input) {\n"
                "        ok msg\n    }\n}\n")
DELETE_GROUP = "mutation($gid: UUID!) {\n    delete_group(gid: $gid) {\n        ok msg\n    }\n}\n"
PURGE_GROUP = "mutation($gid: UUID!) {\n    purge_group(gid: $gid) {\n        ok msg\n    }\n}\n"
USER_Q = ("query($email: String) { user(email: $email) { email username full_name role status status_info "
          "domain_name allowed_client_ip sudo_session_enabled totp_activated need_password_change main_access_key "
          "resource_policy modified_at groups { name } } }")


def cli_user_input(domain: str, password: str, **over: Any) -> dict[str, Any]:
    """What `admin user add DOMAIN EMAIL PASSWORD` sends with its defaults."""
    return {"password": password, "role": "user", "status": "active", "need_password_change": False,
            "description": "", "domain_name": domain, "totp_activated": False, "sudo_session_enabled": False,
            "username": "", "full_name": "", "allowed_client_ip": None, "group_ids": [], **over}


def cli_group_input(domain: str, **over: Any) -> dict[str, Any]:
    """What `admin group add DOMAIN NAME` sends."""
    return {"description": "", "is_active": True, "domain_name": domain, "total_resource_slots": None,
            "allowed_vfolder_hosts": None, "integration_id": None, **over}


def toggle(is_active: bool) -> dict[str, Any]:
    """What `admin keypair activate/deactivate` sends."""
    return {"is_active": is_active, "is_admin": None, "resource_policy": None, "rate_limit": None}


@dataclass
class World:
    db: ManagerDB
    admin: Creds  # the superadmin of the fixtures
    admin_uuid: uuid.UUID
    default_group: uuid.UUID
    other_group: uuid.UUID
    dadmin: Owner  # a domain admin of "default"
    user1: Owner
    monitor: Owner
    other_admin: Owner  # a domain admin of "other"
    other_user: Owner
    client: ApiClient


@pytest.fixture(scope="module")
async def world(manager_db: ManagerDB, make_client: Any) -> World:
    async with manager_db.engine.begin() as conn:
        default_group = await conn.scalar(sa.select(t.groups.c.id).where(t.groups.c.domain_name == "default"))
        admin_uuid = await conn.scalar(sa.select(t.users.c.uuid).where(t.users.c.email == fixtures.ADMIN_EMAIL))
        other_group = uuid.uuid4()
        await conn.execute(sa.insert(t.domains).values(name="other"))
        await conn.execute(sa.insert(t.groups).values(id=other_group, name="default", domain_name="other"))
        dadmin = await _add_user(conn, "dadmin@example.com", "default", "admin", default_group)
        user1 = await _add_user(conn, "user1@example.com", "default", "user", default_group)
        monitor = await _add_user(conn, "eye@example.com", "default", "monitor", default_group)
        other_admin = await _add_user(conn, "boss@other.example.com", "other", "admin", other_group)
        other_user = await _add_user(conn, "peer@other.example.com", "other", "user", other_group)
    client = await make_client(gql.routes)
    return World(manager_db, manager_db.admin, admin_uuid, default_group, other_group, dadmin, user1, monitor,
                 other_admin, other_user, client)


async def call(w: World, creds: Creds, query: str, variables: dict[str, Any] | None = None) -> Any:
    reply = await w.client.post("/admin/gql", {"query": query, "variables": variables or {}}, creds)
    assert reply.status == 200, reply.body
    return reply.body


async def done(w: World, creds: Creds, query: str, variables: dict[str, Any], field: str) -> dict[str, Any]:
    """A mutation that answered ok=true."""
    body = await call(w, creds, query, variables)
    assert "errors" not in body, body
    payload: dict[str, Any] = body["data"][field]
    assert payload["ok"] is True and payload["msg"] == "success", payload
    return payload


def refused(body: Any, field: str) -> str:
    """A privilege failure or bad input: null data for the field and one error naming it."""
    assert body["data"] == {field: None}, body
    assert body["errors"][0]["path"] == [field], body
    message: str = body["errors"][0]["message"]
    return message


TABLES = ("users", "keypairs", "domains", "groups", "association_groups_users", "sessions", "kernels")


async def snapshot(w: World) -> dict[str, set[tuple[Any, ...]]]:
    """Every row of the account tables: what a refused write must leave as it found."""
    out: dict[str, set[tuple[Any, ...]]] = {}
    async with w.db.engine.connect() as conn:
        for name in TABLES:
            rows = (await conn.execute(sa.select(t.metadata.tables[name]))).all()
            out[name] = {tuple(str(v) for v in r) for r in rows}
    return out


async def unchanged_after(w: World, creds: Creds, query: str, variables: dict[str, Any], field: str) -> Any:
    """Run a write that must fail; assert the database did not change; return the body."""
    before = await snapshot(w)
    body = await call(w, creds, query, variables)
    assert await snapshot(w) == before, (field, body)
    return body


async def whoami(w: World, creds: Creds) -> Any:
    """Signed request with ``creds``: (status, body) of a user query."""
    reply = await w.client.post("/admin/gql", {"query": "{ user { email } }"}, creds)
    return reply.status, reply.body


async def user_row(w: World, email: str) -> Any:
    async with w.db.engine.connect() as conn:
        return (await conn.execute(sa.select(t.users).where(t.users.c.email == email))).first()


async def keypairs_of(w: World, email: str) -> list[Any]:
    async with w.db.engine.connect() as conn:
        return list((await conn.execute(sa.select(t.keypairs).where(t.keypairs.c.user_id == email)
                                        .order_by(t.keypairs.c.created_at))).all())


async def add_session(w: World, owner: Owner, status: str) -> uuid.UUID:
    sid = uuid.uuid4()
    async with w.db.engine.begin() as conn:
        await conn.execute(sa.insert(t.sessions).values(
            id=sid, name=f"s-{sid.hex[:8]}", domain_name=owner.domain, group_id=owner.group_id,
            user_uuid=owner.uuid, access_key=owner.creds.access_key, status=status))
        await conn.execute(sa.insert(t.kernels).values(
            id=uuid.uuid4(), session_id=sid, domain_name=owner.domain, group_id=owner.group_id,
            user_uuid=owner.uuid, access_key=owner.creds.access_key, status=status))
    return sid


async def set_session_status(w: World, sid: uuid.UUID, status: str) -> None:
    async with w.db.engine.begin() as conn:
        await conn.execute(sa.update(t.sessions).where(t.sessions.c.id == sid).values(status=status))
        await conn.execute(sa.update(t.kernels).where(t.kernels.c.session_id == sid).values(status=status))


async def owner_of(w: World, email: str, creds: Creds, group_id: uuid.UUID) -> Owner:
    row = await user_row(w, email)
    return Owner(creds, row.uuid, row.domain_name, group_id)


# ------------------------------------------------------------------ users

async def test_create_user_as_the_cli_sends(world: World) -> None:
    w = world
    variables = {"email": "new@example.com", "input": cli_user_input(
        "default", "s3cret-pass", full_name="New Person", group_ids=[str(w.default_group)],
        allowed_client_ip=["10.1.2.3/8", "192.168.1.7", "::1"], sudo_session_enabled=True)}
    payload = await done(w, w.admin, CREATE_USER, variables, "create_user")
    user = payload["user"]
    assert user["email"] == "new@example.com" and user["username"] == "new@example.com"  # blank -> email
    assert user["domain_name"] == "default" and user["groups"] == [{"id": str(w.default_group), "name": "default"}]
    row = await user_row(w, "new@example.com")
    assert str(row.uuid) == user["uuid"] and row.role == "user" and row.status == "active"
    assert row.status_info == "admin-requested" and row.full_name == "New Person"
    assert row.allowed_client_ip == ["10.0.0.0/8", "192.168.1.7", "::1"] and row.sudo_session_enabled is True
    assert row.password != "s3cret-pass" and fixtures.verify_password("s3cret-pass", row.password)
    # as the original, the new user has a main keypair (default policy, rate limit 10000, not admin)
    [kp] = await keypairs_of(w, "new@example.com")
    assert row.main_access_key == kp.access_key and kp.user == row.uuid and kp.is_active and not kp.is_admin
    assert kp.resource_policy == "default" and kp.rate_limit == 10000
    body = await call(w, w.admin, USER_Q, {"email": "new@example.com"})
    info = body["data"]["user"]
    assert info["allowed_client_ip"] == ["10.0.0.0/8", "192.168.1.7", "::1"] and info["sudo_session_enabled"] is True
    assert info["main_access_key"] == kp.access_key and info["totp_activated"] is False
    assert info["modified_at"] is not None and info["groups"] == [{"name": "default"}]
    # a domain admin creates users (and admins) in their own domain
    payload = await done(w, w.dadmin.creds, CREATE_USER, {"email": "helper@example.com", "input": cli_user_input(
        "default", "pw-helper", role="admin", username="helper")}, "create_user")
    assert payload["user"]["username"] == "helper" and payload["user"]["groups"] == []
    [kp] = await keypairs_of(w, "helper@example.com")
    assert kp.is_admin is True  # the role is admin: so is its keypair


async def test_create_user_conflicts_and_bad_input(world: World) -> None:
    w = world
    body = await unchanged_after(w, w.admin, CREATE_USER, {"email": "user1@example.com", "input": cli_user_input(
        "default", "pw")}, "create_user")
    assert body["data"]["create_user"] == {"ok": False, "msg": "a user with this email already exists", "user": None}
    body = await unchanged_after(w, w.admin, CREATE_USER, {"email": "x@example.com", "input": cli_user_input(
        "default", "pw", username="user1")}, "create_user")
    assert body["data"]["create_user"]["msg"] == "a user with this username already exists"
    body = await unchanged_after(w, w.admin, CREATE_USER, {"email": "x@example.com", "input": cli_user_input(
        "nowhere", "pw")}, "create_user")
    assert body["data"]["create_user"] == {"ok": False, "msg": "no such active domain: nowhere", "user": None}
    body = await unchanged_after(w, w.admin, CREATE_USER, {"email": "x@example.com", "input": cli_user_input(
        "default", "pw", group_ids=[str(w.other_group)])}, "create_user")
    assert body["data"]["create_user"]["ok"] is False and str(w.other_group) in body["data"]["create_user"]["msg"]
    body = await unchanged_after(w, w.admin, CREATE_USER, {"email": "x@example.com", "input": cli_user_input(
        "default", "pw", resource_policy="no-such-policy")}, "create_user")
    assert body["data"]["create_user"]["ok"] is False
    assert "(resource_policy)=(no-such-policy) is not present" in body["data"]["create_user"]["msg"]
    for email, over, words in (
        ("x@example.com", {"allowed_client_ip": ["10.0.0.300"]}, "not an IP address"),
        ("x@example.com", {"allowed_client_ip": ["example.com"]}, "not an IP address"),
        ("x@example.com", {"role": "wizard"}, "unknown role"),
        ("x@example.com", {"status": "sleeping"}, "unknown status"),
        ("x@example.com", {"password": ""}, "password must not be empty"),
        ("x@example.com", {"full_name": "n" * 65}, "longer than 64"),
        ("x@example.com", {"group_ids": ["not-a-uuid"]}, "not a UUID"),
        ("not-an-email", {}, "not an email address"),
        ("x" * 60 + "@example.com", {}, "longer than 64"),
    ):
        body = await unchanged_after(w, w.admin, CREATE_USER, {"email": email, "input": {
            **cli_user_input("default", "pw"), **over}}, "create_user")
        assert words in refused(body, "create_user"), (over, body)


async def test_concurrent_creates_of_one_email_make_one_user(world: World) -> None:
    w = world
    variables = {"email": "race@example.com", "input": cli_user_input("default", "pw")}
    bodies = await asyncio.gather(*(call(w, w.admin, CREATE_USER, variables) for _ in range(4)))
    assert sorted(b["data"]["create_user"]["ok"] for b in bodies) == [False, False, False, True], bodies
    assert len(await keypairs_of(w, "race@example.com")) == 1


async def test_modify_user(world: World) -> None:
    w = world
    await done(w, w.admin, CREATE_USER, {"email": "mod@example.com", "input": cli_user_input(
        "default", "pw1")}, "create_user")
    before = await user_row(w, "mod@example.com")
    await done(w, w.dadmin.creds, MODIFY_USER, {"email": "mod@example.com", "input": {
        "full_name": "Modified", "description": "desc", "password": "pw2", "need_password_change": True,
        "group_ids": [str(w.default_group)], "totp_activated": True, "username": None}}, "modify_user")
    row = await user_row(w, "mod@example.com")
    assert row.full_name == "Modified" and row.description == "desc" and row.need_password_change is True
    assert fixtures.verify_password("pw2", row.password) and row.password_changed_at > before.password_changed_at
    assert row.totp_activated is True and row.totp_activated_at is not None and row.modified_at > before.modified_at
    assert row.username == "mod@example.com"  # a null leaves it as it is
    body = await call(w, w.admin, USER_Q, {"email": "mod@example.com"})
    assert body["data"]["user"]["groups"] == [{"name": "default"}]
    # promotion to admin makes its keypairs admin keypairs, demotion takes that back
    await done(w, w.admin, MODIFY_USER, {"email": "mod@example.com", "input": {"role": "admin"}}, "modify_user")
    assert [k.is_admin for k in await keypairs_of(w, "mod@example.com")] == [True]
    await done(w, w.dadmin.creds, MODIFY_USER, {"email": "mod@example.com", "input": {"role": "user",
                                                                                     "group_ids": []}}, "modify_user")
    assert [k.is_admin for k in await keypairs_of(w, "mod@example.com")] == [False]
    body = await call(w, w.admin, USER_Q, {"email": "mod@example.com"})
    assert body["data"]["user"]["groups"] == [] and body["data"]["user"]["role"] == "user"
    # is_active (without status) deactivates: the user's key stops working at once
    [kp] = await keypairs_of(w, "mod@example.com")
    creds = Creds(kp.access_key, kp.secret_key)
    assert (await whoami(w, creds))[0] == 200
    await done(w, w.admin, MODIFY_USER, {"email": "mod@example.com", "input": {"is_active": False}}, "modify_user")
    row = await user_row(w, "mod@example.com")
    assert row.status == "inactive" and row.status_info == "admin-requested"
    status, reply = await whoami(w, creds)
    assert status == 401 and reply["type"].endswith("/auth-failed")
    await done(w, w.admin, MODIFY_USER, {"email": "mod@example.com", "input": {"status": "active"}}, "modify_user")
    assert (await whoami(w, creds))[0] == 200
    # moving to another domain leaves the old domain's projects
    await done(w, w.admin, MODIFY_USER, {"email": "mod@example.com", "input": {
        "group_ids": [str(w.default_group)]}}, "modify_user")
    await done(w, w.admin, MODIFY_USER, {"email": "mod@example.com", "input": {"domain_name": "other"}},
               "modify_user")
    body = await call(w, w.admin, USER_Q, {"email": "mod@example.com"})
    assert body["data"]["user"]["domain_name"] == "other" and body["data"]["user"]["groups"] == []
    # ok=false: nothing to update, no such user, a taken username, someone else's main key
    for email, props, msg in (
        ("mod@example.com", {"full_name": None}, "nothing to update"),
        ("ghost@example.com", {"full_name": "x"}, "no such user: ghost@example.com"),
        ("mod@example.com", {"username": "user1"}, "a user with this username already exists"),
        ("mod@example.com", {"main_access_key": w.user1.creds.access_key},
         "the main access key must be one of the user's own keypairs"),
        ("mod@example.com", {"domain_name": "nowhere"}, "no such active domain: nowhere"),
    ):
        body = await unchanged_after(w, w.admin, MODIFY_USER, {"email": email, "input": props}, "modify_user")
        assert body["data"]["modify_user"] == {"ok": False, "msg": msg}, (props, body)
    for props, words in (({"allowed_client_ip": ["1.2.3.4/33"]}, "not an IP address"),
                         ({"role": "root"}, "unknown role"), ({"username": ""}, "username must not be empty")):
        body = await unchanged_after(w, w.admin, MODIFY_USER, {"email": "mod@example.com", "input": props},
                                     "modify_user")
        assert words in refused(body, "modify_user")


async def test_allowed_client_ip_is_enforced(world: World) -> None:
    w = world
    assert (await whoami(w, w.user1.creds))[0] == 200
    await done(w, w.dadmin.creds, MODIFY_USER, {"email": "user1@example.com", "input": {
        "allowed_client_ip": ["10.0.0.0/8", "fd00::/8"]}}, "modify_user")
    status, reply = await whoami(w, w.user1.creds)  # the test client calls from 127.0.0.1
    assert status == 401 and reply["type"] == "https://api.backend.ai/probs/auth-failed"
    assert reply["msg"] == "'127.0.0.1' is not allowed IP address"
    assert (await whoami(w, w.dadmin.creds))[0] == 200  # other users are not affected
    await done(w, w.admin, MODIFY_USER, {"email": "user1@example.com", "input": {
        "allowed_client_ip": ["10.0.0.0/8", "127.0.0.0/8"]}}, "modify_user")
    status, reply = await whoami(w, w.user1.creds)
    assert status == 200 and reply["data"]["user"]["email"] == "user1@example.com"
    await done(w, w.admin, MODIFY_USER, {"email": "user1@example.com", "input": {"allowed_client_ip": ["10.9.9.9"]}},
               "modify_user")
    assert (await whoami(w, w.user1.creds))[0] == 401
    await done(w, w.admin, MODIFY_USER, {"email": "user1@example.com", "input": {"allowed_client_ip": []}},
               "modify_user")  # empty: anywhere again
    assert (await whoami(w, w.user1.creds))[0] == 200


async def test_delete_and_purge_user(world: World) -> None:
    w = world
    await done(w, w.admin, CREATE_USER, {"email": "gone@example.com", "input": cli_user_input(
        "default", "pw", group_ids=[str(w.default_group)])}, "create_user")
    [kp] = await keypairs_of(w, "gone@example.com")
    creds = Creds(kp.access_key, kp.secret_key)
    assert (await whoami(w, creds))[0] == 200
    await done(w, w.dadmin.creds, DELETE_USER, {"email": "gone@example.com"}, "delete_user")
    row = await user_row(w, "gone@example.com")
    assert row.status == "deleted" and row.status_info == "admin-requested"
    assert [k.is_active for k in await keypairs_of(w, "gone@example.com")] == [False]
    assert (await whoami(w, creds))[0] == 401
    body = await unchanged_after(w, w.admin, DELETE_USER, {"email": "ghost@example.com"}, "delete_user")
    assert body["data"]["delete_user"] == {"ok": False, "msg": "no such user: ghost@example.com"}
    # purge: refused while a session is not over; then the user, its keys, memberships and sessions go
    owner = await owner_of(w, "gone@example.com", creds, w.default_group)
    finished = await add_session(w, owner, "TERMINATED")
    live = await add_session(w, owner, "PENDING")
    body = await unchanged_after(w, w.admin, PURGE_USER, {"email": "gone@example.com",
                                                         "input": {"purge_shared_vfolders": False}}, "purge_user")
    assert body["data"]["purge_user"] == {
        "ok": False, "msg": "the user has 1 session(s) that are not terminated; terminate them first"}
    await set_session_status(w, live, "CANCELLED")
    await done(w, w.admin, PURGE_USER, {"email": "gone@example.com", "input": {"purge_shared_vfolders": False}},
               "purge_user")
    assert await user_row(w, "gone@example.com") is None and await keypairs_of(w, "gone@example.com") == []
    async with w.db.engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(t.sessions)
                                 .where(t.sessions.c.id.in_([finished, live]))) == 0
        assert await conn.scalar(sa.select(sa.func.count()).select_from(t.association_groups_users)
                                 .where(t.association_groups_users.c.user_id == owner.uuid)) == 0
    body = await unchanged_after(w, w.admin, PURGE_USER, {"email": "gone@example.com",
                                                         "input": {"purge_shared_vfolders": False}}, "purge_user")
    assert body["data"]["purge_user"] == {"ok": False, "msg": "no such user: gone@example.com"}


# ------------------------------------------------------------------ keypairs

async def test_keypairs_add_update_activate_delete(world: World) -> None:
    w = world
    await done(w, w.admin, CREATE_USER, {"email": "kp@example.com", "input": cli_user_input(
        "default", "pw")}, "create_user")
    [main] = await keypairs_of(w, "kp@example.com")
    # `admin keypair add kp@example.com default` (rate limit 5000): the payload has the secret
    payload = await done(w, w.admin, CREATE_KEYPAIR, {"user_id": "kp@example.com", "input": {
        "is_active": True, "is_admin": False, "resource_policy": "default", "rate_limit": 5000}}, "create_keypair")
    new = Creds(payload["keypair"]["access_key"], payload["keypair"]["secret_key"])
    assert new.access_key.startswith("AKIA") and len(new.access_key) == 20 and len(new.secret_key) == 40
    kps = await keypairs_of(w, "kp@example.com")
    assert [k.access_key for k in kps] == [main.access_key, new.access_key]
    assert kps[1].rate_limit == 5000 and kps[1].secret_key == new.secret_key
    assert (await user_row(w, "kp@example.com")).main_access_key == main.access_key  # still the first one
    status, reply = await whoami(w, new)
    assert status == 200 and reply["data"]["user"]["email"] == "kp@example.com"
    body = await call(w, new, "{ keypairs { access_key secret_key } }")
    assert {k["access_key"] for k in body["data"]["keypairs"]} == {main.access_key, new.access_key}
    # deactivate / activate as the CLI sends them (the other fields null)
    await done(w, w.admin, MODIFY_KEYPAIR, {"access_key": new.access_key, "input": toggle(False)}, "modify_keypair")
    assert (await whoami(w, new))[0] == 401
    await done(w, w.dadmin.creds, MODIFY_KEYPAIR, {"access_key": new.access_key, "input": toggle(True)},
               "modify_keypair")
    assert (await whoami(w, new))[0] == 200
    async with w.db.engine.begin() as conn:
        await conn.execute(sa.insert(t.keypair_resource_policies).values(name="kp-small", max_concurrent_sessions=1))
    await done(w, w.dadmin.creds, MODIFY_KEYPAIR, {"access_key": new.access_key, "input": {
        "rate_limit": 7, "resource_policy": "kp-small"}}, "modify_keypair")
    kp = (await keypairs_of(w, "kp@example.com"))[1]
    assert kp.rate_limit == 7 and kp.resource_policy == "kp-small" and kp.is_active and kp.modified_at > kp.created_at
    # ok=false and bad input
    for query, variables, field, msg in (
        (MODIFY_KEYPAIR, {"access_key": new.access_key, "input": {"resource_policy": "nope"}}, "modify_keypair",
         "no such keypair resource policy: nope"),
        (MODIFY_KEYPAIR, {"access_key": "AKIANOSUCHKEY0000000", "input": toggle(True)}, "modify_keypair",
         "no such keypair: AKIANOSUCHKEY0000000"),
        (MODIFY_KEYPAIR, {"access_key": new.access_key, "input": {"is_active": None, "rate_limit": None}}, "modify_keypair",
         "nothing to update"),
        (CREATE_KEYPAIR, {"user_id": "ghost@example.com", "input": {"resource_policy": "default", "rate_limit": 1}},
         "create_keypair", "User not found: ghost@example.com"),
        (CREATE_KEYPAIR, {"user_id": "kp@example.com", "input": {"resource_policy": "nope", "rate_limit": 1}},
         "create_keypair", "no such keypair resource policy: nope"),
        (DELETE_KEYPAIR, {"access_key": main.access_key}, "delete_keypair",
         f"{main.access_key} is the main access key of kp@example.com; make another keypair the main one first "
         "(modify_user main_access_key)"),
        (DELETE_KEYPAIR, {"access_key": "AKIANOSUCHKEY0000000"}, "delete_keypair",
         "no such keypair: AKIANOSUCHKEY0000000"),
    ):
        body = await unchanged_after(w, w.admin, query, variables, field)
        assert body["data"][field]["ok"] is False and body["data"][field]["msg"] == msg, body
    body = await unchanged_after(w, w.admin, MODIFY_KEYPAIR, {"access_key": new.access_key, "input": {
        "rate_limit": -1}}, "modify_keypair")  # negative would mean unlimited
    assert "rate_limit must be a non-negative integer" in refused(body, "modify_keypair")
    # a live session keeps its keypair; a finished one lets it go (and no longer names it)
    owner = await owner_of(w, "kp@example.com", new, w.default_group)
    sid = await add_session(w, owner, "RUNNING")
    body = await unchanged_after(w, w.admin, DELETE_KEYPAIR, {"access_key": new.access_key}, "delete_keypair")
    assert "not terminated" in body["data"]["delete_keypair"]["msg"]
    await set_session_status(w, sid, "TERMINATED")
    await done(w, w.dadmin.creds, DELETE_KEYPAIR, {"access_key": new.access_key}, "delete_keypair")
    assert [k.access_key for k in await keypairs_of(w, "kp@example.com")] == [main.access_key]
    assert (await whoami(w, new))[0] == 401
    async with w.db.engine.connect() as conn:
        assert await conn.scalar(sa.select(t.sessions.c.access_key).where(t.sessions.c.id == sid)) is None
    # the main key can be switched, after which the old main key may go
    payload = await done(w, w.admin, CREATE_KEYPAIR, {"user_id": "kp@example.com", "input": {
        "resource_policy": "default", "rate_limit": 100}}, "create_keypair")
    second = payload["keypair"]["access_key"]
    await done(w, w.admin, MODIFY_USER, {"email": "kp@example.com", "input": {"main_access_key": second}},
               "modify_user")
    await done(w, w.admin, DELETE_KEYPAIR, {"access_key": main.access_key}, "delete_keypair")
    assert [k.access_key for k in await keypairs_of(w, "kp@example.com")] == [second]


# ------------------------------------------------------------------ domains

async def test_domains(world: World) -> None:
    w = world
    payload = await done(w, w.admin, CREATE_DOMAIN, {"name": "lab", "input": {
        "description": "The lab", "is_active": True, "total_resource_slots": '{"cpu": 8, "mem": "16g"}',
        "allowed_docker_registries": ["cr.example.com"], "integration_id": "ext-1"}}, "create_domain")
    assert payload["domain"] == {"name": "lab", "description": "The lab", "is_active": True,
                                 "total_resource_slots": '{"cpu": "8", "mem": "17179869184"}',
                                 "allowed_docker_registries": ["cr.example.com"], "integration_id": "ext-1"}
    body = await unchanged_after(w, w.admin, CREATE_DOMAIN, {"name": "lab", "input": {}}, "create_domain")
    assert body["data"]["create_domain"] == {"ok": False, "msg": "domain already exists: lab", "domain": None}
    for name, props, words in (("bad name", {}, "invalid domain name"),
                               ("x", {"total_resource_slots": '{"cpu": -1}'}, "non-negative"),
                               ("x", {"total_resource_slots": '["cpu"]'}, "must be a JSON object"),
                               ("x", {"total_resource_slots": '{"mem": "lots"}'}, "invalid amount"),
                               ("x", {"description": "d" * 513}, "longer than 512")):
        body = await unchanged_after(w, w.admin, CREATE_DOMAIN, {"name": name, "input": props}, "create_domain")
        assert words in refused(body, "create_domain"), (props, body)
    # a project and a user in it, then a rename carries them along
    group = await done(w, w.admin, CREATE_GROUP, {"name": "team", "input": cli_group_input("lab")}, "create_group")
    await done(w, w.admin, CREATE_USER, {"email": "labber@example.com", "input": cli_user_input(
        "lab", "pw", group_ids=[group["group"]["id"]])}, "create_user")
    await done(w, w.admin, MODIFY_DOMAIN, {"name": "lab", "input": {"name": "lab2", "description": "Renamed"}},
               "modify_domain")
    body = await call(w, w.admin, '{ domain(name: "lab2") { name description is_active modified_at } }')
    assert body["data"]["domain"]["description"] == "Renamed" and body["data"]["domain"]["modified_at"]
    assert (await user_row(w, "labber@example.com")).domain_name == "lab2"
    body = await call(w, w.admin, '{ groups(domain_name: "lab2") { name } }')
    assert body["data"]["groups"] == [{"name": "team"}]
    assert (await call(w, w.admin, '{ domain(name: "lab") { name } }'))["data"]["domain"] is None
    for variables, msg in (({"name": "nowhere", "input": {"description": "x"}}, "no such domain: nowhere"),
                           ({"name": "lab2", "input": {"name": "other"}}, "domain already exists: other"),
                           ({"name": "lab2", "input": {"description": None}}, "nothing to update")):
        body = await unchanged_after(w, w.admin, MODIFY_DOMAIN, variables, "modify_domain")
        assert body["data"]["modify_domain"] == {"ok": False, "msg": msg}
    # soft delete, then purge once nothing belongs to it any more
    await done(w, w.admin, DELETE_DOMAIN, {"name": "lab2"}, "delete_domain")
    body = await call(w, w.admin, '{ domain(name: "lab2") { is_active } }')
    assert body["data"]["domain"]["is_active"] is False
    body = await unchanged_after(w, w.admin, PURGE_DOMAIN, {"name": "lab2"}, "purge_domain")
    assert body["data"]["purge_domain"] == {
        "ok": False, "msg": "the domain still has 1 users, 1 projects; purge them first"}
    await done(w, w.admin, PURGE_USER, {"email": "labber@example.com", "input": {}}, "purge_user")
    await done(w, w.admin, PURGE_GROUP, {"gid": group["group"]["id"]}, "purge_group")
    await done(w, w.admin, PURGE_DOMAIN, {"name": "lab2"}, "purge_domain")
    assert (await call(w, w.admin, '{ domain(name: "lab2") { name } }'))["data"]["domain"] is None
    body = await unchanged_after(w, w.admin, DELETE_DOMAIN, {"name": "lab2"}, "delete_domain")
    assert body["data"]["delete_domain"] == {"ok": False, "msg": "no such domain: lab2"}


# ------------------------------------------------------------------ projects

async def test_groups_and_membership(world: World) -> None:
    w = world
    payload = await done(w, w.dadmin.creds, CREATE_GROUP, {"name": "research", "input": cli_group_input(
        "default", description="R&D", total_resource_slots='{"cpu": "2"}')}, "create_group")
    gid = payload["group"]["id"]
    assert payload["group"]["domain_name"] == "default" and payload["group"]["name"] == "research"
    body = await unchanged_after(w, w.admin, CREATE_GROUP, {"name": "research", "input": cli_group_input("default")},
                                 "create_group")
    assert body["data"]["create_group"]["msg"] == "a project named 'research' already exists in domain 'default'"
    body = await unchanged_after(w, w.admin, CREATE_GROUP, {"name": "x", "input": cli_group_input("nowhere")},
                                 "create_group")
    assert body["data"]["create_group"]["msg"] == "no such domain: nowhere"
    body = await unchanged_after(w, w.admin, CREATE_GROUP, {"name": "x", "input": cli_group_input(
        "default", type="MODEL_STORE")}, "create_group")
    assert "only GENERAL" in refused(body, "create_group")
    # `admin group add-users` / `remove-users`
    add = {"gid": gid, "input": {"user_update_mode": "add", "user_uuids": [str(w.user1.uuid), str(w.dadmin.uuid)]}}
    await done(w, w.dadmin.creds, MODIFY_GROUP, add, "modify_group")
    await done(w, w.dadmin.creds, MODIFY_GROUP, add, "modify_group")  # adding members again changes nothing
    body = await call(w, w.user1.creds, '{ groups { name } }')
    assert sorted(g["name"] for g in body["data"]["groups"]) == ["default", "research"]
    await done(w, w.dadmin.creds, MODIFY_GROUP, {"gid": gid, "input": {
        "user_update_mode": "remove", "user_uuids": [str(w.user1.uuid)]}}, "modify_group")
    body = await call(w, w.user1.creds, '{ groups { name } }')
    assert [g["name"] for g in body["data"]["groups"]] == ["default"]
    for props, msg in (
        ({"user_update_mode": "add", "user_uuids": [str(w.other_user.uuid)]},
         "users of another domain cannot join a project of 'default': peer@other.example.com"),
        ({"user_update_mode": "add", "user_uuids": [str(uuid.UUID(int=7))]}, f"no such user: {uuid.UUID(int=7)}"),
        ({"name": "default"}, "a project named 'default' already exists in domain 'default'"),
        ({"user_update_mode": "add", "user_uuids": []}, "nothing to update"),
    ):
        body = await unchanged_after(w, w.admin, MODIFY_GROUP, {"gid": gid, "input": props}, "modify_group")
        assert body["data"]["modify_group"] == {"ok": False, "msg": msg}, (props, body)
    body = await unchanged_after(w, w.admin, MODIFY_GROUP, {"gid": gid, "input": {
        "user_update_mode": "replace", "user_uuids": [str(w.user1.uuid)]}}, "modify_group")
    assert "invalid user_update_mode" in refused(body, "modify_group")
    body = await unchanged_after(w, w.admin, MODIFY_GROUP, {"gid": str(uuid.UUID(int=9)), "input": {
        "description": "x"}}, "modify_group")
    assert body["data"]["modify_group"]["msg"] == f"no such project: {uuid.UUID(int=9)}"
    await done(w, w.admin, MODIFY_GROUP, {"gid": gid, "input": {"name": "research-2", "description": "Renamed",
                                                                "integration_id": "x-7"}}, "modify_group")
    body = await call(w, w.admin, "query($gid: UUID!) { group(id: $gid) { name description integration_id "
                                  "is_active total_resource_slots } }", {"gid": gid})
    assert body["data"]["group"] == {"name": "research-2", "description": "Renamed", "integration_id": "x-7",
                                     "is_active": True, "total_resource_slots": '{"cpu": "2"}'}
    # soft delete; purge is refused while a session of it is live
    await done(w, w.dadmin.creds, DELETE_GROUP, {"gid": gid}, "delete_group")
    body = await call(w, w.admin, "query($gid: UUID!) { group(id: $gid) { is_active integration_id } }",
                      {"gid": gid})
    assert body["data"]["group"] == {"is_active": False, "integration_id": None}
    owner = Owner(w.dadmin.creds, w.dadmin.uuid, "default", uuid.UUID(gid))
    sid = await add_session(w, owner, "RUNNING")
    body = await unchanged_after(w, w.dadmin.creds, PURGE_GROUP, {"gid": gid}, "purge_group")
    assert body["data"]["purge_group"]["ok"] is False and "not terminated" in body["data"]["purge_group"]["msg"]
    await set_session_status(w, sid, "TERMINATED")
    await done(w, w.dadmin.creds, PURGE_GROUP, {"gid": gid}, "purge_group")
    body = await call(w, w.admin, "query($gid: UUID!) { group(id: $gid) { name } }", {"gid": gid})
    assert body["data"]["group"] is None


# ------------------------------------------------------------------ escalations

def _escalations(w: World) -> list[tuple[str, Creds, str, dict[str, Any], str]]:
    """(what, who, document, variables, field): writes that must be refused."""
    new_user = {"email": "esc@example.com"}
    return [
        ("a user creates a superadmin", w.user1.creds, CREATE_USER,
         {**new_user, "input": cli_user_input("default", "pw", role="superadmin")}, "create_user"),
        ("a user creates a user", w.user1.creds, CREATE_USER, {**new_user, "input": cli_user_input("default", "pw")},
         "create_user"),
        ("a monitor creates a user", w.monitor.creds, CREATE_USER,
         {**new_user, "input": cli_user_input("default", "pw")}, "create_user"),
        ("a domain admin creates a superadmin", w.dadmin.creds, CREATE_USER,
         {**new_user, "input": cli_user_input("default", "pw", role="superadmin")}, "create_user"),
        ("a domain admin creates a monitor", w.dadmin.creds, CREATE_USER,
         {**new_user, "input": cli_user_input("default", "pw", role="monitor")}, "create_user"),
        ("a domain admin creates a user in another domain", w.dadmin.creds, CREATE_USER,
         {**new_user, "input": cli_user_input("other", "pw")}, "create_user"),
        ("a user changes their own role", w.user1.creds, MODIFY_USER,
         {"email": "user1@example.com", "input": {"role": "admin"}}, "modify_user"),
        ("a user changes their own name through modify_user", w.user1.creds, MODIFY_USER,
         {"email": "user1@example.com", "input": {"full_name": "Me"}}, "modify_user"),
        ("a monitor changes a user", w.monitor.creds, MODIFY_USER,
         {"email": "user1@example.com", "input": {"full_name": "Me"}}, "modify_user"),
        ("a domain admin promotes themself", w.dadmin.creds, MODIFY_USER,
         {"email": "dadmin@example.com", "input": {"role": "superadmin"}}, "modify_user"),
        ("a domain admin demotes themself", w.dadmin.creds, MODIFY_USER,
         {"email": "dadmin@example.com", "input": {"role": "user"}}, "modify_user"),
        ("a domain admin changes their own policy", w.dadmin.creds, MODIFY_USER,
         {"email": "dadmin@example.com", "input": {"resource_policy": "default"}}, "modify_user"),
        ("a domain admin resets a superadmin's password", w.dadmin.creds, MODIFY_USER,
         {"email": fixtures.ADMIN_EMAIL, "input": {"password": "mine-now"}}, "modify_user"),
        ("a domain admin resets a monitor's password", w.dadmin.creds, MODIFY_USER,
         {"email": "eye@example.com", "input": {"password": "mine-now"}}, "modify_user"),
        ("a domain admin changes another domain's user", w.dadmin.creds, MODIFY_USER,
         {"email": "peer@other.example.com", "input": {"full_name": "x"}}, "modify_user"),
        ("a domain admin moves a user to another domain", w.dadmin.creds, MODIFY_USER,
         {"email": "user1@example.com", "input": {"domain_name": "other"}}, "modify_user"),
        ("a domain admin makes a user a monitor", w.dadmin.creds, MODIFY_USER,
         {"email": "user1@example.com", "input": {"role": "monitor"}}, "modify_user"),
        ("a superadmin demotes themself", w.admin, MODIFY_USER,
         {"email": fixtures.ADMIN_EMAIL, "input": {"role": "user"}}, "modify_user"),
        ("a superadmin deactivates themself", w.admin, MODIFY_USER,
         {"email": fixtures.ADMIN_EMAIL, "input": {"is_active": False}}, "modify_user"),
        ("a domain admin deletes themself", w.dadmin.creds, DELETE_USER, {"email": "dadmin@example.com"},
         "delete_user"),
        ("a domain admin deletes a superadmin", w.dadmin.creds, DELETE_USER, {"email": fixtures.ADMIN_EMAIL},
         "delete_user"),
        ("a domain admin purges another domain's user", w.dadmin.creds, PURGE_USER,
         {"email": "peer@other.example.com", "input": {}}, "purge_user"),
        ("a user deletes a user", w.user1.creds, DELETE_USER, {"email": "eye@example.com"}, "delete_user"),
        ("a user issues themself a keypair", w.user1.creds, CREATE_KEYPAIR,
         {"user_id": "user1@example.com", "input": {"resource_policy": "default", "rate_limit": 1}}, "create_keypair"),
        ("a domain admin issues themself a keypair", w.dadmin.creds, CREATE_KEYPAIR,
         {"user_id": "dadmin@example.com", "input": {"resource_policy": "default", "rate_limit": 1}},
         "create_keypair"),
        ("a domain admin issues a superadmin a keypair", w.dadmin.creds, CREATE_KEYPAIR,
         {"user_id": fixtures.ADMIN_EMAIL, "input": {"resource_policy": "default", "rate_limit": 1}},
         "create_keypair"),
        ("a domain admin gives a user an admin keypair", w.dadmin.creds, CREATE_KEYPAIR,
         {"user_id": "user1@example.com", "input": {"is_admin": True, "resource_policy": "default",
                                                    "rate_limit": 1}}, "create_keypair"),
        ("a domain admin issues a keypair in another domain", w.dadmin.creds, CREATE_KEYPAIR,
         {"user_id": "peer@other.example.com", "input": {"resource_policy": "default", "rate_limit": 1}},
         "create_keypair"),
        ("a domain admin changes their own keypair's limit", w.dadmin.creds, MODIFY_KEYPAIR,
         {"access_key": w.dadmin.creds.access_key, "input": {"rate_limit": 1000000}}, "modify_keypair"),
        ("a domain admin makes a user's keypair an admin one", w.dadmin.creds, MODIFY_KEYPAIR,
         {"access_key": w.user1.creds.access_key, "input": {"is_admin": True}}, "modify_keypair"),
        ("a domain admin deactivates a superadmin's keypair", w.dadmin.creds, MODIFY_KEYPAIR,
         {"access_key": w.admin.access_key, "input": toggle(False)}, "modify_keypair"),
        ("a domain admin deactivates another domain's keypair", w.dadmin.creds, MODIFY_KEYPAIR,
         {"access_key": w.other_user.creds.access_key, "input": toggle(False)}, "modify_keypair"),
        ("a monitor deactivates a keypair", w.monitor.creds, MODIFY_KEYPAIR,
         {"access_key": w.user1.creds.access_key, "input": toggle(False)}, "modify_keypair"),
        ("a user deletes a keypair", w.user1.creds, DELETE_KEYPAIR, {"access_key": w.dadmin.creds.access_key},
         "delete_keypair"),
        ("a domain admin deletes another domain's keypair", w.dadmin.creds, DELETE_KEYPAIR,
         {"access_key": w.other_admin.creds.access_key}, "delete_keypair"),
        ("a domain admin creates a domain", w.dadmin.creds, CREATE_DOMAIN, {"name": "mine", "input": {}},
         "create_domain"),
        ("a monitor creates a domain", w.monitor.creds, CREATE_DOMAIN, {"name": "mine", "input": {}},
         "create_domain"),
        ("a domain admin modifies their domain", w.dadmin.creds, MODIFY_DOMAIN,
         {"name": "default", "input": {"total_resource_slots": '{"cpu": 1000}'}}, "modify_domain"),
        ("a domain admin deletes a domain", w.other_admin.creds, DELETE_DOMAIN, {"name": "default"}, "delete_domain"),
        ("a user purges a domain", w.user1.creds, PURGE_DOMAIN, {"name": "other"}, "purge_domain"),
        ("a user creates a project", w.user1.creds, CREATE_GROUP, {"name": "p", "input": cli_group_input("default")},
         "create_group"),
        ("a monitor creates a project", w.monitor.creds, CREATE_GROUP,
         {"name": "p", "input": cli_group_input("default")}, "create_group"),
        ("a domain admin creates a project in another domain", w.dadmin.creds, CREATE_GROUP,
         {"name": "p", "input": cli_group_input("other")}, "create_group"),
        ("a domain admin joins another domain's project", w.dadmin.creds, MODIFY_GROUP,
         {"gid": str(w.other_group), "input": {"user_update_mode": "add", "user_uuids": [str(w.dadmin.uuid)]}},
         "modify_group"),
        ("a domain admin moves a project to another domain", w.dadmin.creds, MODIFY_GROUP,
         {"gid": str(w.default_group), "input": {"domain_name": "other"}}, "modify_group"),
        ("a user adds themself to a project", w.user1.creds, MODIFY_GROUP,
         {"gid": str(w.other_group), "input": {"user_update_mode": "add", "user_uuids": [str(w.user1.uuid)]}},
         "modify_group"),
        ("a domain admin deletes another domain's project", w.dadmin.creds, DELETE_GROUP,
         {"gid": str(w.other_group)}, "delete_group"),
        ("a monitor purges a project", w.monitor.creds, PURGE_GROUP, {"gid": str(w.other_group)}, "purge_group"),
    ]


async def test_every_escalation_is_refused_and_changes_nothing(world: World) -> None:
    for what, creds, query, variables, field in _escalations(world):
        body = await unchanged_after(world, creds, query, variables, field)
        message = refused(body, field)
        assert message in ("Forbidden operation.", "Insufficient privilege.") or any(
            words in message for words in ("privilege", "cannot", "nobody", "only", "own")), (what, message)
    # and the accounts they aimed at still work as before
    for creds in (world.admin, world.dadmin.creds, world.user1.creds, world.monitor.creds):
        assert (await whoami(world, creds))[0] == 200


async def test_secrets_of_issued_keys(world: World) -> None:
    """The issuer sees the new secret once, in the payload; later reads hide it from a domain
    admin (it is the user's), while its owner and superadmins read it."""
    w = world
    payload = await done(w, w.dadmin.creds, CREATE_KEYPAIR, {"user_id": "user1@example.com", "input": {
        "resource_policy": "default", "rate_limit": 100}}, "create_keypair")
    ak, sk = payload["keypair"]["access_key"], payload["keypair"]["secret_key"]
    assert sk and len(sk) == 40
    q = "query($ak: String) { keypair(access_key: $ak) { access_key secret_key } }"
    assert (await call(w, w.dadmin.creds, q, {"ak": ak}))["data"]["keypair"] == {"access_key": ak, "secret_key": None}
    assert (await call(w, w.admin, q, {"ak": ak}))["data"]["keypair"]["secret_key"] == sk
    assert (await call(w, Creds(ak, sk), q, {"ak": ak}))["data"]["keypair"]["secret_key"] == sk
    body = await call(w, w.monitor.creds, q, {"ak": ak})
    assert body["data"]["keypair"] is None or body["data"]["keypair"]["secret_key"] is None
