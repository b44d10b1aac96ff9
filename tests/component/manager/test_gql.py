"""The GraphQL admin API (/admin/gql, /admin/graphql) against a real database, with the official
client's exact query strings (copied from the wire transcripts of the original)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa

from bai.common.types import KernelStatus, SessionStatus
from bai.manager.api import gql
from bai.manager.api.keys import CTX
from bai.manager.config import ManagerConfig
from bai.manager.store import agents as agent_store
from bai.manager.store import fixtures
from bai.manager.store import keypairs as keypair_store
from bai.manager.store import sessions as session_store
from bai.manager.store import tables as t

from .conftest import ApiClient, Creds, ManagerDB

# --- the official client's queries, verbatim (wire/01, 20 #25/#28, 21, 27, misc) ---
KEYPAIR_INFO_Q = (
    "query {  keypair {    user_id user_info { full_name } access_key secret_key is_active is_admin "
    "created_at last_used resource_policy rate_limit concurrency_used  }}"
)
KEYPAIR_SHORT_Q = "query {  keypair {    user_id access_key secret_key is_active is_admin  }}"
SESSION_LIST_Q = (
    "query($limit:Int!, $offset:Int!, $status: String, $access_key: String, $filter: String, $order: String) {\n"
    "  compute_session_list(\n"
    "      limit:$limit, offset:$offset, status:$status, access_key:$access_key, filter:$filter, order:$order) {\n"
    "    items { name access_key id group_name main_kernel_id image type status status_info status_changed result }\n"
    "    total_count\n"
    "  }\n"
    "}"
)
SESSION_INFO_Q = (
    "query($id: UUID!) {  compute_session(id: $id) {    name id main_kernel_id image tag created_at "
    "terminated_at status status_info status_data occupying_slots idle_checks containers { id cluster_role "
    "cluster_idx cluster_hostname session_id image registry status status_info status_data status_changed "
    "agent container_id resource_opts occupied_slots preopen_ports live_stat last_stat id } "
    "dependencies { name id }  }}"
)
AGENT_LIST_Q = (
    "query($limit:Int!, $offset:Int!, $status: String, $scaling_group: String, $filter: String, $order: String) {\n"
    "  agent_list(\n"
    "      limit:$limit, offset:$offset, status:$status, scaling_group:$scaling_group, filter:$filter, order:$order) {\n"
    "    items { id status architecture scaling_group region first_contact cpu_cur_pct mem_cur_bytes "
    "available_slots occupied_slots }\n"
    "    total_count\n"
    "  }\n"
    "}"
)
CLI_LIVE_STATUSES = "PENDING,SCHEDULED,PULLING,PREPARING,RUNNING,RUNNING_DEGRADED,TERMINATING,ERROR"
IMAGE = "index.docker.io/bai-kernel/python:3.11-debian12"
AGENT = "i-gql-agent"
PROBS = "https://api.backend.ai/probs/"


def list_vars(**over: Any) -> dict[str, Any]:
    """The variables the CLI's `session list` sends (wire/27), with overrides."""
    return {"status": CLI_LIVE_STATUSES, "access_key": None, "filter": None, "order": None,
            "limit": 20, "offset": 0, **over}


@dataclass
class Owner:
    creds: Creds
    uuid: uuid.UUID
    domain: str
    group_id: uuid.UUID


@dataclass
class World:
    admin: Creds
    user1: Owner
    user2: Owner
    other_admin: Owner  # a domain admin of the "other" domain
    other_user: Owner  # a plain user of the "other" domain, without sessions
    s_run: uuid.UUID  # user1, RUNNING, two kernels
    s_done: uuid.UUID  # user1, TERMINATED
    s_pending: uuid.UUID  # user2, PENDING
    s_other: uuid.UUID  # other_admin, RUNNING, domain "other"
    client: ApiClient
    monitor: Owner  # a monitor of the "default" domain: reads everything, writes nothing


async def _add_user(conn: Any, email: str, domain: str, role: str, group_id: uuid.UUID) -> Owner:
    uid = uuid.uuid4()
    ak, sk = fixtures.generate_keypair()
    await conn.execute(sa.insert(t.users).values(
        uuid=uid, username=email.split("@")[0], email=email, full_name=email.split("@")[0].title(),
        status="active", domain_name=domain, role=role, resource_policy="default", main_access_key=ak))
    await conn.execute(sa.insert(t.keypairs).values(
        access_key=ak, secret_key=sk, user_id=email, user=uid, is_active=True, is_admin=role != "user",
        rate_limit=10000, resource_policy="default"))
    await conn.execute(sa.insert(t.association_groups_users).values(user_id=uid, group_id=group_id))
    return Owner(Creds(ak, sk), uid, domain, group_id)


async def _add_session(db: ManagerDB, owner: Owner, name: str, status: SessionStatus, cluster_size: int = 1) -> uuid.UUID:
    sid = uuid.uuid4()
    slots = {"cpu": "1", "mem": "335544320"}
    kernels = [{
        "id": uuid.uuid4(), "session_id": sid, "session_name": name, "session_type": "interactive",
        "cluster_role": "main" if i == 0 else "sub", "cluster_idx": 1 if i == 0 else i, "local_rank": i,
        "cluster_hostname": "main1" if i == 0 else f"sub{i}", "scaling_group": "default",
        "domain_name": owner.domain, "group_id": owner.group_id, "user_uuid": owner.uuid,
        "access_key": owner.creds.access_key, "image": IMAGE, "architecture": "x86_64",
        "registry": "index.docker.io", "requested_slots": slots, "resource_opts": {"shmem": 67108864},
    } for i in range(cluster_size)]
    session = {
        "id": sid, "name": name, "session_type": "interactive",
        "cluster_mode": "single-node", "cluster_size": cluster_size, "domain_name": owner.domain,
        "group_id": owner.group_id, "user_uuid": owner.uuid, "access_key": owner.creds.access_key,
        "image": IMAGE, "architecture": "x86_64", "scaling_group_name": "default",
        "requested_slots": {"cpu": str(cluster_size), "mem": str(335544320 * cluster_size)},
    }
    async with db.engine.begin() as conn:  # one transaction per session: distinct created_at
        await session_store.insert_session(conn, session, kernels)
        if status == SessionStatus.PENDING:
            return sid
        for k in kernels:
            await session_store.set_kernel_status(
                conn, k["id"], KernelStatus.RUNNING, agent=AGENT, agent_addr="tcp://127.0.0.1:6001",
                container_id=uuid.uuid4().hex * 2, occupied_slots=slots)
        await session_store.set_session_status(conn, sid, SessionStatus.RUNNING)
        await conn.execute(t.sessions.update().where(t.sessions.c.id == sid)
                           .values(occupying_slots=t.sessions.c.requested_slots))
        if status == SessionStatus.TERMINATED:
            for k in kernels:
                await session_store.set_kernel_status(conn, k["id"], KernelStatus.TERMINATED)
            await session_store.set_session_status(conn, sid, SessionStatus.TERMINATED, info="user-requested")
    return sid


@pytest.fixture(scope="module")
async def world(manager_db: ManagerDB, make_client: Any) -> World:
    db = manager_db
    async with db.engine.begin() as conn:
        default_group = await conn.scalar(sa.select(t.groups.c.id).where(t.groups.c.domain_name == "default"))
        other_group = uuid.uuid4()
        await conn.execute(sa.insert(t.domains).values(name="other"))
        await conn.execute(sa.insert(t.groups).values(id=other_group, name="default", domain_name="other"))
        user1 = await _add_user(conn, "user1@example.com", "default", "user", default_group)
        user2 = await _add_user(conn, "user2@example.com", "default", "user", default_group)
        other_admin = await _add_user(conn, "boss@other.example.com", "other", "admin", other_group)
        other_user = await _add_user(conn, "peer@other.example.com", "other", "user", other_group)
        monitor = await _add_user(conn, "eye@example.com", "default", "monitor", default_group)
        await agent_store.upsert_heartbeat(conn, AGENT, {
            "addr": "tcp://127.0.0.1:6001", "region": "local", "scaling_group": "default",
            "resource_slots": {"cpu": "4", "mem": "8589934592"}, "architecture": "x86_64", "version": "test"})
        await agent_store.upsert_heartbeat(conn, "i-lost-agent", {"addr": "tcp://127.0.0.2:6001", "region": "local"})
        await conn.execute(t.agents.update().where(t.agents.c.id == "i-lost-agent").values(status="LOST"))
    s_run = await _add_session(db, user1, "u1-running", SessionStatus.RUNNING, cluster_size=2)
    s_done = await _add_session(db, user1, "u1-finished", SessionStatus.TERMINATED)
    s_pending = await _add_session(db, user2, "u2-pending", SessionStatus.PENDING)
    s_other = await _add_session(db, other_admin, "other-running", SessionStatus.RUNNING)
    client = await make_client(gql.routes)
    return World(db.admin, user1, user2, other_admin, other_user, s_run, s_done, s_pending, s_other, client, monitor)


async def gql_call(w: World, creds: Creds, query: str, variables: dict[str, Any] | None = None,
                   path: str = "/admin/gql") -> Any:
    reply = await w.client.post(path, {"query": query, "variables": variables or {}}, creds)
    assert reply.status == 200, reply.body
    return reply.body


def _iso(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


# ------------------------------------------------------------------ keypair

async def test_keypair_info_as_the_cli_asks(world: World) -> None:
    body = await gql_call(world, world.admin, KEYPAIR_INFO_Q)
    assert set(body) == {"data"}
    kp = body["data"]["keypair"]
    assert list(kp) == ["user_id", "user_info", "access_key", "secret_key", "is_active", "is_admin",
                        "created_at", "last_used", "resource_policy", "rate_limit", "concurrency_used"]
    assert kp["user_id"] == fixtures.ADMIN_EMAIL
    assert kp["user_info"] == {"full_name": "Administrator"}
    assert kp["access_key"] == world.admin.access_key
    assert kp["secret_key"] == world.admin.secret_key
    assert kp["is_active"] is True and kp["is_admin"] is True
    _iso(kp["created_at"])
    assert kp["resource_policy"] == "default"
    assert kp["rate_limit"] == 30000
    assert kp["concurrency_used"] == 0


async def test_keypair_short_query_and_user_scope(world: World) -> None:
    body = await gql_call(world, world.user1.creds, KEYPAIR_SHORT_Q)
    assert body == {"data": {"keypair": {
        "user_id": "user1@example.com", "access_key": world.user1.creds.access_key,
        "secret_key": world.user1.creds.secret_key, "is_active": True, "is_admin": False}}}
    # concurrency_used counts the user's live sessions (one RUNNING)
    body = await gql_call(world, world.user1.creds, "{ keypair { concurrency_used num_queries } }")
    assert body["data"]["keypair"] == {"concurrency_used": 1, "num_queries": 0}
    # a user cannot read another keypair
    q = "query($ak: String) { keypair(access_key: $ak) { access_key secret_key } }"
    body = await gql_call(world, world.user1.creds, q, {"ak": world.user2.creds.access_key})
    assert body["data"] == {"keypair": None}
    assert body["errors"][0]["message"] == "Forbidden operation."
    assert body["errors"][0]["path"] == ["keypair"]


async def test_keypair_secret_visible_to_superadmin_only(world: World) -> None:
    q = "query($ak: String) { keypair(access_key: $ak) { access_key secret_key user_info { email } } }"
    body = await gql_call(world, world.admin, q, {"ak": world.user1.creds.access_key})
    assert body["data"]["keypair"] == {"access_key": world.user1.creds.access_key,
                                       "secret_key": world.user1.creds.secret_key,
                                       "user_info": {"email": "user1@example.com"}}
    # a domain admin sees keypairs of its own domain only, and without their secrets
    body = await gql_call(world, world.other_admin.creds, q, {"ak": world.user1.creds.access_key})
    assert body == {"data": {"keypair": None}}
    body = await gql_call(world, world.other_admin.creds, q, {"ak": world.other_user.creds.access_key})
    assert body["data"]["keypair"] == {"access_key": world.other_user.creds.access_key, "secret_key": None,
                                       "user_info": {"email": "peer@other.example.com"}}
    # ... and may not name another domain
    body = await gql_call(world, world.other_admin.creds,
                          '{ keypair(domain_name: "default") { access_key } }')
    assert body["errors"][0]["message"] == "Forbidden operation."


# ------------------------------------------------------------------ compute_session_list

async def test_session_list_as_the_cli_asks(world: World) -> None:
    body = await gql_call(world, world.user1.creds, SESSION_LIST_Q, list_vars())
    assert set(body) == {"data"}
    page = body["data"]["compute_session_list"]
    assert page["total_count"] == 1
    [item] = page["items"]
    assert list(item) == ["name", "access_key", "id", "group_name", "main_kernel_id", "image", "type",
                          "status", "status_info", "status_changed", "result"]
    assert item["name"] == "u1-running"
    assert item["access_key"] == world.user1.creds.access_key
    assert item["id"] == str(world.s_run)
    assert item["group_name"] == "default"
    uuid.UUID(item["main_kernel_id"])
    assert item["image"] == IMAGE
    assert item["type"] == "INTERACTIVE"
    assert item["status"] == "RUNNING"
    assert item["status_info"] == ""
    _iso(item["status_changed"])
    assert item["result"] == "UNDEFINED"


async def test_session_list_scoping(world: World) -> None:
    async def names(creds: Creds, **over: Any) -> Any:
        body = await gql_call(world, creds, SESSION_LIST_Q, list_vars(status=None, order="+name", **over))
        if "errors" in body:
            return body
        return [i["name"] for i in body["data"]["compute_session_list"]["items"]]

    assert await names(world.user1.creds) == ["u1-finished", "u1-running"]
    assert await names(world.user2.creds) == ["u2-pending"]
    assert await names(world.admin) == ["other-running", "u1-finished", "u1-running", "u2-pending"]
    assert await names(world.admin, access_key=world.user1.creds.access_key) == ["u1-finished", "u1-running"]
    assert await names(world.other_admin.creds) == ["other-running"]
    # a monitor reads every domain's sessions (and writes nothing: no mutation lets it)
    assert await names(world.monitor.creds) == ["other-running", "u1-finished", "u1-running", "u2-pending"]
    body = await gql_call(world, world.monitor.creds, SESSION_INFO_Q, {"id": str(world.s_other)})
    assert body["data"]["compute_session"]["name"] == "other-running"
    # a user asking for someone else's sessions is refused, not silently given their own
    denied = await names(world.user2.creds, access_key=world.user1.creds.access_key)
    assert denied["data"] == {"compute_session_list": None}
    assert denied["errors"][0]["message"] == "Forbidden operation."
    # a domain admin cannot reach into another domain
    q = "{ compute_session_list(limit: 10, offset: 0, domain_name: \"default\") { total_count } }"
    body = await gql_call(world, world.other_admin.creds, q)
    assert body["errors"][0]["message"] == "Forbidden operation."
    # the single-session query is scoped the same way
    body = await gql_call(world, world.user2.creds, SESSION_INFO_Q, {"id": str(world.s_run)})
    assert body == {"data": {"compute_session": None}}
    body = await gql_call(world, world.other_admin.creds, SESSION_INFO_Q, {"id": str(world.s_run)})
    assert body == {"data": {"compute_session": None}}


async def test_session_list_status_filter_order_and_paging(world: World) -> None:
    async def page(**over: Any) -> dict[str, Any]:
        body = await gql_call(world, world.admin, SESSION_LIST_Q, list_vars(**over))
        assert "errors" not in body, body
        result: dict[str, Any] = body["data"]["compute_session_list"]
        return result

    def names(p: dict[str, Any]) -> list[str]:
        return [i["name"] for i in p["items"]]

    assert names(await page(order="+name")) == ["other-running", "u1-running", "u2-pending"]
    assert names(await page(status="TERMINATED")) == ["u1-finished"]
    assert names(await page(status=None, filter='name ilike "U1-%"', order="-name")) == ["u1-running", "u1-finished"]
    assert names(await page(status=None, filter='status == "PENDING" | name == "other-running"',
                            order="+name")) == ["other-running", "u2-pending"]
    assert names(await page(status=None, filter='!(status in ["RUNNING", "TERMINATED"])')) == ["u2-pending"]
    assert names(await page(status=None, filter='type == "INTERACTIVE" & cluster_size > 1')) == ["u1-running"]
    assert names(await page(status=None, filter=f'access_key != "{world.user1.creds.access_key}" & '
                                               'domain_name == "default"')) == ["u2-pending"]
    assert names(await page(status=None, filter='terminated_at is null & created_at > "2000-01-01T00:00:00Z"',
                            order="+name")) == ["other-running", "u1-running", "u2-pending"]
    assert names(await page(status=None, filter='name contains "%"')) == []  # literal, not a wildcard
    # the default order puts the latest first; limit/offset page through it with a stable total
    first = await page(status=None, limit=2, offset=0)
    rest = await page(status=None, limit=2, offset=2)
    assert first["total_count"] == rest["total_count"] == 4
    assert names(first) + names(rest) == ["other-running", "u2-pending", "u1-finished", "u1-running"]


@pytest.mark.parametrize(("filter_", "order", "status", "needle"), [
    ('name == ', None, None, "Invalid filter"),
    ('nosuchfield == "x"', None, None, "unknown field 'nosuchfield'"),
    ('status == "NOT_A_STATUS"', None, None, "status must be one of"),
    ('cluster_size == "two"', None, None, "cluster_size cannot be compared"),
    ('status like "RUN%"', None, None, "applies to text fields only"),
    ("cluster_size > 99999999999", None, None, "out of range for cluster_size"),
    ("name == 'x'", None, None, "unexpected character"),
    ('name == "x"; drop table sessions; --', None, None, "unexpected character ';'"),
    ('(' * 100 + 'name == "x"' + ')' * 100, None, None, "nested too deeply"),
    (None, "-created_at;drop table sessions", None, "Invalid order"),
    (None, "+password", None, "unknown field 'password'"),
    (None, None, "RUNNING,BOGUS", "Unknown session status: BOGUS"),
])
async def test_bad_filter_order_or_status_is_an_error_entry(
    world: World, filter_: str | None, order: str | None, status: str | None, needle: str,
) -> None:
    body = await gql_call(world, world.admin, SESSION_LIST_Q,
                          list_vars(filter=filter_, order=order, status=status))
    assert body["data"] == {"compute_session_list": None}
    [err] = body["errors"]
    assert needle in err["message"]
    assert err["path"] == ["compute_session_list"]


async def test_filter_values_are_bound_parameters(world: World) -> None:
    evil = 'x\\" OR 1=1 --'
    body = await gql_call(world, world.admin, SESSION_LIST_Q,
                          list_vars(status=None, filter=f'name == "{evil}"'))
    assert body["data"]["compute_session_list"] == {"items": [], "total_count": 0}
    body = await gql_call(world, world.admin, SESSION_LIST_Q, list_vars(status=None))
    assert body["data"]["compute_session_list"]["total_count"] == 4


# ------------------------------------------------------------------ compute_session

async def test_session_info_as_the_cli_asks(world: World) -> None:
    body = await gql_call(world, world.user1.creds, SESSION_INFO_Q, {"id": str(world.s_run)})
    assert set(body) == {"data"}
    s = body["data"]["compute_session"]
    assert list(s) == ["name", "id", "main_kernel_id", "image", "tag", "created_at", "terminated_at", "status",
                       "status_info", "status_data", "occupying_slots", "idle_checks", "containers",
                       "dependencies"]
    assert s["name"] == "u1-running" and s["id"] == str(world.s_run)
    assert s["image"] == IMAGE and s["tag"] is None and s["terminated_at"] is None
    _iso(s["created_at"])
    assert (s["status"], s["status_info"], s["status_data"]) == ("RUNNING", "", "{}")
    assert json.loads(s["occupying_slots"]) == {"cpu": "2", "mem": "671088640"}
    assert json.loads(s["idle_checks"]) == {"session_lifetime": {
        "remaining": None, "remaining_time_type": "expire_after", "extra": None}}
    assert s["dependencies"] == []
    main, sub = s["containers"]
    assert main["id"] == s["main_kernel_id"]
    assert list(main) == ["id", "cluster_role", "cluster_idx", "cluster_hostname", "session_id", "image",
                          "registry", "status", "status_info", "status_data", "status_changed", "agent",
                          "container_id", "resource_opts", "occupied_slots", "preopen_ports", "live_stat",
                          "last_stat"]
    assert (main["cluster_role"], main["cluster_idx"], main["cluster_hostname"]) == ("main", 1, "main1")
    assert (sub["cluster_role"], sub["cluster_idx"], sub["cluster_hostname"]) == ("sub", 1, "sub1")
    assert main["session_id"] == str(world.s_run)
    assert (main["image"], main["registry"], main["status"]) == (IMAGE, "index.docker.io", "RUNNING")
    assert (main["status_info"], main["status_data"]) == ("", "{}")
    _iso(main["status_changed"])
    assert main["agent"] == AGENT and len(main["container_id"]) == 64
    assert json.loads(main["resource_opts"]) == {"shmem": 67108864}
    assert main["occupied_slots"] == '{"cpu": "1", "mem": "335544320"}'
    assert main["preopen_ports"] == [] and main["live_stat"] is None and main["last_stat"] is None


async def test_session_extra_fields(world: World) -> None:
    q = """query($id: UUID!) { compute_session(id: $id) {
        session_id type cluster_mode cluster_size domain_name group_id user_id user_email access_key
        status_history scaling_group requested_slots num_queries agent_ids resource_opts service_ports
        result terminated_at status_info } }"""
    body = await gql_call(world, world.admin, q, {"id": str(world.s_done)})
    s = body["data"]["compute_session"]
    assert s["session_id"] == str(world.s_done)
    assert (s["type"], s["cluster_mode"], s["cluster_size"]) == ("INTERACTIVE", "single-node", 1)
    assert (s["domain_name"], s["group_id"]) == ("default", str(world.user1.group_id))
    assert (s["user_id"], s["user_email"]) == (str(world.user1.uuid), "user1@example.com")
    assert set(json.loads(s["status_history"])) == {"PENDING", "RUNNING", "TERMINATED"}
    assert s["scaling_group"] == "default" and s["num_queries"] == 0
    assert json.loads(s["requested_slots"]) == {"cpu": "1", "mem": "335544320"}
    assert s["agent_ids"] == [AGENT]
    assert json.loads(s["resource_opts"]) == {"main1": {"shmem": 67108864}}
    assert json.loads(s["service_ports"]) == []
    assert s["status_info"] == "user-requested"
    _iso(s["terminated_at"])


async def test_unknown_session_and_bad_uuid(world: World) -> None:
    body = await gql_call(world, world.admin, SESSION_INFO_Q, {"id": str(uuid.uuid4())})
    assert body == {"data": {"compute_session": None}}
    body = await gql_call(world, world.admin, SESSION_INFO_Q, {"id": "not-a-uuid"})
    assert body["data"] is None
    assert "$id" in body["errors"][0]["message"]


# ------------------------------------------------------------------ agent_list

async def test_agent_list_as_the_cli_asks(world: World) -> None:
    variables = {"status": "ALIVE", "scaling_group": None, "filter": None, "order": None, "limit": 20, "offset": 0}
    body = await gql_call(world, world.admin, AGENT_LIST_Q, variables)
    assert set(body) == {"data"}
    page = body["data"]["agent_list"]
    assert page["total_count"] == 1
    [agent] = page["items"]
    assert list(agent) == ["id", "status", "architecture", "scaling_group", "region", "first_contact",
                           "cpu_cur_pct", "mem_cur_bytes", "available_slots", "occupied_slots"]
    assert (agent["id"], agent["status"], agent["architecture"]) == (AGENT, "ALIVE", "x86_64")
    assert (agent["scaling_group"], agent["region"]) == ("default", "local")
    _iso(agent["first_contact"])
    assert json.loads(agent["available_slots"]) == {"cpu": "4", "mem": "8589934592"}
    assert agent["occupied_slots"] == "{}"
    # filters and orders over agents
    body = await gql_call(world, world.admin, AGENT_LIST_Q, {**variables, "status": None, "order": "-id"})
    assert [a["id"] for a in body["data"]["agent_list"]["items"]] == ["i-lost-agent", AGENT]
    body = await gql_call(world, world.admin, AGENT_LIST_Q,
                          {**variables, "status": None, "filter": 'status == "LOST" & schedulable is true'})
    assert [a["id"] for a in body["data"]["agent_list"]["items"]] == ["i-lost-agent"]
    body = await gql_call(world, world.admin, "{ agent_list(limit: 5, offset: 0) { items { id container_count } } }")
    counts = {a["id"]: a["container_count"] for a in body["data"]["agent_list"]["items"]}
    assert counts == {AGENT: 3, "i-lost-agent": 0}  # two kernels of u1-running, one of other-running


async def test_agent_list_is_superadmin_and_monitor_only(world: World) -> None:
    for creds in (world.user1.creds, world.other_admin.creds):
        body = await gql_call(world, creds, AGENT_LIST_Q, {"limit": 20, "offset": 0})
        assert body["data"] == {"agent_list": None}
        assert "superadmin" in body["errors"][0]["message"]
    body = await gql_call(world, world.monitor.creds, AGENT_LIST_Q, {"limit": 20, "offset": 0})
    assert body["data"]["agent_list"]["total_count"] == 2


async def test_agent_detail_as_the_official_info_asks(world: World) -> None:
    q = ("query($agent_id: String!) { agent(agent_id: $agent_id) { id status region architecture first_contact "
         "cpu_cur_pct available_slots occupied_slots hardware_metadata live_stat local_config } }")
    body = await gql_call(world, world.admin, q, {"agent_id": AGENT})
    agent = body["data"]["agent"]
    assert agent["id"] == AGENT and agent["status"] == "ALIVE" and agent["region"] == "local"
    assert json.loads(agent["available_slots"]) == {"cpu": "4", "mem": "8589934592"}
    assert json.loads(agent["local_config"])["agent"]["id"] == AGENT
    assert isinstance(json.loads(agent["hardware_metadata"]), dict)
    assert (await gql_call(world, world.admin, q, {"agent_id": "i-nobody"}))["data"] == {"agent": None}
    for creds in (world.user1.creds, world.other_admin.creds):
        refused = await gql_call(world, creds, q, {"agent_id": AGENT})
        assert refused["data"] == {"agent": None} and "superadmins" in refused["errors"][0]["message"]


# ------------------------------------------------------------------ transport

async def test_legacy_endpoint(world: World) -> None:
    body = await gql_call(world, world.user1.creds, KEYPAIR_SHORT_Q, path="/admin/graphql")
    assert body == {"keypair": {"user_id": "user1@example.com", "access_key": world.user1.creds.access_key,
                                "secret_key": world.user1.creds.secret_key, "is_active": True, "is_admin": False}}
    reply = await world.client.post("/admin/graphql", {"query": "{ agent_list(limit: 1, offset: 0) { total_count } }"},
                                    world.user1.creds)
    assert reply.status == 400
    assert reply.content_type == "application/problem+json"
    assert reply.body["type"] == PROBS + "graphql-error"
    assert reply.body["title"] == "GraphQL-generated error."
    assert isinstance(reply.body["data"], list) and "superadmin" in reply.body["data"][0]["message"]


async def test_graphql_syntax_and_validation_errors(world: World) -> None:
    body = await gql_call(world, world.admin, "query { keypair { ")
    assert body["data"] is None and "Syntax Error" in body["errors"][0]["message"]
    body = await gql_call(world, world.admin, "{ keypair { no_such_field } }")
    assert body["data"] is None and "no_such_field" in body["errors"][0]["message"]
    body = await gql_call(world, world.admin, "{ compute_session_list(limit: -1, offset: 0) { total_count } }")
    assert body["errors"][0]["message"] == "limit and offset must not be negative"


async def test_introspection_is_allowed(world: World) -> None:
    body = await gql_call(world, world.admin, "{ __schema { queryType { fields { name } } } }")
    names = {f["name"] for f in body["data"]["__schema"]["queryType"]["fields"]}
    assert {"compute_session", "compute_session_list", "keypair", "agent_list"} <= names


@pytest.mark.parametrize("path", ["/admin/gql", "/admin/graphql"])
async def test_unauthenticated_is_401(world: World, path: str) -> None:
    reply = await world.client.post(path, {"query": KEYPAIR_SHORT_Q})
    assert reply.status == 401
    assert reply.content_type == "application/problem+json"
    assert reply.body["type"] == PROBS + "auth-failed"
    forged = Creds(world.user1.creds.access_key, "not-the-secret")
    reply = await world.client.post(path, {"query": KEYPAIR_SHORT_Q}, forged)
    assert reply.status == 401 and reply.body["type"] == PROBS + "auth-failed"


@pytest.mark.parametrize(("raw", "field"), [
    (b"{not json", None),
    (b"[1, 2]", None),
    (b"", None),
    (json.dumps({"variables": {}}).encode(), "query"),
    (json.dumps({"query": 42}).encode(), "query"),
    (json.dumps({"query": "{ keypair { access_key } }", "variables": [1]}).encode(), "variables"),
])
async def test_malformed_body_is_400(world: World, raw: bytes, field: str | None) -> None:
    for path in ("/admin/gql", "/admin/graphql"):
        reply = await world.client.post(path, creds=world.admin, raw=raw)
        assert reply.status == 400, reply.body
        assert reply.content_type == "application/problem+json"
        assert reply.body["type"] == PROBS + "invalid-api-params"
        if field is not None:
            assert field in reply.body["data"]


async def test_operation_name_alias(world: World) -> None:
    doc = "query A { keypair { access_key } } query B { keypair { is_admin } }"
    for key in ("operation_name", "operationName"):
        reply = await world.client.post("/admin/gql", {"query": doc, key: "B"}, world.admin)
        assert reply.body == {"data": {"keypair": {"is_admin": True}}}


async def test_unexpected_failures_do_not_leak_details(world: World, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    async def broken(conn: Any, access_key: str) -> int:
        raise RuntimeError("connection to 10.0.0.7 refused; password=hunter2")

    monkeypatch.setattr(keypair_store, "concurrency_used", broken)
    body = await gql_call(world, world.admin, "{ keypair { access_key concurrency_used } }")
    assert body["data"] == {"keypair": {"access_key": world.admin.access_key, "concurrency_used": None}}
    [err] = body["errors"]
    assert err["message"] == "Internal server error."
    assert err["path"] == ["keypair", "concurrency_used"]
    assert "hunter2" in caplog.text  # the operator still gets the real cause in the log


@pytest.mark.parametrize("path", ["/admin/gql", "/admin/graphql"])
async def test_page_size_is_capped(world: World, path: str) -> None:
    q = "query($limit: Int!) { %s(limit: $limit, offset: 0) { total_count } }"
    for field in ("compute_session_list", "agent_list"):
        reply = await world.client.post(path, {"query": q % field, "variables": {"limit": 100}}, world.admin)
        assert reply.status == 200 and "errors" not in reply.body, reply.body
        reply = await world.client.post(path, {"query": q % field, "variables": {"limit": 101}}, world.admin)
        message = "limit must not exceed 100 (max-page-size)"
        if path == "/admin/gql":
            assert reply.status == 200
            assert reply.body["data"] == {field: None}
            assert [e["message"] for e in reply.body["errors"]] == [message]
            assert reply.body["errors"][0]["path"] == [field]
        else:  # the legacy endpoint: 400 graphql-error with the error list as data
            assert reply.status == 400 and reply.body["type"] == PROBS + "graphql-error"
            assert [e["message"] for e in reply.body["data"]] == [message]


async def test_page_size_cap_is_configurable(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = world.client.client.app[CTX]
    monkeypatch.setattr(manager, "config", ManagerConfig.model_validate({"graphql": {"max-page-size": 2}}))
    body = await gql_call(world, world.admin, SESSION_LIST_Q, list_vars(status=None, limit=2))
    assert "errors" not in body and len(body["data"]["compute_session_list"]["items"]) == 2
    body = await gql_call(world, world.admin, SESSION_LIST_Q, list_vars(status=None, limit=3))
    assert body["data"] == {"compute_session_list": None}
    assert body["errors"][0]["message"] == "limit must not exceed 2 (max-page-size)"


@pytest.mark.parametrize("filter_", ["!" * 5000 + 'name == "x"', "(" * 5000, "[" * 3000, 'name in [' + "[" * 3000])
async def test_hostile_filters_are_refused_not_recursed(world: World, filter_: str) -> None:
    body = await gql_call(world, world.admin, SESSION_LIST_Q, list_vars(filter=filter_))
    assert body["data"] == {"compute_session_list": None}
    [err] = body["errors"]
    assert err["message"].startswith("Invalid filter: "), err
