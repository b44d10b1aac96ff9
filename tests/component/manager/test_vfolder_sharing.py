"""Sharing virtual folders through the /folders API as the official client calls it: invitations
(invite, list, list-sent, update, accept, reject/cancel), leave, ``_/shared`` and ``_/sharing``,
project-folder share/unshare, and clone as a background task followed on
``/events/background-task``. A real database, etcd, Redis and a real storage proxy (in-process);
every refused call is checked to write nothing and to name nothing it should not."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bai.common import etcd as etcd_mod
from bai.common.auth import API_VERSION, sign_request
from bai.common.events import REDIS_DB_STREAM
from bai.manager.api import bgtask, folder_sharing, folders
from bai.manager.api.keys import CTX
from bai.manager.api.middlewares import auth_middleware, on_prepare, problem_middleware
from bai.manager.config import ManagerConfig
from bai.manager.services import bgtasks
from bai.manager.services.context import ManagerContext
from bai.manager.services.vfolders import proxies
from bai.manager.store import tables as t
from bai.storage.server import running
from tests.component.storage.conftest import make_config
from tests.fixtures.halfstack import HalfStack, free_port

from .conftest import Creds, ManagerDB
from .test_gql import Owner, _add_user


@dataclass
class Reply:
    status: int
    body: Any

    @property
    def text(self) -> str:
        return json.dumps(self.body)


class Client:
    """Signed requests as the official SDK sends them."""

    def __init__(self, client: TestClient, creds: Creds) -> None:  # type: ignore[type-arg]
        self.client = client
        self.creds = creds
        self.host = f"127.0.0.1:{client.port}"

    def as_(self, creds: Creds) -> Client:
        return Client(self.client, creds)

    async def call(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Reply:
        url = self.client.make_url(path).with_query(params or {})
        signed = sign_request(self.creds.access_key, self.creds.secret_key, method, url.raw_path_qs, self.host,
                              "application/json")
        headers = {"Host": self.host, "Content-Type": "application/json", "X-BackendAI-Version": API_VERSION,
                   "X-BackendAI-Domain": "default", "Date": signed.date, "Authorization": signed.authorization}
        data = json.dumps(body).encode() if body is not None else None
        async with self.client.session.request(method, url, data=data, headers=headers) as resp:
            raw = await resp.read()
            return Reply(resp.status, json.loads(raw) if raw.strip() else None)

    async def events(self, task_id: str) -> list[tuple[str, dict[str, Any]]]:
        """The background task's SSE records until the stream closes."""
        path = f"/events/background-task?task_id={task_id}"
        signed = sign_request(self.creds.access_key, self.creds.secret_key, "GET", path, self.host, "application/json")
        headers = {"Host": self.host, "Content-Type": "application/json", "X-BackendAI-Version": API_VERSION,
                   "Date": signed.date, "Authorization": signed.authorization}
        records: list[tuple[str, dict[str, Any]]] = []
        async with self.client.session.get(self.client.make_url(path), headers=headers,
                                           timeout=30) as resp:  # type: ignore[arg-type]
            assert resp.status == 200, await resp.text()
            event = ""
            async for line in resp.content:
                text = line.decode().rstrip("\n")
                if text.startswith("event: "):
                    event = text[7:]
                elif text.startswith("data: "):
                    records.append((event, json.loads(text[6:])))
                    if event == "server_close":
                        break
        return records


@dataclass
class World:
    api: Client
    admin: Creds
    alice: Owner
    bob: Owner
    carol: Owner
    eve: Owner  # another domain
    volume_root: Path
    db: ManagerDB


@pytest.fixture(scope="module")
async def world(halfstack: HalfStack, manager_db: ManagerDB, tmp_path_factory: pytest.TempPathFactory,
                ) -> AsyncIterator[World]:
    volume_root = tmp_path_factory.mktemp("vfshare") / "volume1"
    volume_root.mkdir()
    proxy_config = make_config(volume_root, manager_port=free_port(), client_port=free_port())
    namespace = f"vfs{secrets.token_hex(3)}"
    async with etcd_mod.connect(halfstack.etcd_addr, namespace) as etcd, running(proxy_config):
        for key, value in {
            "volumes/_types/user": "", "volumes/_types/group": "", "volumes/default_host": "local:volume1",
            "volumes/proxies/local/manager_api": f"http://{proxy_config.api.manager.service_addr}",
            "volumes/proxies/local/client_api": f"http://{proxy_config.api.client.service_addr}",
            "volumes/proxies/local/secret": proxy_config.api.manager.secret,
            "volumes/proxies/local/ssl_verify": "false",
        }.items():
            await etcd.put(key, value)
        redis = aioredis.Redis(host="127.0.0.1", port=halfstack.redis_port, db=REDIS_DB_STREAM)
        async with manager_db.engine.begin() as conn:
            group = (await conn.execute(sa.select(t.groups.c.id).where(t.groups.c.name == "default"))).scalar()
            await conn.execute(sa.insert(t.domains).values(name="vfs-other"))
            other_group = uuid.uuid4()
            await conn.execute(sa.insert(t.groups).values(id=other_group, name="default", domain_name="vfs-other"))
            alice = await _add_user(conn, "vfs-alice@x.test", "default", "user", group)
            bob = await _add_user(conn, "vfs-bob@x.test", "default", "user", group)
            carol = await _add_user(conn, "vfs-carol@x.test", "default", "user", group)
            eve = await _add_user(conn, "vfs-eve@x.test", "vfs-other", "user", other_group)
        app = web.Application(middlewares=[problem_middleware, auth_middleware])
        app.on_response_prepare.append(on_prepare)
        ctx = app[CTX] = ManagerContext(config=ManagerConfig(), db=manager_db.engine, redis_stream=redis,
                                        redis_ratelimit=redis, etcd=etcd, agents=None,  # type: ignore[arg-type]
                                        events=None)  # type: ignore[arg-type]
        folders.routes(app)
        folder_sharing.routes(app)
        bgtask.routes(app)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        try:
            yield World(Client(client, alice.creds), manager_db.admin, alice, bob, carol, eve, volume_root,
                        manager_db)
        finally:
            await client.close()
            await bgtasks.close(ctx)
            await proxies.close(ctx)
            await redis.aclose()
            await etcd.delete_prefix("")


async def _counts(w: World) -> tuple[int, int, list[tuple[str, str]]]:
    """Grants, invitations and (id, state) of every invitation: what a refused call must not change."""
    async with w.db.engine.connect() as conn:
        grants = (await conn.execute(sa.select(sa.func.count()).select_from(t.vfolder_permissions))).scalar()
        rows = (await conn.execute(sa.select(t.vfolder_invitations.c.id, t.vfolder_invitations.c.state,
                                             t.vfolder_invitations.c.permission)
                                   .order_by(t.vfolder_invitations.c.id))).all()
    return int(grants or 0), len(rows), [(str(r[0]), f"{r[1]}/{r[2]}") for r in rows]


async def _create(w: World, who: Owner, name: str, **extra: Any) -> str:
    reply = await w.api.as_(who.creds).call("POST", "/folders", {"name": name, **extra})
    assert reply.status == 201, reply.body
    return str(reply.body["id"])


async def test_invite_accept_read_only_then_read_write_then_leave(world: World) -> None:
    w = world
    alice, bob = w.api.as_(w.alice.creds), w.api.as_(w.bob.creds)
    await _create(w, w.alice, "share-me")
    # before any invitation bob neither sees nor reaches it, and the answer names nobody
    assert "share-me" not in [f["name"] for f in (await bob.call("GET", "/folders")).body]
    hidden = await bob.call("GET", "/folders/share-me/files")
    assert hidden.status == 404 and "alice" not in hidden.text

    reply = await alice.call("POST", "/folders/share-me/invite", {"perm": "ro", "user_ids": ["vfs-bob@x.test"]})
    assert reply.status == 201 and reply.body == {"invited_ids": ["vfs-bob@x.test"]}
    again = await alice.call("POST", "/folders/share-me/invite", {"perm": "ro", "user_ids": ["vfs-bob@x.test"]})
    assert again.status == 201 and again.body == {"invited_ids": []}  # no duplicate pending invitation

    received = (await bob.call("GET", "/folders/invitations/list")).body["invitations"]
    mine = [i for i in received if i["vfolder_name"] == "share-me"]
    assert len(mine) == 1
    inv = mine[0]
    assert (inv["inviter"], inv["invitee"], inv["perm"], inv["state"]) == (
        "vfs-alice@x.test", "vfs-bob@x.test", "ro", "pending")
    sent = (await alice.call("GET", "/folders/invitations/list-sent")).body["invitations"]
    assert inv["id"] in [i["id"] for i in sent]
    assert (await bob.call("GET", "/folders/share-me/files")).status == 404  # not before accepting

    assert (await bob.call("POST", "/folders/invitations/accept", {"inv_id": inv["id"]})).body == {}
    listed = {f["name"]: f for f in (await bob.call("GET", "/folders")).body}
    assert listed["share-me"]["permission"] == "ro" and listed["share-me"]["is_owner"] is False
    assert (await bob.call("GET", "/folders/share-me/files")).status == 200
    refused = await bob.call("POST", "/folders/share-me/mkdir", {"path": "nope"})
    assert refused.status == 403
    assert not any(p.name == "nope" for p in w.volume_root.rglob("nope"))
    assert not (await bob.call("GET", "/folders/invitations/list")).body["invitations"]

    shared = (await alice.call("GET", "/folders/_/shared")).body["shared"]
    entry = next(s for s in shared if s["vfolder_name"] == "share-me")
    assert entry["shared_to"] == {"uuid": str(w.bob.uuid), "email": "vfs-bob@x.test"} and entry["perm"] == "ro"
    assert entry["type"] == "user" and entry["owner"] == str(w.alice.uuid)
    # bob cannot raise his own permission; alice can
    vfid = entry["vfolder_id"]
    denied = await bob.call("POST", "/folders/_/shared", {"vfolder": vfid, "user": str(w.bob.uuid), "perm": "rw"})
    assert denied.status == 403
    ok = await alice.call("POST", "/folders/_/shared", {"vfolder": vfid, "user": str(w.bob.uuid), "perm": "rw"})
    assert ok.body == {"msg": "shared vfolder permission updated"}
    assert (await bob.call("POST", "/folders/share-me/mkdir", {"path": "made-by-bob"})).status == 201

    # the owner cannot leave her own folder; bob leaves and loses it
    assert (await alice.call("POST", "/folders/share-me/leave", {"shared_user_uuid": None})).status == 400
    left = await bob.call("POST", "/folders/share-me/leave", {"shared_user_uuid": None})
    assert left.body == {"msg": "left the shared vfolder"}
    assert (await bob.call("GET", "/folders/share-me/files")).status == 404


async def test_refused_invitation_calls_write_nothing(world: World) -> None:
    w = world
    alice, bob, carol, eve = (w.api.as_(o.creds) for o in (w.alice, w.bob, w.carol, w.eve))
    await _create(w, w.alice, "guarded")
    await _create(w, w.alice, ".dotfiles")
    await _create(w, w.bob, "guarded")  # bob has a folder of that name himself
    before = await _counts(w)
    cases = [
        (alice.call("POST", "/folders/.dotfiles/invite", {"user_ids": ["vfs-bob@x.test"]}), 400),
        (alice.call("POST", "/folders/guarded/invite", {"user_ids": ["vfs-eve@x.test"]}), 404),  # other domain
        (alice.call("POST", "/folders/guarded/invite", {"user_ids": ["nobody@x.test", "vfs-carol@x.test"]}), 404),
        (alice.call("POST", "/folders/guarded/invite", {"user_ids": ["vfs-alice@x.test"]}), 400),
        (alice.call("POST", "/folders/guarded/invite", {"user_ids": ["vfs-carol@x.test"], "perm": "rwx"}), 400),
        (alice.call("POST", "/folders/guarded/invite", {"user_ids": []}), 400),
        (alice.call("POST", "/folders/guarded/invite", {"user_ids": ["vfs-bob@x.test"]}), 400),  # name clash
        (carol.call("POST", "/folders/guarded/invite", {"user_ids": ["vfs-bob@x.test"]}), 404),  # not hers
        (eve.call("POST", "/folders/guarded/invite", {"user_ids": ["vfs-carol@x.test"]}), 404),
    ]
    for call, status in cases:
        reply = await call
        assert reply.status == status, reply.body
        assert reply.body["type"].startswith("https://api.backend.ai/probs/")
        assert "vfs-alice" not in reply.text or status != 404
    assert await _counts(w) == before

    invited = await alice.call("POST", "/folders/guarded/invite", {"perm": "rw", "emails": ["vfs-carol@x.test"]})
    assert invited.body == {"invited_ids": ["vfs-carol@x.test"]}
    inv_id = next(i["id"] for i in (await carol.call("GET", "/folders/invitations/list")).body["invitations"]
                  if i["vfolder_name"] == "guarded")
    before = await _counts(w)
    for reply, status in [
        (await bob.call("POST", "/folders/invitations/accept", {"inv_id": inv_id}), 404),  # not his
        (await eve.call("DELETE", "/folders/invitations/delete", {"inv_id": inv_id}), 404),
        (await carol.call("POST", f"/folders/invitations/update/{inv_id}", {"perm": "wd"}), 404),  # invitee
        (await alice.call("POST", f"/folders/invitations/update/{inv_id}", {"perm": "xx"}), 400),
        (await alice.call("POST", "/folders/invitations/update/not-a-uuid", {"perm": "ro"}), 404),
        (await carol.call("POST", "/folders/invitations/accept", {"inv_id": "not-a-uuid"}), 400),
        (await carol.call("POST", "/folders/invitations/accept", {"inv_id": str(uuid.uuid4())}), 404),
    ]:
        assert reply.status == status, reply.body
    assert await _counts(w) == before

    updated = await alice.call("POST", f"/folders/invitations/update/{inv_id}", {"permission": "ro"})
    assert updated.body == {"msg": f"vfolder invitation updated: {inv_id}."}
    # carol now owns a folder called "guarded" too: accepting would make the name ambiguous
    await _create(w, w.carol, "guarded")
    before = await _counts(w)
    clash = await carol.call("POST", "/folders/invitations/accept", {"inv_id": inv_id})
    assert clash.status == 400 and clash.body["type"].endswith("/vfolder-already-exists")
    assert await _counts(w) == before
    # carol rejects; a rejected invitation can be neither accepted nor rejected again
    assert (await carol.call("DELETE", "/folders/invitations/delete", {"inv_id": inv_id})).body == {}
    assert (await carol.call("POST", "/folders/invitations/accept", {"inv_id": inv_id})).status == 404
    async with w.db.engine.connect() as conn:
        state = (await conn.execute(sa.select(t.vfolder_invitations.c.state)
                                    .where(t.vfolder_invitations.c.id == uuid.UUID(inv_id)))).scalar()
    assert state == "rejected"
    # ... and now that carol has a "guarded" of her own, alice cannot invite her to hers
    assert (await alice.call("POST", "/folders/guarded/invite", {"emails": ["vfs-carol@x.test"]})).status == 400
    # the inviter cancels an invitation
    await _create(w, w.alice, "guarded-2")
    await alice.call("POST", "/folders/guarded-2/invite", {"perm": "ro", "emails": ["vfs-carol@x.test"]})
    second = next(i["id"] for i in (await alice.call("GET", "/folders/invitations/list_sent")).body["invitations"]
                  if i["vfolder_name"] == "guarded-2")
    assert (await alice.call("POST", "/folders/invitations/delete", {"inv_id": second})).body == {}
    assert not [i for i in (await carol.call("GET", "/folders/invitations/list")).body["invitations"]
                if i["vfolder_name"] == "guarded-2"]


async def test_trashed_folder_takes_its_grants_and_invitations(world: World) -> None:
    w = world
    alice, bob, carol = (w.api.as_(o.creds) for o in (w.alice, w.bob, w.carol))
    fid = await _create(w, w.alice, "going-away")
    await alice.call("POST", "/folders/going-away/invite", {"perm": "ro", "emails": ["vfs-bob@x.test"]})
    await alice.call("POST", "/folders/going-away/invite", {"perm": "ro", "emails": ["vfs-carol@x.test"]})
    inv = next(i["id"] for i in (await bob.call("GET", "/folders/invitations/list")).body["invitations"]
               if i["vfolder_name"] == "going-away")
    await bob.call("POST", "/folders/invitations/accept", {"inv_id": inv})
    assert (await bob.call("GET", "/folders/going-away/files")).status == 200
    assert (await alice.call("DELETE", "/folders/going-away")).status == 204
    assert (await bob.call("GET", "/folders/going-away/files")).status == 404
    assert not [i for i in (await carol.call("GET", "/folders/invitations/list")).body["invitations"]
                if i["vfolder_id"] in (fid, str(uuid.UUID(fid)))]


async def test_project_folder_share_unshare_and_bulk_sharing(world: World) -> None:
    w = world
    admin = w.api.as_(w.admin)
    bob, carol = w.api.as_(w.bob.creds), w.api.as_(w.carol.creds)
    created = await admin.call("POST", "/folders", {"name": "team-data", "group": "default", "permission": "ro"})
    assert created.status == 201, created.body
    assert (await bob.call("POST", "/folders/team-data/mkdir", {"path": "x"})).status == 403  # project default: ro

    before = await _counts(w)
    for reply, status in [
        (await bob.call("POST", "/folders/team-data/share", {"permission": "rw", "emails": ["vfs-bob@x.test"]}), 403),
        (await admin.call("POST", "/folders/team-data/share", {"emails": ["vfs-eve@x.test"]}), 404),  # not a member
        (await admin.call("POST", "/folders/no-such/share", {"emails": ["vfs-bob@x.test"]}), 404),
        (await admin.call("POST", "/folders/team-data/share", {"permission": "zz", "emails": ["vfs-bob@x.test"]}), 400),
    ]:
        assert reply.status == status, reply.body
    assert await _counts(w) == before

    shared = await admin.call("POST", "/folders/team-data/share", {"permission": "rw", "emails": ["vfs-bob@x.test",
                                                                                                 "vfs-carol@x.test"]})
    assert shared.status == 201 and sorted(shared.body["shared_emails"]) == ["vfs-bob@x.test", "vfs-carol@x.test"]
    assert (await bob.call("POST", "/folders/team-data/mkdir", {"path": "by-bob"})).status == 201
    unshared = await admin.call("DELETE", "/folders/team-data/unshare", {"emails": ["vfs-bob@x.test"]})
    assert unshared.body == {"unshared_emails": ["vfs-bob@x.test"]}
    assert (await bob.call("POST", "/folders/team-data/mkdir", {"path": "again"})).status == 403
    assert (await carol.call("POST", "/folders/team-data/mkdir", {"path": "by-carol"})).status == 201
    # a member cannot leave a project folder
    assert (await carol.call("POST", "/folders/team-data/leave", {})).status == 400

    # /_/sharing: all or nothing
    folder_id = created.body["id"]
    before = await _counts(w)
    partial = await admin.call("POST", "/folders/_/sharing", {"vfolder_id": folder_id, "user_perm_list": [
        {"user_id": str(w.carol.uuid), "perm": "ro"}, {"user_id": str(w.bob.uuid), "perm": "wd"}]})  # bob: no grant
    assert partial.status == 404 and await _counts(w) == before
    assert (await carol.call("POST", "/folders/_/sharing", {"vfolder_id": folder_id, "user_perm_list": [
        {"user_id": str(w.carol.uuid), "perm": "wd"}]})).status == 403
    done = await admin.call("POST", "/folders/_/sharing", {"vfolder_id": folder_id, "user_perm_list": [
        {"user_id": str(w.carol.uuid), "perm": "ro"}]})
    assert done.status == 201
    assert (await carol.call("POST", "/folders/team-data/mkdir", {"path": "later"})).status == 403
    removed = await admin.call("POST", "/folders/_/sharing", {"vfolder_id": folder_id, "user_perm_list": [
        {"user_id": str(w.carol.uuid), "perm": None}]})
    assert removed.status == 201
    listed = {f["name"]: f for f in (await carol.call("GET", "/folders")).body}
    assert listed["team-data"]["permission"] == "ro"  # the project's default again


async def test_clone_runs_as_a_background_task(world: World) -> None:
    w = world
    alice, bob = w.api.as_(w.alice.creds), w.api.as_(w.bob.creds)
    await _create(w, w.alice, "clone-src")
    assert (await alice.call("POST", "/folders/clone-src/mkdir", {"path": "sub/dir"})).status == 201
    src_dir = next(p for p in w.volume_root.rglob("sub") if p.is_dir() and (p / "dir").is_dir())
    (src_dir / "dir" / "data.bin").write_bytes(b"x" * 100_000)

    reply = await alice.call("POST", "/folders/clone-src/clone", {
        "target_name": "clone-dst", "target_host": None, "usage_mode": "general", "permission": "rw"})
    assert reply.status == 201, reply.body
    body = reply.body
    assert (body["name"], body["host"], body["ownership_type"], body["user"], body["group"]) == (
        "clone-dst", "local:volume1", "user", str(w.alice.uuid), None)
    records = await alice.events(body["bgtask_id"])
    names = [e for e, _ in records]
    assert names[-2:] == ["bgtask_done", "server_close"], records
    progress = [d for e, d in records if e == "bgtask_updated"]
    assert all(d["task_id"] == body["bgtask_id"] for d in progress)
    # the final state: done, both folders ready, the file copied
    listed = {f["name"]: f for f in (await alice.call("GET", "/folders")).body}
    assert listed["clone-dst"]["status"] == "ready" and listed["clone-src"]["status"] == "ready"
    files = (await alice.call("GET", "/folders/clone-dst/files", params={"path": "sub/dir"})).body["items"]
    assert [(f["name"], f["size"]) for f in files] == [("data.bin", 100_000)]
    # someone else cannot follow alice's task
    assert (await bob.call("GET", "/events/background-task", params={"task_id": body["bgtask_id"]})).status == 404

    before = await _counts(w)
    async with w.db.engine.connect() as conn:
        folders_before = (await conn.execute(sa.select(sa.func.count()).select_from(t.vfolders))).scalar()
    await alice.call("POST", "/folders/clone-src/invite", {"perm": "ro", "emails": ["vfs-bob@x.test"]})
    inv = next(i["id"] for i in (await bob.call("GET", "/folders/invitations/list")).body["invitations"]
               if i["vfolder_name"] == "clone-src")
    await bob.call("POST", "/folders/invitations/accept", {"inv_id": inv})
    for reply, status in [
        (await bob.call("POST", "/folders/clone-src/clone", {"target_name": "bobs-copy"}), 403),  # not cloneable
        (await alice.call("POST", "/folders/clone-src/clone", {"target_name": "clone-dst"}), 400),  # name taken
        (await alice.call("POST", "/folders/clone-src/clone", {"target_name": "bad\x01name"}), 400),
        (await alice.call("POST", "/folders/clone-src/clone", {"target_name": ".bashrc"}), 400),
        (await alice.call("POST", "/folders/clone-src/clone", {"target_name": "x", "target_host": "elsewhere:v"}), 400),
        (await alice.call("POST", "/folders/no-such/clone", {"target_name": "y"}), 404),
    ]:
        assert reply.status == status, reply.body
    async with w.db.engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(t.vfolders))).scalar() == folders_before
    assert (await _counts(w))[0] == before[0] + 1  # only bob's accepted grant
    # once cloneable, a reader may clone it into a folder of his own
    assert (await alice.call("POST", "/folders/clone-src/update-options", {"cloneable": True})).status == 201
    copy = await bob.call("POST", "/folders/clone-src/clone", {"target_name": "bobs-copy"})
    assert copy.status == 201, copy.body
    assert [e for e, _ in await bob.events(copy.body["bgtask_id"])][-2] == "bgtask_done"
    mine = {f["name"]: f for f in (await bob.call("GET", "/folders")).body}
    assert mine["bobs-copy"]["is_owner"] is True and mine["bobs-copy"]["user"] == str(w.bob.uuid)
