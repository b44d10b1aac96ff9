"""The /folders API against a real storage proxy (bai.storage, in-process, on a throwaway volume),
a real database and etcd, with the requests the official client 24.3.11 sends: folder lifecycle
(create, list, info, rename, options, trash, restore, delete from trash, purge), files (list,
mkdir, rename, move, delete), a real tus upload to the token's URL and a download with the same
sha256, resource-policy and volume-host limits, a second user who can neither see nor touch the
first one's folder, a proxy that is down (503, no row) and bad names (400)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from bai.common import etcd as etcd_mod
from bai.common.auth import API_VERSION, sign_request
from bai.common.events import REDIS_DB_RATELIMIT
from bai.common.types import SessionStatus
from bai.manager.api import folders, gql
from bai.manager.api.audit import audit_middleware
from bai.manager.api.keys import CTX
from bai.manager.api.middlewares import auth_middleware, on_prepare, problem_middleware
from bai.manager.config import ManagerConfig
from bai.manager.services import audit
from bai.manager.services.context import ManagerContext
from bai.manager.services.vfolders import access, proxies
from bai.manager.store import tables as t
from bai.storage import server as storage_server
from bai.storage.config import StorageProxyConfig
from tests.fixtures.halfstack import HalfStack, free_port

from .conftest import Creds, ManagerDB
from .test_gql import Owner, _add_session, _add_user

HOST = "local:volume1"
ALL_PERMS = ["create-vfolder", "modify-vfolder", "delete-vfolder", "mount-in-session", "upload-file",
             "download-file", "invite-others", "set-user-specific-permission"]


@dataclass
class Reply:
    status: int
    body: Any
    text: str


class Api:
    """Signed requests as the official client sends them (JSON bodies, GET ones included)."""

    def __init__(self, client: TestClient) -> None:  # type: ignore[type-arg]
        self.client = client
        self.host = f"127.0.0.1:{client.port}"

    async def __call__(self, method: str, path: str, creds: Creds, body: Any = None,
                       query: dict[str, str] | None = None) -> Reply:
        # signed as it travels (yarl normalises the query's escapes)
        full = URL(path + ("?" + urlencode(query) if query else "")).raw_path_qs
        ctype = "application/json" if body is not None else "text/plain"
        signed = sign_request(creds.access_key, creds.secret_key, method, full, self.host, ctype)
        headers = {"Host": self.host, "Content-Type": ctype, "X-BackendAI-Version": API_VERSION,
                   "X-BackendAI-Domain": "default", "Date": signed.date, "Authorization": signed.authorization}
        data = json.dumps(body).encode() if body is not None else b""
        async with self.client.request(method, full, data=data, headers=headers) as resp:
            text = await resp.text()
            try:
                parsed = json.loads(text) if text else None
            except ValueError:
                parsed = None
            return Reply(resp.status, parsed, text)


@dataclass
class World:
    api: Api
    ctx: ManagerContext
    db: ManagerDB
    volume: Path
    alice: Owner
    bob: Owner
    admin: Creds


@pytest.fixture(scope="module")
async def world(halfstack: HalfStack, manager_db: ManagerDB, tmp_path_factory: pytest.TempPathFactory
                ) -> AsyncIterator[World]:
    volume = tmp_path_factory.mktemp("volume1")
    manager_secret, client_secret = secrets.token_hex(16), secrets.token_hex(16)
    mport, cport = free_port(), free_port()
    config = StorageProxyConfig.model_validate({
        "storage-proxy": {"secret": client_secret},
        "api": {"manager": {"service-addr": f"127.0.0.1:{mport}", "secret": manager_secret},
                "client": {"service-addr": f"127.0.0.1:{cport}"}},
        "volume": {"volume1": {"path": str(volume)}},
    })
    namespace = f"vf{secrets.token_hex(3)}"
    async with storage_server.running(config), etcd_mod.connect(halfstack.etcd_addr, namespace) as etcd:
        await etcd.put_dict("volumes", {
            "_types": {"user": "", "group": ""}, "default_host": HOST, "exposed_volume_info": "percentage",
            "proxies": {
                "local": {"manager_api": f"http://127.0.0.1:{mport}", "client_api": f"http://127.0.0.1:{cport}",
                          "secret": manager_secret, "ssl_verify": "false"},
                # nothing listens there: a proxy that is down
                "dead": {"manager_api": f"http://127.0.0.1:{free_port()}", "client_api": "http://127.0.0.1:9",
                         "secret": "x" * 16, "ssl_verify": "false"},
            },
        })
        async with manager_db.engine.begin() as conn:
            group = (await conn.execute(sa.select(t.groups.c.id).where(t.groups.c.name == "default"))).scalar()
            await conn.execute(sa.update(t.domains).where(t.domains.c.name == "default").values(
                allowed_vfolder_hosts={HOST: ALL_PERMS, "dead:volume1": ALL_PERMS}))
            # only the domain grants here (the fixtures may grant the default policy too)
            await conn.execute(sa.update(t.keypair_resource_policies).values(allowed_vfolder_hosts={}))
            await conn.execute(sa.update(t.groups).values(allowed_vfolder_hosts={}))
            alice = await _add_user(conn, "vf-alice@x.test", "default", "user", group)
            other = uuid.uuid4()
            await conn.execute(sa.insert(t.groups).values(id=other, name="vf-other", domain_name="default"))
            bob = await _add_user(conn, "vf-bob@x.test", "default", "user", other)
        rate_redis = aioredis.Redis(host="127.0.0.1", port=halfstack.redis_port, db=REDIS_DB_RATELIMIT)
        ctx = ManagerContext(config=ManagerConfig(), db=manager_db.engine, redis_stream=rate_redis,
                             redis_ratelimit=rate_redis, etcd=etcd, agents=None, events=None)  # type: ignore[arg-type]
        app = web.Application(middlewares=[problem_middleware, audit_middleware, auth_middleware])
        app.on_response_prepare.append(on_prepare)
        app[CTX] = ctx
        folders.routes(app)
        gql.routes(app)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        async with audit.running(ctx):
            await client.start_server()
            try:
                yield World(Api(client), ctx, manager_db, volume, alice, bob, manager_db.admin)
            finally:
                await client.close()
            await proxies.close(ctx)
            await rate_redis.aclose()
            await etcd.delete_prefix("")


async def _create(w: World, name: str, creds: Creds, **over: Any) -> Reply:
    body = {"name": name, "host": HOST, "unmanaged_path": None, "group": None, "usage_mode": "general",
            "permission": "rw", "cloneable": False, **over}
    return await w.api("POST", "/folders", creds, body)


async def _rows(w: World, name: str) -> list[Any]:
    async with w.db.engine.connect() as conn:
        return list((await conn.execute(sa.select(t.vfolders).where(t.vfolders.c.name == name))).all())


def _folder_dir(w: World, qsid_uuid: str, folder_hex: str) -> Path:
    return w.volume / uuid.UUID(qsid_uuid).hex / folder_hex[0:2] / folder_hex[2:4] / folder_hex[4:]


async def test_folder_lifecycle(world: World) -> None:
    w, alice = world, world.alice.creds
    created = await _create(w, "life", alice)
    assert created.status == 201, created.text
    body = created.body
    assert body["name"] == "life" and body["host"] == HOST and body["status"] == "ready" and body["max_size"] == 0
    assert body["quota_scope_id"] == f"user:{w.alice.uuid}" and body["user"] == str(w.alice.uuid)
    assert body["group"] is None and body["ownership_type"] == "user" and body["creator"] == "vf-alice@x.test"
    assert len(body["id"]) == 32
    assert _folder_dir(w, str(w.alice.uuid), body["id"]).is_dir()  # the original's physical layout
    assert (await _create(w, "life", alice)).body["type"].endswith("/vfolder-already-exists")

    listed = await w.api("GET", "/folders", alice, {"all": False})  # as the official client sends it
    assert listed.status == 200
    (entry,) = [e for e in listed.body if e["name"] == "life"]
    assert entry["is_owner"] is True and entry["permission"] == "rw" and entry["type"] == "user"
    assert (await w.api("GET", "/folders", alice, {"all": True})).status == 400

    info = await w.api("GET", "/folders/life", alice)
    assert info.status == 200 and info.body["numFiles"] == 0 and info.body["used_bytes"] == 0
    assert info.body["id"] == body["id"] and info.body["is_owner"] is True

    assert (await w.api("POST", "/folders/life/rename", alice, {"new_name": "life2"})).status == 201
    assert (await w.api("GET", "/folders/life", alice)).status == 404
    opts = await w.api("POST", "/folders/life2/update-options", alice, {"cloneable": True, "permission": None})
    assert opts.status == 201
    assert (await w.api("GET", "/folders/life2", alice)).body["cloneable"] is True
    found = await w.api("GET", "/folders/_/id", alice, {"name": "life2"})
    assert found.body == {"id": body["id"], "name": "life2"}

    # trash, restore, trash again, delete for good, purge (an admin's)
    assert (await w.api("DELETE", "/folders/life2", alice)).status == 204
    assert (await _rows(w, "life2"))[0].status == "delete-pending"
    assert (await w.api("GET", "/folders/life2", alice)).status == 404
    assert (await w.api("POST", "/folders/restore-from-trash-bin", alice, {"id": body["id"]})).status == 204
    assert (await w.api("GET", "/folders/life2", alice)).status == 200
    assert (await w.api("DELETE", "/folders", alice, {"id": body["id"]})).status == 204
    # purge refuses a folder whose data still exists, and a plain user
    assert (await w.api("POST", "/folders/purge", w.admin, {"id": body["id"]})).status == 400
    assert (await w.api("POST", "/folders/delete-from-trash-bin", alice, {"id": body["id"]})).status == 204
    assert (await _rows(w, "life2"))[0].status == "delete-complete"
    assert not _folder_dir(w, str(w.alice.uuid), body["id"]).exists()
    assert (await w.api("POST", "/folders/purge", alice, {"id": body["id"]})).status == 403
    assert (await w.api("POST", "/folders/purge", w.admin, {"id": body["id"]})).status == 204
    assert await _rows(w, "life2") == []


async def test_files_upload_and_download(world: World, tmp_path: Path) -> None:
    w, alice = world, world.alice.creds
    assert (await _create(w, "files", alice)).status == 201
    mk = await w.api("POST", "/folders/files/mkdir", alice, {"path": "a/b", "parents": True, "exist_ok": False})
    assert mk.status == 201 and mk.body["results"] == {"success": [{"item": "a/b", "msg": None}], "failed": []}
    several = await w.api("POST", "/folders/files/mkdir", alice, {"path": ["c", "a/b"], "exist_ok": False})
    assert several.status == 207 and [i["item"] for i in several.body["results"]["success"]] == ["c"]
    assert [i["item"] for i in several.body["results"]["failed"]] == ["a/b"]
    assert (await w.api("POST", "/folders/files/mkdir", alice, {"path": "a/b", "parents": True,
                                                                 "exist_ok": False})).status in (400, 409)

    payload = os.urandom(3 * 1024 * 1024 + 17)
    up = await w.api("POST", "/folders/files/request-upload", alice, {"path": "a/data.bin", "size": len(payload)})
    assert up.status == 200 and up.body["url"].endswith("/upload"), up.text
    async with aiohttp.ClientSession() as http:
        url = up.body["url"] + "?" + urlencode({"token": up.body["token"]})
        async with http.head(url, headers={"Tus-Resumable": "1.0.0"}) as resp:
            assert resp.status == 200 and resp.headers["Upload-Offset"] == "0"
        half = len(payload) // 2
        for start, end in ((0, half), (half, len(payload))):  # two tus PATCHes, as a resumed upload
            async with http.patch(url, data=payload[start:end], headers={
                    "Tus-Resumable": "1.0.0", "Upload-Offset": str(start),
                    "Content-Type": "application/offset+octet-stream"}) as resp:
                assert resp.status == 204, await resp.text()
                assert resp.headers["Upload-Offset"] == str(end)

        listing = await w.api("GET", "/folders/files/files", alice, query={"path": "a"})
        assert listing.status == 200
        names = {i["name"]: i for i in listing.body["items"]}
        assert names["data.bin"]["type"] == "FILE" and names["data.bin"]["size"] == len(payload)
        assert names["b"]["type"] == "DIRECTORY" and len(names["data.bin"]["mode"]) == 3
        legacy = {f["filename"]: f for f in json.loads(listing.body["files"])}
        assert legacy["data.bin"]["mode"].startswith("-rw") and legacy["data.bin"]["size"] == len(payload)

        down = await w.api("POST", "/folders/files/request-download", alice, {"path": "a/data.bin"})
        assert down.status == 200 and down.body["url"].endswith("/download")
        async with http.get(down.body["url"], params={"token": down.body["token"]}) as resp:
            assert resp.status == 200
            got = await resp.read()
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(payload).hexdigest()

    assert (await w.api("POST", "/folders/files/rename-file", alice,
                        {"target_path": "a/data.bin", "new_name": "renamed.bin"})).body == {}
    assert (await w.api("POST", "/folders/files/move-file", alice,
                        {"src": "a/renamed.bin", "dst": "moved.bin"})).body == {}
    top = {i["name"] for i in (await w.api("GET", "/folders/files/files", alice, query={"path": "."})).body["items"]}
    assert top == {"a", "c", "moved.bin"}
    assert (await w.api("GET", "/folders/files", alice)).body["numFiles"] >= 1
    deleted = await w.api("DELETE", "/folders/files/delete-files", alice, {"files": ["moved.bin", "a", "c"],
                                                                           "recursive": True})
    assert deleted.status == 200 and deleted.body == {}
    assert (await w.api("GET", "/folders/files/files", alice, query={"path": "."})).body["items"] == []
    # paths that climb out or are absolute are refused before they travel
    for bad in ("../x", "a/../../x", "/etc/passwd"):
        reply = await w.api("POST", "/folders/files/request-download", alice, {"path": bad})
        assert reply.status == 400, (bad, reply.text)
        reply = await w.api("POST", "/folders/files/request-upload", alice, {"path": bad, "size": 1})
        assert reply.status == 400, (bad, reply.text)
    missing = await w.api("GET", "/folders/files/files", alice, query={"path": "nope"})
    assert missing.status == 404


async def test_limits_and_host_permissions(world: World) -> None:
    w, alice = world, world.alice.creds
    async with w.db.engine.begin() as conn:
        await conn.execute(sa.insert(t.user_resource_policies).values(name="vf-two", max_vfolder_count=2,
                                                                      max_quota_scope_size=10 * 2**20))
        await conn.execute(sa.update(t.users).where(t.users.c.uuid == w.bob.uuid).values(resource_policy="vf-two"))
    bob = w.bob.creds
    assert (await _create(w, "lim1", bob)).status == 201
    assert (await _create(w, "lim2", bob)).status == 201
    third = await _create(w, "lim3", bob)
    assert third.status == 400 and "more vfolders" in third.body["msg"]
    assert await _rows(w, "lim3") == []
    # the limit applies to the quota scope at the proxy
    (row,) = await _rows(w, "lim1")
    quota = await proxies.call(w.ctx, "local", "GET", "/quota-scope", {"volume": "volume1", "qsid": row.quota_scope_id})
    assert quota["limit_bytes"] == 10 * 2**20
    for name in ("lim1", "lim2"):
        assert (await w.api("DELETE", f"/folders/{name}", bob)).status == 204
        fid = (await _rows(w, name))[0].id.hex
        assert (await w.api("POST", "/folders/delete-from-trash-bin", bob, {"id": fid})).status == 204

    # without create-vfolder on the host: 403, nothing created
    async with w.db.engine.begin() as conn:
        await conn.execute(sa.update(t.domains).where(t.domains.c.name == "default").values(
            allowed_vfolder_hosts={HOST: ["upload-file"]}))
    try:
        refused = await _create(w, "nohost", alice)
        assert refused.status == 403 and "create-vfolder" in refused.body["msg"]
        assert await _rows(w, "nohost") == []
        hosts = await w.api("GET", "/folders/_/hosts", alice)
        assert hosts.status == 200 and hosts.body["allowed"] == [HOST] and hosts.body["default"] == HOST
        assert hosts.body["volume_info"][HOST]["backend"] == "vfs"
        assert "percentage" in hosts.body["volume_info"][HOST]["usage"]
    finally:
        async with w.db.engine.begin() as conn:
            await conn.execute(sa.update(t.domains).where(t.domains.c.name == "default").values(
                allowed_vfolder_hosts={HOST: ALL_PERMS, "dead:volume1": ALL_PERMS}))
    metric = await w.api("GET", "/folders/_/perf-metric", w.admin, query={"folder_host": HOST})
    assert metric.status == 200 and "metric" in metric.body
    assert (await w.api("GET", "/folders/_/perf-metric", alice, query={"folder_host": HOST})).status == 403
    every = await w.api("GET", "/folders/_/all_hosts", w.admin)
    assert every.body == {"default": HOST, "allowed": [HOST]}  # the dead proxy is left out
    assert (await w.api("GET", "/folders/_/all-hosts", alice)).status == 403
    types = await w.api("GET", "/folders/_/allowed-types", alice)
    assert sorted(types.body) == ["group", "user"]


async def _audited(w: World, operation: str, access_key: str, target: str = "") -> list[Any]:
    """The audit entries of ``operation`` by ``access_key`` whose target holds ``target``, once
    written (polled, bounded)."""
    end = time.monotonic() + 10
    while True:
        async with w.db.engine.connect() as conn:
            rows = [r for r in (await conn.execute(sa.select(t.audit_logs).where(
                t.audit_logs.c.operation == operation, t.audit_logs.c.access_key == access_key))).all()
                    if target in (r.target or "")]
        if rows or time.monotonic() > end:
            return rows
        await asyncio.sleep(0.05)


async def test_another_user_can_neither_see_nor_touch(world: World) -> None:
    w, alice, bob = world, world.alice.creds, world.bob.creds
    created = await _create(w, "private", alice)
    assert created.status == 201
    fid = created.body["id"]
    assert "private" not in {e["name"] for e in (await w.api("GET", "/folders", bob)).body}
    attempts = [
        ("GET", "/folders/private", None, None),
        ("POST", "/folders/private/rename", {"new_name": "mine"}, None),
        ("POST", "/folders/private/update-options", {"cloneable": True}, None),
        ("DELETE", "/folders/private", None, None),
        ("GET", "/folders/private/files", None, {"path": "."}),
        ("POST", "/folders/private/mkdir", {"path": "x"}, None),
        ("POST", "/folders/private/request-upload", {"path": "x", "size": 1}, None),
        ("POST", "/folders/private/request-download", {"path": "."}, None),
        ("DELETE", "/folders/private/delete-files", {"files": ["x"]}, None),
    ]
    for method, path, body, query in attempts:
        reply = await w.api(method, path, bob, body, query)
        assert reply.status == 404, (method, path, reply.text)
        assert "vf-alice" not in reply.text and str(w.alice.uuid) not in reply.text and fid not in reply.text
    for path in ("/folders/restore-from-trash-bin", "/folders/delete-from-trash-bin", "/folders/purge"):
        reply = await w.api("POST", path, bob, {"id": fid})
        assert reply.status in (403, 404), (path, reply.text)
    assert (await w.api("DELETE", "/folders", bob, {"id": fid})).status == 404
    assert (await w.api("GET", "/folders/_/id", bob, {"name": "private"})).status == 400
    assert (await _rows(w, "private"))[0].status == "ready"
    assert (await w.api("GET", "/folders/private", alice)).status == 200
    # folder writes are on record, refused ones too
    made = await _audited(w, "POST /folders", alice.access_key, "name=private")
    assert [r.outcome for r in made] == ["ok"]
    refused = await _audited(w, "POST /folders/{name}/rename", bob.access_key)
    assert refused and all(r.outcome != "ok" for r in refused)


async def test_proxy_down_and_bad_names(world: World) -> None:
    w, alice = world, world.alice.creds
    down = await _create(w, "on-dead", alice, host="dead:volume1")
    assert down.status == 503 and down.body["type"].endswith("/service-unavailable"), down.text
    assert "unreachable" in down.body["msg"]
    assert await _rows(w, "on-dead") == []
    unknown = await _create(w, "nowhere", alice, host="nowhere:volume1")
    assert unknown.status == 400
    for bad in ("", "a" * 65, "tab\there", "nl\nx", "a/b", "..", ".", " lead", ".bashrc", ".ssh", "tmp",
                ".my_profile", "bell\x07"):
        reply = await _create(w, bad, alice)
        assert reply.status == 400, (bad, reply.text)
        assert reply.body["type"].endswith("/invalid-api-params")
    assert (await w.api("POST", "/folders", alice, {"name": "nul\x00"})).status == 400
    assert (await _create(w, "strict", alice, cloneable=0)).status == 400
    async with w.db.engine.connect() as conn:
        count = (await conn.execute(sa.select(sa.func.count()).select_from(t.vfolders).where(
            t.vfolders.c.user == w.alice.uuid, t.vfolders.c.name.not_in(["files", "private"])))).scalar()
    assert count == 0


# the official client's documents (func/vfolder.py paginated_list, func/quota_scope.py)
VFOLDER_LIST = ("query($limit:Int!, $offset:Int!, $group_id: UUID, $filter: String, $order: String) {\n"
                "  vfolder_list(\n      limit:$limit, offset:$offset, group_id:$group_id, filter:$filter, order:$order) {\n"
                "    items { host name status created_at creator group permission ownership_type status }\n"
                "    total_count\n  }\n}")
QUOTA_SCOPE = ("query($storage_host_name: String!, $quota_scope_id: String!) {\n    quota_scope(storage_host_name: "
               "$storage_host_name, quota_scope_id: $quota_scope_id) {\n        details {usage_bytes usage_count "
               "hard_limit_bytes}\n    }\n}\n")
SET_QUOTA_SCOPE = ("mutation($storage_host_name: String!, $quota_scope_id: String!, $input: QuotaScopeInput!) {\n"
                   "    set_quota_scope(storage_host_name: $storage_host_name, quota_scope_id: $quota_scope_id, "
                   "props: $input) {\n        quota_scope {quota_scope_id storage_host_name}\n    }\n}\n")
UNSET_QUOTA_SCOPE = ("mutation($storage_host_name: String!, $quota_scope_id: String!) {\n    unset_quota_scope("
                     "storage_host_name: $storage_host_name, quota_scope_id: $quota_scope_id) {\n        quota_scope "
                     "{quota_scope_id storage_host_name}\n    }\n}\n")


async def _gql(w: World, creds: Creds, query: str, variables: dict[str, Any]) -> Any:
    reply = await w.api("POST", "/admin/gql", creds, {"query": query, "variables": variables})
    assert reply.status == 200, reply.text
    return reply.body


async def test_graphql_lists_and_quota_scopes(world: World) -> None:
    w, alice, bob = world, world.alice.creds, world.bob.creds
    assert (await _create(w, "gql-a", alice)).status == 201
    assert (await _create(w, "gql-b", bob)).status == 201
    page = {"limit": 20, "offset": 0, "group_id": None, "filter": None, "order": None}
    mine = await _gql(w, alice, VFOLDER_LIST, page)
    names = {i["name"] for i in mine["data"]["vfolder_list"]["items"]}
    assert "gql-a" in names and "gql-b" not in names
    assert mine["data"]["vfolder_list"]["total_count"] == len(mine["data"]["vfolder_list"]["items"])
    (item,) = [i for i in mine["data"]["vfolder_list"]["items"] if i["name"] == "gql-a"]
    assert item["host"] == HOST and item["status"] == "ready" and item["ownership_type"] == "user"
    assert item["creator"] == "vf-alice@x.test" and item["group"] is None and item["permission"] == "rw"
    # the superadmin sees everyone's; filter and order work
    every = await _gql(w, w.admin, VFOLDER_LIST, {**page, "filter": 'name like "gql-%"', "order": "-name"})
    assert [i["name"] for i in every["data"]["vfolder_list"]["items"]] == ["gql-b", "gql-a"]
    bad = await _gql(w, alice, VFOLDER_LIST, {**page, "filter": "nope == 1"})
    assert bad["errors"] and bad["data"]["vfolder_list"] is None
    fid = next(r.id for r in await _rows(w, "gql-a"))
    one = await _gql(w, bob, "query($id: String) { vfolder(id: $id) { name } }", {"id": str(fid)})
    assert one["data"]["vfolder"] is None  # bob does not reach it
    one = await _gql(w, alice, "query($id: String) { vfolder(id: $id) { name user } }", {"id": fid.hex})
    assert one["data"]["vfolder"] == {"name": "gql-a", "user": str(w.alice.uuid)}

    qsid = f"user:{w.alice.uuid}"
    scope_vars = {"storage_host_name": HOST, "quota_scope_id": qsid}
    set_ = await _gql(w, w.admin, SET_QUOTA_SCOPE, {**scope_vars, "input": {"hard_limit_bytes": 5 * 2**20}})
    assert set_["data"]["set_quota_scope"]["quota_scope"] == {"quota_scope_id": qsid, "storage_host_name": HOST}
    details = (await _gql(w, w.admin, QUOTA_SCOPE, scope_vars))["data"]["quota_scope"]["details"]
    assert details["hard_limit_bytes"] == 5 * 2**20 and details["usage_bytes"] is not None
    # a user reads their own scope but changes nothing, and reads no one else's
    assert (await _gql(w, alice, QUOTA_SCOPE, scope_vars))["data"]["quota_scope"]["details"]["hard_limit_bytes"]
    refused = await _gql(w, alice, SET_QUOTA_SCOPE, {**scope_vars, "input": {"hard_limit_bytes": 1}})
    assert refused["errors"] and refused["data"]["set_quota_scope"] is None
    other = await _gql(w, bob, QUOTA_SCOPE, scope_vars)
    assert other["errors"] and other["data"]["quota_scope"] is None
    assert (await _gql(w, w.admin, UNSET_QUOTA_SCOPE, scope_vars))["data"]["unset_quota_scope"]["quota_scope"]
    details = (await _gql(w, w.admin, QUOTA_SCOPE, scope_vars))["data"]["quota_scope"]["details"]
    assert details["hard_limit_bytes"] is None
    malformed = await _gql(w, w.admin, QUOTA_SCOPE, {**scope_vars, "quota_scope_id": "user:../../etc"})
    assert malformed["errors"]


async def test_mounted_folder_is_not_deleted_for_good_and_quota_reads(world: World) -> None:
    w, alice = world, world.alice.creds
    created = await _create(w, "in-use", alice)
    fid, qsid = created.body["id"], created.body["quota_scope_id"]
    quota = await w.api("GET", "/folders/_/quota", alice, query={"folder_host": HOST, "id": fid})
    assert quota.status == 200 and "limit_bytes" in quota.body
    assert (await w.api("GET", "/folders/_/quota", w.bob.creds,
                        query={"folder_host": HOST, "id": fid})).status == 404
    assert (await w.api("GET", "/folders/_/usage", alice, query={"folder_host": HOST, "id": fid})).status == 403
    usage = await w.api("GET", "/folders/_/usage", w.admin, query={"folder_host": HOST, "id": fid})
    assert usage.status == 200 and usage.body == {"file_count": 0, "used_bytes": 0}
    sid = await _add_session(w.db, w.alice, "vf-mounter", SessionStatus.PENDING)
    async with w.db.engine.begin() as conn:
        await conn.execute(sa.update(t.sessions).where(t.sessions.c.id == sid).values(
            vfolder_mounts=[{"name": "in-use", "vfid": f"{qsid}/{fid}", "vfsubpath": ".",
                             "kernel_path": "/home/work/in-use", "mount_perm": "rw"}]))
    assert (await w.api("DELETE", "/folders/in-use", alice)).status == 204  # the trash keeps the data
    refused = await w.api("POST", "/folders/delete-from-trash-bin", alice, {"id": fid})
    assert refused.status == 400 and "running" in refused.body["msg"]
    assert (await _rows(w, "in-use"))[0].status == "delete-pending"
    assert _folder_dir(w, str(w.alice.uuid), fid).is_dir()
    async with w.db.engine.begin() as conn:
        await conn.execute(sa.update(t.sessions).where(t.sessions.c.id == sid).values(status="TERMINATED"))
    assert (await w.api("POST", "/folders/delete-from-trash-bin", alice, {"id": fid})).status == 204
    assert not _folder_dir(w, str(w.alice.uuid), fid).exists()


async def test_project_folders(world: World) -> None:
    w, alice, bob = world, world.alice.creds, world.bob.creds
    refused = await _create(w, "proj-by-user", alice, group="default")
    assert refused.status == 403 and await _rows(w, "proj-by-user") == []
    assert (await _create(w, ".hidden", w.admin, group="default")).status == 400
    created = await _create(w, "proj-data", w.admin, group="default", permission="ro")
    assert created.status == 201, created.text
    body = created.body
    assert body["ownership_type"] == "group" and body["user"] is None
    assert body["quota_scope_id"] == f"project:{w.alice.group_id}" and body["group"] == str(w.alice.group_id)
    (entry,) = [e for e in (await w.api("GET", "/folders", alice)).body if e["name"] == "proj-data"]
    assert entry["is_owner"] is False and entry["permission"] == "ro" and entry["group_name"] == "default"
    # a member reads it but cannot write to it or delete it; a non-member does not see it
    assert (await w.api("GET", "/folders/proj-data/files", alice, query={"path": "."})).status == 200
    assert (await w.api("POST", "/folders/proj-data/mkdir", alice, {"path": "x"})).status == 403
    assert (await w.api("POST", "/folders/proj-data/request-upload", alice, {"path": "x", "size": 1})).status == 403
    assert (await w.api("DELETE", "/folders/proj-data", alice)).status == 400
    assert "proj-data" not in {e["name"] for e in (await w.api("GET", "/folders", bob)).body}
    assert (await w.api("GET", "/folders/proj-data", bob)).status == 404
    # listing with the project's ID keeps the user's own folders and that project's
    listed = await w.api("GET", "/folders", alice, query={"group_id": str(w.alice.group_id)})
    assert "proj-data" in {e["name"] for e in listed.body}
    # the project type switched off: project folders are neither created nor reached
    await w.ctx.etcd.delete("volumes/_types/group")
    proxies.client(w.ctx).invalidate()
    try:
        assert (await _create(w, "proj-off", w.admin, group="default")).status == 400
        assert (await w.api("GET", "/folders/proj-data", alice)).status == 404
    finally:
        await w.ctx.etcd.put("volumes/_types/group", "")
        proxies.client(w.ctx).invalidate()
    assert (await w.api("DELETE", "/folders/proj-data", w.admin)).status == 204


async def test_change_ownership(world: World) -> None:
    w, alice, bob = world, world.alice.creds, world.bob.creds
    fid = (await _create(w, "handover", alice)).body["id"]
    body = {"vfolder": fid, "user_email": "vf-bob@x.test"}
    assert (await w.api("POST", "/folders/_/change-ownership", alice, body)).status == 403
    assert (await w.api("POST", "/folders/_/change-ownership", w.admin,
                        {**body, "user_email": "nobody@x.test"})).status == 404
    assert (await w.api("POST", "/folders/_/change-ownership", w.admin, body)).body == {}
    assert (await w.api("GET", "/folders/handover", alice)).status == 404
    info = await w.api("GET", "/folders/handover", bob)
    assert info.status == 200 and info.body["is_owner"] is True and info.body["user"] == str(w.bob.uuid)
    assert (await _create(w, "handover", alice)).status == 201  # the name is free for alice again
    back = await w.api("POST", "/folders/_/change-ownership", w.admin, {**body, "user_email": "vf-alice@x.test"})
    assert back.status == 400 and back.body["type"].endswith("/vfolder-already-exists")


STORAGE_LIST = ("query($limit:Int!, $offset:Int!, $filter: String, $order: String) {\n  storage_volume_list(\n"
                "      limit:$limit, offset:$offset, filter:$filter, order:$order) {\n    items { id backend "
                "capabilities path usage performance_metric }\n    total_count\n  }\n}")


async def test_graphql_storage_volumes_and_permission_names(world: World) -> None:
    w, alice = world, world.alice.creds
    page = {"limit": 20, "offset": 0, "filter": None, "order": None}
    listed = (await _gql(w, w.admin, STORAGE_LIST, page))["data"]["storage_volume_list"]
    assert listed["total_count"] == 1  # the dead proxy is left out
    (vol,) = listed["items"]
    assert vol["id"] == HOST and vol["backend"] == "vfs" and "vfolder" in vol["capabilities"]
    assert json.loads(vol["usage"])["capacity_bytes"] > 0 and vol["path"] == str(w.volume)
    one = await _gql(w, w.admin, "query($id: String) { storage_volume(id: $id) { id backend } }", {"id": HOST})
    assert one["data"]["storage_volume"] == {"id": HOST, "backend": "vfs"}
    refused = await _gql(w, alice, STORAGE_LIST, page)
    assert refused["errors"] and refused["data"]["storage_volume_list"] is None
    names = await _gql(w, alice, "query { vfolder_host_permissions { vfolder_host_permission_list } }", {})
    assert names["data"]["vfolder_host_permissions"]["vfolder_host_permission_list"] == ALL_PERMS


async def test_revoked_transfer_grant_refuses_tokens_within_the_cache_ttl(world: World) -> None:
    """The token paths cache volume-host grants for access.TRANSFER_GRANTS_TTL seconds: a revoked
    upload-file / download-file refuses the next request within that time, and a grant given
    back works again within it."""
    w, alice = world, world.alice.creds
    ttl = access.TRANSFER_GRANTS_TTL
    assert (await _create(w, "grants", alice)).status == 201
    upload = {"path": "g.bin", "size": 1}
    assert (await w.api("POST", "/folders/grants/request-upload", alice, upload)).status == 200  # cached now

    async def until(status: int, since: float) -> Reply:
        """Request-upload until it answers ``status``; never longer than the TTL and a margin."""
        while True:
            reply = await w.api("POST", "/folders/grants/request-upload", alice, upload)
            if reply.status == status:
                return reply
            assert reply.status in (200, 403), reply.text
            assert time.monotonic() - since < ttl + 1.0, f"still {reply.status} {ttl + 1.0} s after the change"
            await asyncio.sleep(0.05)

    async def set_domain_grants(perms: list[str]) -> float:
        async with w.db.engine.begin() as conn:
            await conn.execute(sa.update(t.domains).where(t.domains.c.name == "default").values(
                allowed_vfolder_hosts={HOST: perms, "dead:volume1": ALL_PERMS}))
        return time.monotonic()

    revoked = await set_domain_grants([p for p in ALL_PERMS if p not in ("upload-file", "download-file")])
    try:
        refused = await until(403, revoked)
        assert "upload-file" in refused.body["msg"] and time.monotonic() - revoked <= ttl + 1.0
        down = await w.api("POST", "/folders/grants/request-download", alice, {"path": "g.bin"})
        assert down.status == 403 and "download-file" in down.body["msg"]
    finally:
        given_back = await set_domain_grants(ALL_PERMS)
    await until(200, given_back)
    assert (await w.api("POST", "/folders/grants/request-download", alice, {"path": "g.bin"})).status == 200
