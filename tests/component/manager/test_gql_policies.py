"""GraphQL writes of resource policies (keypair, user, project), resource presets, scaling groups
(and their associations) and agents, against a real database: each mutation's happy path with the
official client's document where it has one, the in-use refusals, bad input that writes nothing,
and every non-superadmin (domain admin, user, monitor) refused with the database unchanged."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from bai.common.types import SessionStatus
from bai.manager.api import gql
from bai.manager.store import agents as agent_store
from bai.manager.store import tables as t

from .conftest import ApiClient, Creds, ManagerDB
from .test_gql import Owner, _add_session, _add_user

# --- the official client 24.3.11's documents (func/keypair_resource_policy.py, func/scaling_group.py) ---
KP_CREATE_Q = ("mutation($name: String!, $input: CreateKeyPairResourcePolicyInput!) {  "
               "create_keypair_resource_policy(name: $name, props: $input) {    ok msg resource_policy { name }  }}")
KP_MODIFY_Q = ("mutation($name: String!, $input: ModifyKeyPairResourcePolicyInput!) {  "
               "modify_keypair_resource_policy(name: $name, props: $input) {    ok msg  }}")
KP_DELETE_Q = "mutation($name: String!) {  delete_keypair_resource_policy(name: $name) {    ok msg  }}"
SG_CREATE_Q = ("mutation($name: String!, $input: CreateScalingGroupInput!) {\n    create_scaling_group(name: $name, "
               "props: $input) {\n        ok msg scaling_group {name}\n    }\n}\n")
SG_MODIFY_Q = ("mutation($name: String!, $input: ModifyScalingGroupInput!) {\n    modify_scaling_group(name: $name, "
               "props: $input) {\n        ok msg\n    }\n}\n")
SG_DELETE_Q = "mutation($name: String!) {\n    delete_scaling_group(name: $name) {\n        ok msg\n    }\n}\n"
SG_DOMAIN_Q = ("mutation($scaling_group: String!, $domain: String!) {\n    {verb}_scaling_group_with_domain(\n"
               "            scaling_group: $scaling_group, domain: $domain) {\n        ok msg\n    }\n}\n")
SG_GROUP_Q = ("mutation($scaling_group: String!, $user_group: UUID!) {\n    {verb}_scaling_group_with_user_group(\n"
              "            scaling_group: $scaling_group, user_group: $user_group) {\n        ok msg\n    }\n}\n")
SG_KEYPAIR_Q = ("mutation($scaling_group: String!, $access_key: String!) { {verb}_scaling_group_with_keypair("
                "scaling_group: $scaling_group, access_key: $access_key) { ok msg } }")
POLICY_FIELDS = ("name default_for_unspecified total_resource_slots max_session_lifetime max_concurrent_sessions "
                 "max_concurrent_sftp_sessions max_containers_per_session idle_timeout allowed_vfolder_hosts "
                 "max_pending_session_count max_pending_session_resource_slots")
AGENT = "i-policies-agent"


@dataclass
class World:
    db: ManagerDB
    client: ApiClient
    admin: Creds
    group: uuid.UUID
    domain_admin: Owner
    user: Owner
    monitor: Owner


@pytest.fixture(scope="module")
async def world(manager_db: ManagerDB, make_client: Callable[..., Awaitable[ApiClient]]) -> World:
    async with manager_db.engine.begin() as conn:
        group = await conn.scalar(sa.select(t.groups.c.id).where(t.groups.c.domain_name == "default"))
        domain_admin = await _add_user(conn, "dadmin@example.com", "default", "admin", group)
        user = await _add_user(conn, "plain@example.com", "default", "user", group)
        monitor = await _add_user(conn, "watch@example.com", "default", "monitor", group)
        await agent_store.upsert_heartbeat(conn, AGENT, {
            "addr": "tcp://127.0.0.1:6001", "scaling_group": "default", "architecture": "x86_64",
            "resource_slots": {"cpu": "4", "mem": "8589934592", "cuda.device": "1"}})
    client = await make_client(gql.routes)
    return World(manager_db, client, manager_db.admin, group, domain_admin, user, monitor)


async def call(w: World, creds: Creds, query: str, variables: dict[str, Any] | None = None) -> Any:
    reply = await w.client.post("/admin/gql", {"query": query, "variables": variables or {}}, creds)
    assert reply.status == 200, reply.body
    return reply.body


async def ok(w: World, query: str, variables: dict[str, Any], field: str) -> dict[str, Any]:
    body = await call(w, w.admin, query, variables)
    assert "errors" not in body, body
    payload: dict[str, Any] = body["data"][field]
    assert payload["ok"] is True and payload["msg"] == "success", payload
    return payload


async def not_ok(w: World, query: str, variables: dict[str, Any], field: str) -> str:
    body = await call(w, w.admin, query, variables)
    assert "errors" not in body, body
    payload = body["data"][field]
    assert payload["ok"] is False, payload
    msg: str = payload["msg"]
    return msg


async def rejected(w: World, creds: Creds, query: str, variables: dict[str, Any], field: str) -> str:
    """A GraphQL error for the field and null data (bad input, or a privilege failure)."""
    body = await call(w, creds, query, variables)
    assert body["data"] == {field: None}, body
    assert body["errors"][0]["path"] == [field]
    message: str = body["errors"][0]["message"]
    return message


async def rows(w: World, table: sa.Table) -> list[dict[str, Any]]:
    """The whole table, to compare before and after a refused write."""
    async with w.db.engine.connect() as conn:
        result = await conn.execute(sa.select(table).order_by(*table.primary_key.columns))
        return [dict(r._mapping) for r in result]


async def refused_to_all_but_superadmin(w: World, query: str, variables: dict[str, Any], field: str,
                                        *tables: sa.Table) -> None:
    before = [await rows(w, tb) for tb in tables]
    for who in (w.domain_admin, w.user, w.monitor):
        assert await rejected(w, who.creds, query, variables, field) == "superadmin privilege required"
    assert [await rows(w, tb) for tb in tables] == before


# ------------------------------------------------------------------ keypair resource policies

async def test_keypair_policy_create_modify_delete(world: World) -> None:
    got = await ok(world, KP_CREATE_Q, {"name": "team", "input": {
        "default_for_unspecified": "LIMITED", "total_resource_slots": json.dumps({"cpu": "4", "mem": "8g"}),
        "max_session_lifetime": 3600, "max_concurrent_sessions": 3, "max_concurrent_sftp_sessions": 2,
        "max_containers_per_session": 2, "idle_timeout": 1800,
        "allowed_vfolder_hosts": json.dumps({"local:volume1": ["create-vfolder", "mount-in-session"]}),
        "max_pending_session_count": 5, "max_pending_session_resource_slots": json.dumps({"cpu": 8})},
    }, "create_keypair_resource_policy")
    assert got["resource_policy"] == {"name": "team"}
    q = "query($n: String) { keypair_resource_policy(name: $n) { " + POLICY_FIELDS + " } }"
    policy = (await call(world, world.admin, q, {"n": "team"}))["data"]["keypair_resource_policy"]
    assert policy == {
        "name": "team", "default_for_unspecified": "LIMITED",
        "total_resource_slots": json.dumps({"cpu": "4", "mem": "8589934592"}), "max_session_lifetime": 3600,
        "max_concurrent_sessions": 3, "max_concurrent_sftp_sessions": 2, "max_containers_per_session": 2,
        "idle_timeout": 1800,
        "allowed_vfolder_hosts": json.dumps({"local:volume1": ["create-vfolder", "mount-in-session"]}),
        "max_pending_session_count": 5, "max_pending_session_resource_slots": json.dumps({"cpu": "8"})}
    # the defaults of an input that names only what is required
    await ok(world, KP_CREATE_Q, {"name": "bare", "input": {
        "default_for_unspecified": "UNLIMITED", "max_concurrent_sessions": 1, "max_containers_per_session": 1,
        "idle_timeout": 0}}, "create_keypair_resource_policy")
    bare = (await call(world, world.admin, q, {"n": "bare"}))["data"]["keypair_resource_policy"]
    assert (bare["total_resource_slots"], bare["max_session_lifetime"], bare["max_concurrent_sftp_sessions"],
            bare["allowed_vfolder_hosts"], bare["max_pending_session_count"]) == ("{}", 0, 1, "{}", None)
    # a taken name: ok=false, the first one unchanged
    msg = await not_ok(world, KP_CREATE_Q, {"name": "team", "input": {
        "default_for_unspecified": "UNLIMITED", "max_concurrent_sessions": 9, "max_containers_per_session": 1,
        "idle_timeout": 0}}, "create_keypair_resource_policy")
    assert "already exists" in msg
    # modify only what is given
    await ok(world, KP_MODIFY_Q, {"name": "team", "input": {
        "max_concurrent_sessions": 7, "total_resource_slots": json.dumps({"cpu": "0.5"}),
        "max_pending_session_count": None}}, "modify_keypair_resource_policy")
    policy = (await call(world, world.admin, q, {"n": "team"}))["data"]["keypair_resource_policy"]
    assert (policy["max_concurrent_sessions"], policy["total_resource_slots"], policy["idle_timeout"],
            policy["max_pending_session_count"]) == (7, json.dumps({"cpu": "0.5"}), 1800, None)
    assert "No such" in await not_ok(world, KP_MODIFY_Q, {"name": "ghost", "input": {"idle_timeout": 1}},
                                     "modify_keypair_resource_policy")
    # delete: refused while a keypair uses it, then done
    async with world.db.engine.begin() as conn:
        await conn.execute(t.keypairs.update().where(t.keypairs.c.access_key == world.user.creds.access_key)
                           .values(resource_policy="team"))
    msg = await not_ok(world, KP_DELETE_Q, {"name": "team"}, "delete_keypair_resource_policy")
    assert "used by 1 keypair(s)" in msg
    assert [r["name"] for r in await rows(world, t.keypair_resource_policies)].count("team") == 1
    async with world.db.engine.begin() as conn:
        await conn.execute(t.keypairs.update().where(t.keypairs.c.access_key == world.user.creds.access_key)
                           .values(resource_policy="default"))
    await ok(world, KP_DELETE_Q, {"name": "team"}, "delete_keypair_resource_policy")
    assert (await call(world, world.admin, q, {"n": "team"}))["data"]["keypair_resource_policy"] is None
    assert "No such" in await not_ok(world, KP_DELETE_Q, {"name": "team"}, "delete_keypair_resource_policy")


async def test_keypair_policy_bad_input_writes_nothing(world: World) -> None:
    base = {"default_for_unspecified": "LIMITED", "max_concurrent_sessions": 1, "max_containers_per_session": 1,
            "idle_timeout": 60}
    before = await rows(world, t.keypair_resource_policies)
    for bad, needle in (
        ({"default_for_unspecified": "SOMETIMES"}, "default_for_unspecified"),
        ({"total_resource_slots": json.dumps({"warp.drive": "1"})}, "unknown resource slot 'warp.drive'"),
        ({"total_resource_slots": json.dumps({"cpu": "-1"})}, "total_resource_slots.cpu"),
        ({"total_resource_slots": json.dumps({"mem": "1.5x"})}, "total_resource_slots.mem"),
        ({"total_resource_slots": json.dumps(["cpu"])}, "JSON object"),
        ({"max_containers_per_session": 0}, "max_containers_per_session: must be at least 1"),
        ({"max_concurrent_sessions": -2}, "max_concurrent_sessions"),
        ({"allowed_vfolder_hosts": json.dumps({"local": "rw"})}, "allowed_vfolder_hosts.local"),
        ({"max_pending_session_resource_slots": json.dumps({"cpu": "NaN"})}, "max_pending_session_resource_slots"),
    ):
        message = await rejected(world, world.admin, KP_CREATE_Q, {"name": "broken", "input": {**base, **bad}},
                                 "create_keypair_resource_policy")
        assert needle in message, (bad, message)
    message = await rejected(world, world.admin, KP_CREATE_Q, {"name": " spaced ", "input": base},
                             "create_keypair_resource_policy")
    assert message.startswith("name:")
    message = await rejected(world, world.admin, KP_MODIFY_Q, {"name": "default", "input": {
        "max_concurrent_sessions": 99, "total_resource_slots": json.dumps({"cpu": "lots"})}},
        "modify_keypair_resource_policy")
    assert "total_resource_slots.cpu" in message
    message = await rejected(world, world.admin, KP_MODIFY_Q, {"name": "default", "input": {"idle_timeout": None}},
                             "modify_keypair_resource_policy")
    assert message == "idle_timeout: must not be null"
    body = await call(world, world.admin, KP_CREATE_Q, {"name": "x", "input": {"default_for_unspecified": "LIMITED"}})
    assert body.get("data") is None and body["errors"]  # required input fields: a validation error
    assert await rows(world, t.keypair_resource_policies) == before


async def test_keypair_policy_writes_are_superadmin_only(world: World) -> None:
    spec = {"default_for_unspecified": "UNLIMITED", "max_concurrent_sessions": 99, "max_containers_per_session": 8,
            "idle_timeout": 0}
    await refused_to_all_but_superadmin(world, KP_CREATE_Q, {"name": "mine", "input": spec},
                                        "create_keypair_resource_policy", t.keypair_resource_policies)
    # raising one's own policy, or deleting it, is refused the same way
    await refused_to_all_but_superadmin(world, KP_MODIFY_Q, {"name": "default", "input": {
        "max_concurrent_sessions": 1000}}, "modify_keypair_resource_policy", t.keypair_resource_policies)
    await refused_to_all_but_superadmin(world, KP_DELETE_Q, {"name": "signup-default"},
                                        "delete_keypair_resource_policy", t.keypair_resource_policies)


# ------------------------------------------------------------------ user and project resource policies

UP_CREATE_Q = ("mutation($n: String!, $p: Create{Kind}ResourcePolicyInput!) { create_{kind}_resource_policy("
               "name: $n, props: $p) { ok msg resource_policy { id name max_vfolder_count max_quota_scope_size } } }")
UP_MODIFY_Q = ("mutation($n: String!, $p: Modify{Kind}ResourcePolicyInput!) { modify_{kind}_resource_policy("
               "name: $n, props: $p) { ok msg } }")
UP_DELETE_Q = "mutation($n: String!) { delete_{kind}_resource_policy(name: $n) { ok msg } }"


def _q(template: str, kind: str) -> str:
    return template.replace("{Kind}", kind.title()).replace("{kind}", kind)


@pytest.mark.parametrize("kind", ["user", "project"])
async def test_user_and_project_policy_writes(world: World, kind: str) -> None:
    table = t.user_resource_policies if kind == "user" else t.project_resource_policies
    got = await ok(world, _q(UP_CREATE_Q, kind), {"n": f"{kind}-big", "p": {
        "max_vfolder_count": 10, "max_quota_scope_size": 2**40}}, f"create_{kind}_resource_policy")
    assert got["resource_policy"] == {"id": f"{kind.title()}ResourcePolicy:{kind}-big", "name": f"{kind}-big",
                                      "max_vfolder_count": 10, "max_quota_scope_size": float(2**40)}
    assert "already exists" in await not_ok(world, _q(UP_CREATE_Q, kind), {"n": f"{kind}-big", "p": {}},
                                            f"create_{kind}_resource_policy")
    await ok(world, _q(UP_MODIFY_Q, kind), {"n": f"{kind}-big", "p": {"max_vfolder_count": 3}},
             f"modify_{kind}_resource_policy")
    (row,) = [r for r in await rows(world, table) if r["name"] == f"{kind}-big"]
    assert (row["max_vfolder_count"], row["max_quota_scope_size"]) == (3, 2**40)
    # bad input and non-superadmins write nothing
    before = await rows(world, table)
    message = await rejected(world, world.admin, _q(UP_MODIFY_Q, kind), {"n": f"{kind}-big", "p": {
        "max_vfolder_count": 5, "max_quota_scope_size": -7}}, f"modify_{kind}_resource_policy")
    assert message == "max_quota_scope_size: must be at least -1"
    assert await rows(world, table) == before
    await refused_to_all_but_superadmin(world, _q(UP_CREATE_Q, kind), {"n": "sneaky", "p": {}},
                                        f"create_{kind}_resource_policy", table)
    await refused_to_all_but_superadmin(world, _q(UP_DELETE_Q, kind), {"n": "default"},
                                        f"delete_{kind}_resource_policy", table)
    # in use: the 'default' policy is every user's / project's
    msg = await not_ok(world, _q(UP_DELETE_Q, kind), {"n": "default"}, f"delete_{kind}_resource_policy")
    assert "is used by" in msg and ("user(s)" if kind == "user" else "project(s)") in msg
    await ok(world, _q(UP_DELETE_Q, kind), {"n": f"{kind}-big"}, f"delete_{kind}_resource_policy")
    assert "No such" in await not_ok(world, _q(UP_DELETE_Q, kind), {"n": f"{kind}-big"},
                                     f"delete_{kind}_resource_policy")


async def test_user_and_project_policy_reads(world: World) -> None:
    await ok(world, _q(UP_CREATE_Q, "user"), {"n": "other-users", "p": {}}, "create_user_resource_policy")
    names = "{ user_resource_policies { name max_customized_image_count } }"
    body = await call(world, world.admin, names)
    assert {p["name"] for p in body["data"]["user_resource_policies"]} >= {"default", "other-users"}
    assert {p["max_customized_image_count"] for p in body["data"]["user_resource_policies"]} == {3}
    # a user reads their own user policy only
    body = await call(world, world.user.creds, names)
    assert body["data"]["user_resource_policies"] == [{"name": "default", "max_customized_image_count": 3}]
    one = "query($n: String) { user_resource_policy(name: $n) { name } }"
    assert (await call(world, world.user.creds, one, {"n": None}))["data"]["user_resource_policy"] == {
        "name": "default"}
    assert (await call(world, world.user.creds, one, {"n": "other-users"}))["data"]["user_resource_policy"] is None
    assert (await call(world, world.monitor.creds, one, {"n": "other-users"}))["data"]["user_resource_policy"] == {
        "name": "other-users"}
    # project policies: admins all, a user those of their projects
    await ok(world, _q(UP_CREATE_Q, "project"), {"n": "elsewhere", "p": {}}, "create_project_resource_policy")
    listing = "{ project_resource_policies { name } }"
    assert {p["name"] for p in (await call(world, world.domain_admin.creds, listing))["data"][
        "project_resource_policies"]} >= {"default", "elsewhere"}
    assert (await call(world, world.user.creds, listing))["data"]["project_resource_policies"] == [
        {"name": "default"}]
    one = "query($n: String!) { project_resource_policy(name: $n) { name max_quota_scope_size } }"
    assert (await call(world, world.user.creds, one, {"n": "elsewhere"}))["data"]["project_resource_policy"] is None
    assert (await call(world, world.user.creds, one, {"n": "default"}))["data"]["project_resource_policy"] == {
        "name": "default", "max_quota_scope_size": -1}


# ------------------------------------------------------------------ resource presets

PRESET_CREATE_Q = ("mutation($n: String!, $p: CreateResourcePresetInput!) { create_resource_preset(name: $n, "
                   "props: $p) { ok msg resource_preset { name resource_slots shared_memory } } }")
PRESET_MODIFY_Q = ("mutation($n: String!, $p: ModifyResourcePresetInput!) { modify_resource_preset(name: $n, "
                   "props: $p) { ok msg } }")
PRESET_DELETE_Q = "mutation($n: String!) { delete_resource_preset(name: $n) { ok msg } }"


async def test_resource_preset_writes(world: World) -> None:
    got = await ok(world, PRESET_CREATE_Q, {"n": "gpu-small", "p": {
        "resource_slots": json.dumps({"cpu": 2, "mem": "4g", "cuda.device": "1"}), "shared_memory": "1g"}},
        "create_resource_preset")
    assert got["resource_preset"] == {"name": "gpu-small", "shared_memory": 2**30, "resource_slots": json.dumps(
        {"cpu": "2", "mem": "4294967296", "cuda.device": "1"})}
    assert "already exists" in await not_ok(world, PRESET_CREATE_Q, {"n": "gpu-small", "p": {
        "resource_slots": json.dumps({"cpu": 1})}}, "create_resource_preset")
    await ok(world, PRESET_MODIFY_Q, {"n": "gpu-small", "p": {"resource_slots": json.dumps({"cpu": "1.5",
                                                                                            "mem": "2GiB"})}},
             "modify_resource_preset")
    q = "query($n: String!) { resource_preset(name: $n) { resource_slots shared_memory } }"
    assert (await call(world, world.user.creds, q, {"n": "gpu-small"}))["data"]["resource_preset"] == {
        "resource_slots": json.dumps({"cpu": "1.5", "mem": "2147483648"}), "shared_memory": 2**30}
    await ok(world, PRESET_MODIFY_Q, {"n": "gpu-small", "p": {"shared_memory": None}}, "modify_resource_preset")
    assert (await call(world, world.user.creds, q, {"n": "gpu-small"}))["data"]["resource_preset"][
        "shared_memory"] is None
    assert "No such" in await not_ok(world, PRESET_MODIFY_Q, {"n": "ghost", "p": {"shared_memory": "1m"}},
                                     "modify_resource_preset")
    # bad input: nothing written
    before = await rows(world, t.resource_presets)
    for variables, needle in (
        ({"n": "bad", "p": {"resource_slots": json.dumps({"gpu": 1})}}, "unknown resource slot 'gpu'"),
        ({"n": "bad", "p": {"resource_slots": json.dumps({"mem": "0.5"})}}, "whole, non-negative number of bytes"),
        ({"n": "bad", "p": {"resource_slots": json.dumps({"cpu": True})}}, "resource_slots.cpu"),
        ({"n": "bad", "p": {"resource_slots": "{}"}}, "at least one slot"),
        ({"n": "bad", "p": {"resource_slots": json.dumps({"cpu": 1, "mem": "1g"}), "shared_memory": "2g"}},
         "shared_memory: must be less than"),
        ({"n": "bad", "p": {"resource_slots": json.dumps({"cpu": 1}), "shared_memory": "lots"}}, "shared_memory"),
    ):
        assert needle in await rejected(world, world.admin, PRESET_CREATE_Q, variables, "create_resource_preset")
    assert "shared_memory: must be less than" in await rejected(
        world, world.admin, PRESET_MODIFY_Q, {"n": "gpu-small", "p": {"shared_memory": "2g"}},
        "modify_resource_preset")
    assert await rows(world, t.resource_presets) == before
    await refused_to_all_but_superadmin(world, PRESET_CREATE_Q, {"n": "mine", "p": {
        "resource_slots": json.dumps({"cpu": 1})}}, "create_resource_preset", t.resource_presets)
    await refused_to_all_but_superadmin(world, PRESET_MODIFY_Q, {"n": "gpu-small", "p": {
        "resource_slots": json.dumps({"cpu": 64})}}, "modify_resource_preset", t.resource_presets)
    await refused_to_all_but_superadmin(world, PRESET_DELETE_Q, {"n": "gpu-small"}, "delete_resource_preset",
                                        t.resource_presets)
    await ok(world, PRESET_DELETE_Q, {"n": "gpu-small"}, "delete_resource_preset")
    assert "No such" in await not_ok(world, PRESET_DELETE_Q, {"n": "gpu-small"}, "delete_resource_preset")


# ------------------------------------------------------------------ scaling groups

SG_FIELDS = "name description is_active is_public driver driver_opts scheduler scheduler_opts " \
            "use_host_network wsproxy_addr wsproxy_api_token"


async def test_scaling_group_create_modify_delete(world: World) -> None:
    # as the CLI's `admin scaling-group add` sends it (opts as JSON strings)
    got = await ok(world, SG_CREATE_Q, {"name": "batch-nodes", "input": {
        "description": "Batch", "is_active": True, "is_public": False, "driver": "static", "scheduler": "fifo",
        "use_host_network": False, "wsproxy_addr": "http://127.0.0.1:5050", "wsproxy_api_token": "tok",
        "driver_opts": json.dumps({}), "scheduler_opts": json.dumps({"allowed_session_types": ["batch"],
                                                                       "pending_timeout": 30})}},
        "create_scaling_group")
    assert got["scaling_group"] == {"name": "batch-nodes"}
    q = "query($n: String) { scaling_group(name: $n) { " + SG_FIELDS + " } }"
    group = (await call(world, world.admin, q, {"n": "batch-nodes"}))["data"]["scaling_group"]
    assert json.loads(group.pop("scheduler_opts")) == {"allowed_session_types": ["batch"], "pending_timeout": 30}
    assert group == {"name": "batch-nodes", "description": "Batch", "is_active": True, "is_public": False,
                     "driver": "static", "driver_opts": "{}", "scheduler": "fifo",
                     "use_host_network": False, "wsproxy_addr": "http://127.0.0.1:5050", "wsproxy_api_token": "tok"}
    # a monitor reads it, without the app-proxy token
    group = (await call(world, world.monitor.creds, q, {"n": "batch-nodes"}))["data"]["scaling_group"]
    assert group["name"] == "batch-nodes" and group["wsproxy_api_token"] is None
    assert "already exists" in await not_ok(world, SG_CREATE_Q, {"name": "batch-nodes", "input": {
        "driver": "static", "scheduler": "fifo"}}, "create_scaling_group")
    await ok(world, SG_MODIFY_Q, {"name": "batch-nodes", "input": {"description": "Nightly", "is_active": False}},
             "modify_scaling_group")
    group = (await call(world, world.admin, q, {"n": "batch-nodes"}))["data"]["scaling_group"]
    assert (group["description"], group["is_active"], group["is_public"]) == ("Nightly", False, False)
    assert "No such" in await not_ok(world, SG_MODIFY_Q, {"name": "ghost", "input": {"is_active": True}},
                                     "modify_scaling_group")
    # bad input: nothing written
    before = await rows(world, t.scaling_groups)
    for variables, needle in (
        ({"name": "x" * 65, "input": {"driver": "static", "scheduler": "fifo"}}, "name:"),
        ({"name": "k8s", "input": {"driver": "kubernetes", "scheduler": "fifo"}}, "driver: must be one of static"),
        ({"name": "sjf", "input": {"driver": "static", "scheduler": "sjf"}}, "scheduler: must be one of drf, fifo, lifo, mof"),
        ({"name": "odd", "input": {"driver": "static", "scheduler": "fifo",
                                   "scheduler_opts": json.dumps({"allowed_session_types": ["party"]})}},
         "scheduler_opts.allowed_session_types"),
        ({"name": "odd", "input": {"driver": "static", "scheduler": "fifo",
                                   "scheduler_opts": json.dumps({"agent_selection_strategy": "random"})}},
         "scheduler_opts.agent_selection_strategy"),
        ({"name": "odd", "input": {"driver": "static", "scheduler": "fifo", "driver_opts": json.dumps([1])}},
         "driver_opts: must be a JSON object"),
    ):
        assert needle in await rejected(world, world.admin, SG_CREATE_Q, variables, "create_scaling_group")
    assert "is_active: must not be null" in await rejected(
        world, world.admin, SG_MODIFY_Q, {"name": "batch-nodes", "input": {"description": "z", "is_active": None}},
        "modify_scaling_group")
    assert await rows(world, t.scaling_groups) == before
    await refused_to_all_but_superadmin(world, SG_CREATE_Q, {"name": "mine", "input": {
        "driver": "static", "scheduler": "fifo"}}, "create_scaling_group", t.scaling_groups)
    await refused_to_all_but_superadmin(world, SG_MODIFY_Q, {"name": "default", "input": {"is_active": False}},
                                        "modify_scaling_group", t.scaling_groups)
    await refused_to_all_but_superadmin(world, SG_DELETE_Q, {"name": "batch-nodes"}, "delete_scaling_group",
                                        t.scaling_groups)
    # delete: refused while an agent or a session refers to it
    msg = await not_ok(world, SG_DELETE_Q, {"name": "default"}, "delete_scaling_group")
    assert "used by 1 agent(s)" in msg
    await ok(world, SG_CREATE_Q, {"name": "short-lived", "input": {"driver": "static", "scheduler": "fifo"}},
             "create_scaling_group")
    session_id = await _add_session(world.db, world.user, "in-short-lived", SessionStatus.PENDING)
    async with world.db.engine.begin() as conn:  # a finished session still refers to its group
        await conn.execute(t.sessions.update().where(t.sessions.c.id == session_id)
                           .values(scaling_group_name="short-lived", status="CANCELLED"))
    assert "1 session(s)" in await not_ok(world, SG_DELETE_Q, {"name": "short-lived"}, "delete_scaling_group")
    # an unused group goes, with its associations
    await ok(world, SG_DOMAIN_Q.replace("{verb}", "associate"), {"scaling_group": "batch-nodes",
                                                                 "domain": "default"},
             "associate_scaling_group_with_domain")
    await ok(world, SG_DELETE_Q, {"name": "batch-nodes"}, "delete_scaling_group")
    assert (await call(world, world.admin, q, {"n": "batch-nodes"}))["data"]["scaling_group"] is None
    assert all(r["scaling_group"] != "batch-nodes" for r in await rows(world, t.sgroups_for_domains))
    assert "No such" in await not_ok(world, SG_DELETE_Q, {"name": "batch-nodes"}, "delete_scaling_group")


@pytest.mark.parametrize("kind", ["domain", "user_group", "keypair"])
async def test_scaling_group_associations(world: World, kind: str) -> None:
    sgroup = f"for-{kind.replace('_', '-')}"
    await ok(world, SG_CREATE_Q, {"name": sgroup, "input": {"driver": "static", "scheduler": "fifo"}},
             "create_scaling_group")
    template, arg, key, table = {
        "domain": (SG_DOMAIN_Q, "domain", "default", t.sgroups_for_domains),
        "user_group": (SG_GROUP_Q, "user_group", str(world.group), t.sgroups_for_groups),
        "keypair": (SG_KEYPAIR_Q, "access_key", world.user.creds.access_key, t.sgroups_for_keypairs),
    }[kind]
    assoc, dissoc = template.replace("{verb}", "associate"), template.replace("{verb}", "disassociate")
    variables = {"scaling_group": sgroup, arg: key}
    await refused_to_all_but_superadmin(world, assoc, variables, f"associate_scaling_group_with_{kind}", table)
    await ok(world, assoc, variables, f"associate_scaling_group_with_{kind}")
    assert "already associated" in await not_ok(world, assoc, variables, f"associate_scaling_group_with_{kind}")
    listing = {
        "domain": ("query($k: String!) { scaling_groups_for_domain(domain: $k) { name } }",
                   "scaling_groups_for_domain"),
        "user_group": ("query($k: String!) { scaling_groups_for_user_group(user_group: $k) { name } }",
                       "scaling_groups_for_user_group"),
        "keypair": ("query($k: String!) { scaling_groups_for_keypair(access_key: $k) { name } }",
                    "scaling_groups_for_keypair"),
    }[kind]
    names = [g["name"] for g in (await call(world, world.admin, listing[0], {"k": key}))["data"][listing[1]]]
    assert sgroup in names
    if kind != "domain":  # the per-project and per-key listings are the superadmin's (and monitor's)
        assert "superadmin privilege required" in await rejected(world, world.user.creds, listing[0], {"k": key},
                                                                 listing[1])
    # unknown scaling group or other side: ok=false, nothing written
    before = await rows(world, table)
    assert "No such scaling group" in await not_ok(world, assoc, {**variables, "scaling_group": "nowhere"},
                                                   f"associate_scaling_group_with_{kind}")
    missing = {"domain": "no-such-domain", "user_group": str(uuid.uuid4()), "keypair": "AKIANOSUCHKEY0000000"}[kind]
    assert "No such" in await not_ok(world, assoc, {**variables, arg: missing}, f"associate_scaling_group_with_{kind}")
    assert await rows(world, table) == before
    await refused_to_all_but_superadmin(world, dissoc, variables, f"disassociate_scaling_group_with_{kind}", table)
    await ok(world, dissoc, variables, f"disassociate_scaling_group_with_{kind}")
    assert "not associated" in await not_ok(world, dissoc, variables, f"disassociate_scaling_group_with_{kind}")
    names = [g["name"] for g in (await call(world, world.admin, listing[0], {"k": key}))["data"][listing[1]]]
    assert sgroup not in names


# ------------------------------------------------------------------ agents

MODIFY_AGENT_Q = "mutation($id: String!, $p: ModifyAgentInput!) { modify_agent(id: $id, props: $p) { ok msg } }"


async def test_modify_agent(world: World) -> None:
    async def agent_row() -> dict[str, Any]:
        (row,) = [r for r in await rows(world, t.agents) if r["id"] == AGENT]
        return row

    await refused_to_all_but_superadmin(world, MODIFY_AGENT_Q, {"id": AGENT, "p": {"schedulable": False}},
                                        "modify_agent", t.agents)
    await ok(world, MODIFY_AGENT_Q, {"id": AGENT, "p": {"schedulable": False}}, "modify_agent")
    assert (await agent_row())["schedulable"] is False
    # the scheduler's candidates leave it out
    async with world.db.engine.connect() as conn:
        assert await agent_store.alive_in_group(conn, "default", "x86_64") == []
    await ok(world, SG_CREATE_Q, {"name": "moved", "input": {"driver": "static", "scheduler": "fifo"}},
             "create_scaling_group")
    await ok(world, MODIFY_AGENT_Q, {"id": AGENT, "p": {"schedulable": True}}, "modify_agent")
    # A move is the agent's first (tests/component/node/test_move_agent.py): one that is not ALIVE
    # cannot be asked, so the mutation answers ok=false and changes nothing (schedulable neither).
    async with world.db.engine.begin() as conn:
        await conn.execute(t.agents.update().where(t.agents.c.id == AGENT).values(status="LOST"))
    before = await agent_row()
    assert "is LOST: only a live agent can be moved" in await not_ok(world, MODIFY_AGENT_Q, {"id": AGENT, "p": {
        "schedulable": False, "scaling_group": "moved"}}, "modify_agent")
    assert await agent_row() == before
    async with world.db.engine.begin() as conn:
        await conn.execute(t.agents.update().where(t.agents.c.id == AGENT).values(status="ALIVE"))
    before = await agent_row()
    assert "No such scaling group" in await not_ok(world, MODIFY_AGENT_Q, {"id": AGENT, "p": {
        "schedulable": False, "scaling_group": "nowhere"}}, "modify_agent")
    assert "schedulable: must not be null" in await rejected(world, world.admin, MODIFY_AGENT_Q, {
        "id": AGENT, "p": {"schedulable": None}}, "modify_agent")
    assert await agent_row() == before
    assert "No such agent" in await not_ok(world, MODIFY_AGENT_Q, {"id": "i-ghost", "p": {"schedulable": True}},
                                           "modify_agent")
    await ok(world, MODIFY_AGENT_Q, {"id": AGENT, "p": {"scaling_group": "default"}}, "modify_agent")
    async with world.db.engine.connect() as conn:
        assert [r.id for r in await agent_store.alive_in_group(conn, "default", "x86_64")] == [AGENT]


async def test_plural_and_all_associations(world: World) -> None:
    for name in ("pl-a", "pl-b"):
        await ok(world, SG_CREATE_Q, {"name": name, "input": {"driver": "static", "scheduler": "fifo"}},
                 "create_scaling_group")
    plural = ("mutation($s: [String]!, $k: {type}) { {verb}_scaling_groups_with_{suffix}(scaling_groups: $s, "
              "{arg}: $k) { ok msg } }")
    cases = (("domain", "String!", "domain", "default", t.sgroups_for_domains),
             ("user_group", "UUID!", "user_group", str(world.group), t.sgroups_for_groups),
             ("keypair", "String!", "access_key", world.user.creds.access_key, t.sgroups_for_keypairs))
    for suffix, type_, arg, key, table in cases:
        def q(verb: str, suffix: str = suffix, type_: str = type_, arg: str = arg) -> str:
            return (plural.replace("{type}", type_).replace("{verb}", verb).replace("{suffix}", suffix)
                    .replace("{arg}", arg))
        field = f"associate_scaling_groups_with_{suffix}"
        before = await rows(world, table)
        # one unknown group: none of them is associated
        assert "No such scaling group(s): pl-zzz" in await not_ok(
            world, q("associate"), {"s": ["pl-a", "pl-zzz"], "k": key}, field)
        assert await rows(world, table) == before
        await refused_to_all_but_superadmin(world, q("associate"), {"s": ["pl-a", "pl-b"], "k": key}, field, table)
        await ok(world, q("associate"), {"s": ["pl-a", "pl-b"], "k": key}, field)
        after = await rows(world, table)
        assert len(after) == len(before) + 2
        assert "Already associated" in await not_ok(world, q("associate"), {"s": ["pl-b"], "k": key}, field)
        field = f"disassociate_scaling_groups_with_{suffix}"
        assert "Not associated" in await not_ok(world, q("disassociate"), {"s": ["pl-a", "pl-zzz"], "k": key},
                                                field)
        assert await rows(world, table) == after
        await ok(world, q("disassociate"), {"s": ["pl-b"], "k": key}, field)
        assert len(await rows(world, table)) == len(before) + 1
    # disassociate all: every group of the domain / project goes (the keypair form does not exist)
    await ok(world, "mutation($d: String!) { disassociate_all_scaling_groups_with_domain(domain: $d) { ok msg } }",
             {"d": "default"}, "disassociate_all_scaling_groups_with_domain")
    assert [r for r in await rows(world, t.sgroups_for_domains) if r["domain"] == "default"] == []
    q_all = "mutation($g: UUID!) { disassociate_all_scaling_groups_with_group(user_group: $g) { ok msg } }"
    await refused_to_all_but_superadmin(world, q_all, {"g": str(world.group)},
                                        "disassociate_all_scaling_groups_with_group", t.sgroups_for_groups)
    await ok(world, q_all, {"g": str(world.group)}, "disassociate_all_scaling_groups_with_group")
    assert [r for r in await rows(world, t.sgroups_for_groups) if r["group"] == world.group] == []
    assert "No such project" in await not_ok(world, q_all, {"g": str(uuid.uuid4())},
                                             "disassociate_all_scaling_groups_with_group")
    # put back what the rest of the module expects
    await ok(world, SG_DOMAIN_Q.replace("{verb}", "associate"), {"scaling_group": "default", "domain": "default"},
             "associate_scaling_group_with_domain")
