"""The GraphQL admin API's account and policy reads (users, keypairs, domains, projects, keypair
resource policies, scaling groups) against a real database, with the query strings the official
client 24.3.11 sends for `backend.ai admin ... list/info`, and the scoping of every role."""

from __future__ import annotations

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

# --- the official client's queries (func/*.py + cli/admin/*.py of backend.ai-client 24.3.11) ---
USER_FIELDS = ("uuid username role email full_name need_password_change status status_info created_at "
               "domain_name groups { id name } allowed_client_ip sudo_session_enabled main_access_key")
USER_INFO_Q = "query($email: String) {\n    user(email: $email) {" + USER_FIELDS + "}\n}\n"
USER_LIST_Q = (
    "query($limit:Int!, $offset:Int!, $status: String, $group_id: UUID, $filter: String, $order: String) {\n"
    "  user_list(\n      limit:$limit, offset:$offset, status:$status, group_id:$group_id, filter:$filter, "
    "order:$order) {\n    items { " + USER_FIELDS + " }\n    total_count\n  }\n}"
)
KEYPAIR_FIELDS = ("user_id projects user_info { full_name } access_key secret_key is_active is_admin created_at "
                  "last_used resource_policy rate_limit concurrency_used")
KEYPAIR_LIST_Q = (
    "query($limit:Int!, $offset:Int!, $is_active: Boolean, $domain_name: String, $filter: String, "
    "$order: String) {\n  keypair_list(\n      limit:$limit, offset:$offset, is_active:$is_active, "
    "domain_name:$domain_name, filter:$filter, order:$order) {\n    items { " + KEYPAIR_FIELDS + " }\n"
    "    total_count\n  }\n}"
)
KEYPAIRS_Q = "query($email: String, $is_active: Boolean) {  keypairs(email: $email, is_active: $is_active) {    " \
             "user_id access_key secret_key is_active is_admin created_at  }}"
POLICY_FIELDS = ("name created_at total_resource_slots max_concurrent_sessions idle_timeout "
                 "max_containers_per_session allowed_vfolder_hosts max_session_lifetime max_pending_session_count "
                 "max_pending_session_resource_slots max_concurrent_sftp_sessions")
POLICIES_Q = "query {  keypair_resource_policies {    " + POLICY_FIELDS + "  }}"
POLICY_INFO_Q = "query($name: String) {  keypair_resource_policy(name: $name) {    " + POLICY_FIELDS + "  }}"
DOMAIN_FIELDS = ("name description is_active created_at total_resource_slots allowed_vfolder_hosts "
                 "allowed_docker_registries integration_id")
DOMAINS_Q = "query {\n    domains {" + DOMAIN_FIELDS + "}\n}\n"
DOMAIN_Q = "query($name: String) {\n    domain(name: $name) {" + DOMAIN_FIELDS + "}\n}\n"
GROUPS_Q = "query($domain_name: String) {\n    groups(domain_name: $domain_name) {id name is_active created_at " \
           "integration_id}\n}\n"
GROUP_FIELDS = ("id name description is_active created_at domain_name total_resource_slots allowed_vfolder_hosts "
                "integration_id")
GROUP_Q = "query($gid: UUID!) {\n    group(id: $gid) {" + GROUP_FIELDS + "}\n}\n"
GROUPS_BY_NAME_Q = ("query($name: String!, $domain_name: String) {\n    groups_by_name(name: $name, "
                    "domain_name: $domain_name) {" + GROUP_FIELDS + "}\n}\n")
SGROUP_FIELDS = "name description is_active is_public created_at driver scheduler use_host_network wsproxy_addr " \
                "wsproxy_api_token"
SGROUPS_Q = "query($is_active: Boolean) {\n    scaling_groups(is_active: $is_active) {\n        " + SGROUP_FIELDS + \
            "\n    }\n}\n"
SGROUP_Q = "query($name: String) {\n    scaling_group(name: $name) {" + SGROUP_FIELDS + " driver_opts scheduler_opts}\n}\n"


def page_vars(**over: Any) -> dict[str, Any]:
    return {"filter": None, "order": None, "limit": 20, "offset": 0, **over}


@dataclass
class World:
    admin: Creds
    default_group: uuid.UUID
    other_group: uuid.UUID
    lab_group: uuid.UUID  # a second project of "default"; only user2 belongs to it
    user1: Owner
    user2: Owner
    other_admin: Owner
    other_user: Owner
    monitor: Owner
    user1_second_key: Creds
    client: ApiClient


@pytest.fixture(scope="module")
async def world(manager_db: ManagerDB, make_client: Any) -> World:
    async with manager_db.engine.begin() as conn:
        default_group = await conn.scalar(sa.select(t.groups.c.id).where(t.groups.c.domain_name == "default"))
        other_group, lab_group = uuid.uuid4(), uuid.uuid4()
        await conn.execute(sa.insert(t.domains).values(name="other", description="The other domain"))
        await conn.execute(sa.insert(t.groups).values(id=other_group, name="default", domain_name="other"))
        await conn.execute(sa.insert(t.groups).values(id=lab_group, name="lab", domain_name="default"))
        await conn.execute(sa.insert(t.keypair_resource_policies).values(
            name="small", max_concurrent_sessions=2, total_resource_slots={"cpu": "2"}))
        await conn.execute(sa.insert(t.keypair_resource_policies).values(name="unused"))
        await conn.execute(sa.insert(t.scaling_groups).values(name="gpu", is_public=False, description="GPUs"))
        await conn.execute(sa.insert(t.resource_presets).values([
            {"name": "cpu01-small", "resource_slots": {"cpu": "1", "mem": "1073741824"}, "shared_memory": None},
            {"name": "cpu02-medium", "resource_slots": {"cpu": "4", "mem": "8589934592"}, "shared_memory": 2**30},
        ]))
        user1 = await _add_user(conn, "user1@example.com", "default", "user", default_group)
        user2 = await _add_user(conn, "user2@example.com", "default", "user", default_group)
        await conn.execute(sa.insert(t.association_groups_users).values(user_id=user2.uuid, group_id=lab_group))
        other_admin = await _add_user(conn, "boss@other.example.com", "other", "admin", other_group)
        other_user = await _add_user(conn, "peer@other.example.com", "other", "user", other_group)
        monitor = await _add_user(conn, "eye@example.com", "default", "monitor", default_group)
        await conn.execute(t.keypairs.update().where(t.keypairs.c.access_key == other_user.creds.access_key)
                           .values(resource_policy="small"))
        ak, sk = fixtures.generate_keypair()
        await conn.execute(sa.insert(t.keypairs).values(
            access_key=ak, secret_key=sk, user_id="user1@example.com", user=user1.uuid, is_active=False,
            rate_limit=500, resource_policy="default"))
    client = await make_client(gql.routes)
    return World(manager_db.admin, default_group, other_group, lab_group, user1, user2, other_admin, other_user,
                 monitor, Creds(ak, sk), client)


async def call(w: World, creds: Creds, query: str, variables: dict[str, Any] | None = None) -> Any:
    reply = await w.client.post("/admin/gql", {"query": query, "variables": variables or {}}, creds)
    assert reply.status == 200, reply.body
    return reply.body


def refused(body: Any, field: str) -> str:
    """The privilege failure's shape: null data for the field and one error naming it."""
    assert body["data"] == {field: None}, body
    assert body["errors"][0]["path"] == [field]
    message: str = body["errors"][0]["message"]
    return message


# ------------------------------------------------------------------ users

async def test_user_list_as_the_cli_asks(world: World) -> None:
    body = await call(world, world.admin, USER_LIST_Q, page_vars(status=None, group_id=None))
    assert set(body) == {"data"}
    page = body["data"]["user_list"]
    assert page["total_count"] == 6
    emails = [u["email"] for u in page["items"]]
    assert emails[0] == fixtures.ADMIN_EMAIL and set(emails) == {
        fixtures.ADMIN_EMAIL, "user1@example.com", "user2@example.com", "boss@other.example.com",
        "peer@other.example.com", "eye@example.com"}
    u2 = next(u for u in page["items"] if u["email"] == "user2@example.com")
    assert list(u2) == USER_FIELDS.replace(" { id name }", "").split()
    assert u2["uuid"] == str(world.user2.uuid) and u2["role"] == "user" and u2["status"] == "active"
    assert u2["username"] == "user2" and u2["full_name"] == "User2" and u2["domain_name"] == "default"
    assert sorted(g["name"] for g in u2["groups"]) == ["default", "lab"]
    assert {g["id"] for g in u2["groups"]} == {str(world.default_group), str(world.lab_group)}
    assert u2["main_access_key"] == world.user2.creds.access_key
    assert u2["sudo_session_enabled"] is False and u2["allowed_client_ip"] is None
    body = await call(world, world.admin, "{ user { password } }")  # hashes never leave the store
    assert body["data"] is None and "password" in body["errors"][0]["message"]


async def test_user_list_filter_order_paging_and_group(world: World) -> None:
    body = await call(world, world.admin, USER_LIST_Q, page_vars(
        status=None, group_id=None, filter='email ilike "%example.com" & role != "monitor"', order="-email",
        limit=2, offset=1))
    page = body["data"]["user_list"]
    assert page["total_count"] == 4
    assert [u["email"] for u in page["items"]] == ["user1@example.com", "peer@other.example.com"]
    body = await call(world, world.admin, USER_LIST_Q, page_vars(status="active", group_id=str(world.lab_group)))
    assert [u["email"] for u in body["data"]["user_list"]["items"]] == ["user2@example.com"]
    body = await call(world, world.admin, USER_LIST_Q, page_vars(status="deleted", group_id=None))
    assert body["data"]["user_list"] == {"items": [], "total_count": 0}
    for bad in ({"filter": 'password == "x"'}, {"order": "secret"}, {"status": "zombie"}, {"limit": 101}):
        body = await call(world, world.admin, USER_LIST_Q, page_vars(**{"status": None, "group_id": None, **bad}))
        assert body["data"] == {"user_list": None} and body["errors"], bad


async def test_user_list_scoping(world: World) -> None:
    body = await call(world, world.other_admin.creds, USER_LIST_Q, page_vars(status=None, group_id=None))
    assert {u["email"] for u in body["data"]["user_list"]["items"]} == {"boss@other.example.com",
                                                                       "peer@other.example.com"}
    body = await call(world, world.other_admin.creds, "{ users(domain_name: \"default\") { email } }")
    assert refused(body, "users") == "Insufficient privilege."
    body = await call(world, world.monitor.creds, USER_LIST_Q, page_vars(status=None, group_id=None))
    assert body["data"]["user_list"]["total_count"] == 6
    for creds in (world.user1.creds, world.other_user.creds):
        body = await call(world, creds, USER_LIST_Q, page_vars(status=None, group_id=None))
        assert "admin privilege required" in refused(body, "user_list")
        body = await call(world, creds, "{ users { email } }")
        refused(body, "users")


async def test_user_info_as_the_cli_asks_and_scoping(world: World) -> None:
    body = await call(world, world.admin, USER_INFO_Q, {"email": "peer@other.example.com"})
    assert body["data"]["user"]["uuid"] == str(world.other_user.uuid)
    assert body["data"]["user"]["groups"] == [{"id": str(world.other_group), "name": "default"}]
    # a user reads itself (with or without naming itself), never another user
    for variables in ({"email": None}, {"email": "user1@example.com"}):
        body = await call(world, world.user1.creds, USER_INFO_Q, variables)
        assert body["data"]["user"]["email"] == "user1@example.com"
    body = await call(world, world.user1.creds, USER_INFO_Q, {"email": "user2@example.com"})
    assert refused(body, "user") == "Forbidden operation."
    # a domain admin reads its domain's users only
    body = await call(world, world.other_admin.creds, USER_INFO_Q, {"email": "peer@other.example.com"})
    assert body["data"]["user"]["email"] == "peer@other.example.com"
    body = await call(world, world.other_admin.creds, USER_INFO_Q, {"email": "user1@example.com"})
    assert body == {"data": {"user": None}}
    # user_from_uuid
    q = "query($u: ID) { user_from_uuid(user_id: $u) { email role } }"
    body = await call(world, world.admin, q, {"u": str(world.user2.uuid)})
    assert body["data"]["user_from_uuid"] == {"email": "user2@example.com", "role": "user"}
    body = await call(world, world.user2.creds, q, {"u": None})
    assert body["data"]["user_from_uuid"]["email"] == "user2@example.com"
    body = await call(world, world.user2.creds, q, {"u": str(world.user1.uuid)})
    refused(body, "user_from_uuid")
    body = await call(world, world.admin, q, {"u": "not-a-uuid"})
    refused(body, "user_from_uuid")


# ------------------------------------------------------------------ keypairs

async def test_keypair_list_as_the_cli_asks(world: World) -> None:
    body = await call(world, world.admin, KEYPAIR_LIST_Q, page_vars(is_active=None, domain_name=None))
    assert set(body) == {"data"}
    page = body["data"]["keypair_list"]
    assert page["total_count"] == 7
    by_key = {k["access_key"]: k for k in page["items"]}
    u1 = by_key[world.user1.creds.access_key]
    assert list(u1) == KEYPAIR_FIELDS.replace(" { full_name }", "").split()
    assert u1["user_id"] == "user1@example.com" and u1["projects"] == ["default"]
    assert u1["user_info"] == {"full_name": "User1"} and u1["secret_key"] == world.user1.creds.secret_key
    assert u1["is_active"] is True and u1["is_admin"] is False and u1["rate_limit"] == 10000
    assert u1["concurrency_used"] == 0 and u1["resource_policy"] == "default"
    assert by_key[world.user1_second_key.access_key]["is_active"] is False
    # is_active, filter, order and paging
    body = await call(world, world.admin, KEYPAIR_LIST_Q, page_vars(
        is_active=True, domain_name="default", filter='user_id contains "user"', order="-user_id"))
    assert [k["user_id"] for k in body["data"]["keypair_list"]["items"]] == ["user2@example.com", "user1@example.com"]
    body = await call(world, world.admin, KEYPAIR_LIST_Q, page_vars(
        is_active=None, domain_name=None, order="+created_at", limit=3, offset=5))
    assert body["data"]["keypair_list"]["total_count"] == 7 and len(body["data"]["keypair_list"]["items"]) == 2


async def test_keypair_list_scoping_and_secret_hiding(world: World) -> None:
    # a user sees its own keys only (both of them), with their secrets
    body = await call(world, world.user1.creds, KEYPAIR_LIST_Q, page_vars(is_active=None, domain_name=None))
    page = body["data"]["keypair_list"]
    assert page["total_count"] == 2
    assert {k["access_key"]: k["secret_key"] for k in page["items"]} == {
        world.user1.creds.access_key: world.user1.creds.secret_key,
        world.user1_second_key.access_key: world.user1_second_key.secret_key}
    body = await call(world, world.user1.creds, KEYPAIR_LIST_Q, page_vars(is_active=None, domain_name="other"))
    refused(body, "keypair_list")
    body = await call(world, world.user1.creds, KEYPAIRS_Q, {"email": "user2@example.com", "is_active": None})
    refused(body, "keypairs")
    # a domain admin sees its domain's keys, others' secrets hidden; a monitor sees all, no secrets
    body = await call(world, world.other_admin.creds, KEYPAIR_LIST_Q, page_vars(is_active=None, domain_name=None))
    secrets = {k["access_key"]: k["secret_key"] for k in body["data"]["keypair_list"]["items"]}
    assert secrets == {world.other_admin.creds.access_key: world.other_admin.creds.secret_key,
                       world.other_user.creds.access_key: None}
    body = await call(world, world.monitor.creds, KEYPAIR_LIST_Q, page_vars(is_active=None, domain_name=None))
    items = body["data"]["keypair_list"]["items"]
    assert len(items) == 7
    assert all(k["secret_key"] is None for k in items if k["access_key"] != world.monitor.creds.access_key)
    # keypairs (the unpaginated form) and a superadmin naming a user
    body = await call(world, world.admin, KEYPAIRS_Q, {"email": "user1@example.com", "is_active": True})
    assert [k["access_key"] for k in body["data"]["keypairs"]] == [world.user1.creds.access_key]
    body = await call(world, world.user2.creds, KEYPAIRS_Q, {"email": None, "is_active": None})
    assert [k["secret_key"] for k in body["data"]["keypairs"]] == [world.user2.creds.secret_key]


# ------------------------------------------------------------------ policies

async def test_keypair_resource_policies(world: World) -> None:
    body = await call(world, world.admin, POLICIES_Q)
    policies = {p["name"]: p for p in body["data"]["keypair_resource_policies"]}
    assert set(policies) == {"default", "signup-default", "small", "unused"}
    small = policies["small"]
    assert list(small) == POLICY_FIELDS.split()
    assert small["max_concurrent_sessions"] == 2 and small["total_resource_slots"] == '{"cpu": "2"}'
    assert small["idle_timeout"] == 3600 and small["max_containers_per_session"] == 1
    body = await call(world, world.admin, POLICY_INFO_Q, {"name": "small"})
    assert body["data"]["keypair_resource_policy"] == small
    # a domain admin sees the policies its domain's keypairs use; a user only its own keypair's
    body = await call(world, world.other_admin.creds, POLICIES_Q)
    assert sorted(p["name"] for p in body["data"]["keypair_resource_policies"]) == ["default", "small"]
    body = await call(world, world.other_user.creds, POLICIES_Q)
    assert [p["name"] for p in body["data"]["keypair_resource_policies"]] == ["small"]
    body = await call(world, world.other_user.creds, POLICY_INFO_Q, {"name": None})
    assert body["data"]["keypair_resource_policy"]["name"] == "small"
    body = await call(world, world.user1.creds, POLICY_INFO_Q, {"name": "small"})
    assert body == {"data": {"keypair_resource_policy": None}}


# ------------------------------------------------------------------ domains, projects, scaling groups

async def test_domains(world: World) -> None:
    body = await call(world, world.admin, DOMAINS_Q)
    domains = body["data"]["domains"]
    assert [d["name"] for d in domains] == ["default", "other"]
    assert list(domains[1]) == DOMAIN_FIELDS.split() and domains[1]["description"] == "The other domain"
    assert domains[1]["is_active"] is True and domains[1]["total_resource_slots"] == "{}"
    body = await call(world, world.admin, "{ domains(is_active: false) { name } }")
    assert body["data"]["domains"] == []
    body = await call(world, world.admin, DOMAIN_Q, {"name": "default"})
    assert body["data"]["domain"]["name"] == "default"
    body = await call(world, world.admin, '{ domain(name: "default") { scaling_groups } }')
    assert body["data"]["domain"]["scaling_groups"] == ["default"]
    for creds in (world.user1.creds, world.other_admin.creds):
        assert "superadmin" in refused(await call(world, creds, DOMAINS_Q), "domains")
    body = await call(world, world.other_admin.creds, DOMAIN_Q, {"name": None})
    assert body["data"]["domain"]["name"] == "other"
    body = await call(world, world.user1.creds, DOMAIN_Q, {"name": "other"})
    assert refused(body, "domain") == "Insufficient privilege."


async def test_groups(world: World) -> None:
    body = await call(world, world.admin, GROUPS_Q, {"domain_name": None})
    assert sorted(g["id"] for g in body["data"]["groups"]) == sorted(
        str(g) for g in (world.default_group, world.lab_group, world.other_group))
    body = await call(world, world.admin, GROUPS_Q, {"domain_name": "default"})
    assert [g["name"] for g in body["data"]["groups"]] == ["default", "lab"]
    # a user sees the projects it belongs to; a domain admin its domain's
    body = await call(world, world.user1.creds, GROUPS_Q, {"domain_name": None})
    assert [g["id"] for g in body["data"]["groups"]] == [str(world.default_group)]
    body = await call(world, world.user2.creds, GROUPS_Q, {"domain_name": None})
    assert [g["name"] for g in body["data"]["groups"]] == ["default", "lab"]
    body = await call(world, world.other_admin.creds, GROUPS_Q, {"domain_name": None})
    assert [g["id"] for g in body["data"]["groups"]] == [str(world.other_group)]
    body = await call(world, world.other_admin.creds, GROUPS_Q, {"domain_name": "default"})
    refused(body, "groups")
    # group(id) and groups_by_name
    body = await call(world, world.admin, GROUP_Q, {"gid": str(world.lab_group)})
    assert body["data"]["group"]["name"] == "lab" and body["data"]["group"]["domain_name"] == "default"
    assert list(body["data"]["group"]) == GROUP_FIELDS.split()
    body = await call(world, world.user1.creds, GROUP_Q, {"gid": str(world.lab_group)})
    assert body == {"data": {"group": None}}
    body = await call(world, world.other_admin.creds, GROUP_Q, {"gid": str(world.default_group)})
    assert body == {"data": {"group": None}}
    body = await call(world, world.admin, GROUPS_BY_NAME_Q, {"name": "default", "domain_name": None})
    assert len(body["data"]["groups_by_name"]) == 2
    body = await call(world, world.user2.creds, GROUPS_BY_NAME_Q, {"name": "lab", "domain_name": None})
    assert [g["id"] for g in body["data"]["groups_by_name"]] == [str(world.lab_group)]


async def test_scaling_groups(world: World) -> None:
    body = await call(world, world.admin, SGROUPS_Q, {"is_active": None})
    sgroups = body["data"]["scaling_groups"]
    assert [s["name"] for s in sgroups] == ["default", "gpu"]
    assert list(sgroups[1]) == SGROUP_FIELDS.split()
    assert sgroups[1]["is_public"] is False and sgroups[1]["driver"] == "static" and sgroups[1]["scheduler"] == "fifo"
    body = await call(world, world.admin, SGROUP_Q, {"name": "gpu"})
    assert body["data"]["scaling_group"]["description"] == "GPUs"
    assert body["data"]["scaling_group"]["scheduler_opts"] == "{}"
    body = await call(world, world.other_admin.creds, '{ scaling_groups_for_domain(domain: "other") { name } }')
    assert body["data"]["scaling_groups_for_domain"] == []
    body = await call(world, world.other_admin.creds, '{ scaling_groups_for_domain(domain: "default") { name } }')
    refused(body, "scaling_groups_for_domain")
    for creds in (world.user1.creds, world.other_admin.creds):
        assert "superadmin" in refused(await call(world, creds, SGROUPS_Q, {"is_active": None}), "scaling_groups")
        refused(await call(world, creds, SGROUP_Q, {"name": "default"}), "scaling_group")


async def test_resource_presets(world: World) -> None:
    q = "{ resource_presets { name resource_slots shared_memory } }"
    expected = [{"name": "cpu01-small", "resource_slots": '{"cpu": "1", "mem": "1073741824"}', "shared_memory": None},
                {"name": "cpu02-medium", "resource_slots": '{"cpu": "4", "mem": "8589934592"}',
                 "shared_memory": 1073741824}]
    for creds in (world.admin, world.user1.creds):  # presets are public, as GET /resource/presets
        assert (await call(world, creds, q))["data"]["resource_presets"] == expected
    body = await call(world, world.user1.creds, '{ resource_preset(name: "cpu02-medium") { name shared_memory } }')
    assert body["data"]["resource_preset"] == {"name": "cpu02-medium", "shared_memory": 1073741824}
    body = await call(world, world.admin, '{ resource_preset(name: "nope") { name } }')
    assert body == {"data": {"resource_preset": None}}
