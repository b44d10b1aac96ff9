"""Images and container registries through GraphQL, against a real Docker registry (Debian's
docker-registry with an image pushed into it), real etcd (registry settings), Redis (the rescan's
background task) and PostgreSQL: registry settings CRUD, rescan with its progress stream, the
image reads the official client sends, aliases, forgetting, privileges and a registry that is
down."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bai.common import etcd as etcd_mod
from bai.common.auth import API_VERSION, sign_request
from bai.common.events import REDIS_DB_RATELIMIT, REDIS_DB_STREAM
from bai.manager.api import bgtask, gql
from bai.manager.api.keys import CTX
from bai.manager.api.middlewares import auth_middleware, on_prepare, problem_middleware
from bai.manager.config import ManagerConfig
from bai.manager.services.context import ManagerContext
from bai.manager.store import tables as t
from tests.fixtures.halfstack import HalfStack, free_port
from tests.fixtures.registry import EXTRA_LABELS, REPOSITORY, Registry, start_registry, stop

from .conftest import ApiClient, Creds, ManagerDB
from .test_gql import Owner, _add_user

# The official client's documents (ai/backend/client/func/image.py of backend.ai-client 24.3.11).
CLIENT_LIST_Q = ("query($is_operation: Boolean) {  images(is_operation: $is_operation) {    "
                 "name registry architecture tag digest size_bytes aliases  }}")
CLIENT_GET_Q = ("query($reference: String!, $architecture: String!) {  image(reference: $reference, "
                "architecture: $architecture) {    name registry architecture tag digest size_bytes aliases  }}")
CLIENT_RESCAN_Q = "mutation($registry: String) {  rescan_images(registry:$registry) {   ok msg task_id  }}"
CLIENT_ALIAS_Q = "mutation($alias: String!, $target: String!) {  alias_image(alias: $alias, target: $target) {   ok msg  }}"
CLIENT_DEALIAS_Q = "mutation($alias: String!) {  dealias_image(alias: $alias) {   ok msg  }}"
CLIENT_FORGET_Q = ("mutation($reference: String!, $architecture: String!) {  forget_image(reference: $reference, "
                   "architecture: $architecture) {   ok msg  }}")
FULL_IMAGE = ("id name humanized_name tag registry architecture is_local digest labels { key value } aliases "
              "size_bytes resource_limits { key min max } supported_accelerators installed installed_agents")
CREATE_REG_Q = ("mutation($hostname: String!, $props: CreateContainerRegistryInput!) {"
                " create_container_registry(hostname: $hostname, props: $props) {"
                " ok msg container_registry { hostname config { url type project username password ssl_verify } } } }")
MODIFY_REG_Q = ("mutation($hostname: String!, $props: ModifyContainerRegistryInput!) {"
                " modify_container_registry(hostname: $hostname, props: $props) {"
                " ok msg container_registry { hostname config { url type project username password ssl_verify } } } }")
DELETE_REG_Q = ("mutation($hostname: String!) { delete_container_registry(hostname: $hostname) { ok msg "
                "container_registry { hostname } } }")
REGS_Q = "query { container_registries { hostname config { url type project username password ssl_verify } } }"
REG_Q = "query($h: String!) { container_registry(hostname: $h) { hostname config { url password } } }"


@dataclass
class Env:
    client: ApiClient
    db: ManagerDB
    etcd: etcd_mod.EtcdStore
    registry: Registry
    admin: Creds
    domain_admin: Owner
    user: Owner

    async def gql(self, creds: Creds, query: str, variables: dict[str, Any] | None = None) -> Any:
        reply = await self.client.post("/admin/gql", {"query": query, "variables": variables or {}}, creds)
        assert reply.status == 200, reply.body
        return reply.body

    async def ok(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        body = await self.gql(self.admin, query, variables)
        assert "errors" not in body, body
        return body["data"]

    async def events(self, creds: Creds, task_id: str, deadline: float = 60.0) -> list[tuple[str, Any]]:
        """The background task's SSE records until the server closes the stream."""
        path = f"/events/background-task?task_id={task_id}"
        signed = sign_request(creds.access_key, creds.secret_key, "GET", path, self.client.host, "text/plain")
        headers = {"Host": self.client.host, "Content-Type": "text/plain", "X-BackendAI-Version": API_VERSION,
                   "Date": signed.date, "Authorization": signed.authorization}
        records: list[tuple[str, Any]] = []
        async with asyncio.timeout(deadline):
            async with self.client.client.get(path, headers=headers) as resp:
                if resp.status != 200:
                    return [("status", resp.status)]
                event = ""
                async for raw in resp.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        records.append((event, json.loads(line[6:])))
                        if event == "server_close":
                            break
        return records

    async def image_rows(self) -> list[tuple[Any, ...]]:
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(t.images.c.name, t.images.c.architecture, t.images.c.labels)
                                       .order_by(t.images.c.name))).all()
            aliases = (await conn.execute(sa.select(t.image_aliases).order_by(t.image_aliases.c.alias))).all()
        return [tuple(r) for r in rows] + [tuple(a) for a in aliases]


@pytest.fixture(scope="module")
async def env(halfstack: HalfStack, manager_db: ManagerDB, docker_registry: Registry) -> AsyncIterator[Env]:
    stream = aioredis.Redis(host="127.0.0.1", port=halfstack.redis_port, db=REDIS_DB_STREAM)
    rate = aioredis.Redis(host="127.0.0.1", port=halfstack.redis_port, db=REDIS_DB_RATELIMIT)
    async with etcd_mod.connect(halfstack.etcd_addr, f"images-{secrets.token_hex(4)}") as etcd:
        app = web.Application(middlewares=[problem_middleware, auth_middleware])
        app.on_response_prepare.append(on_prepare)
        app[CTX] = ManagerContext(config=ManagerConfig(), db=manager_db.engine, redis_stream=stream,
                                  redis_ratelimit=rate, etcd=etcd, agents=None, events=None)  # type: ignore[arg-type]
        gql.routes(app)
        bgtask.routes(app)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        async with manager_db.engine.begin() as conn:
            group = await conn.scalar(sa.select(t.groups.c.id).where(t.groups.c.domain_name == "default"))
            domain_admin = await _add_user(conn, f"da-{secrets.token_hex(3)}@example.com", "default", "admin", group)
            user = await _add_user(conn, f"u-{secrets.token_hex(3)}@example.com", "default", "user", group)
        try:
            yield Env(ApiClient(client), manager_db, etcd, docker_registry, manager_db.admin, domain_admin, user)
        finally:
            await client.close()
            await stream.aclose()
            await rate.aclose()


async def add_registry(env: Env, hostname: str, url: str, **props: Any) -> Any:
    data = await env.ok(CREATE_REG_Q, {"hostname": hostname, "props": {"url": url, "type": "docker", **props}})
    return data["create_container_registry"]


async def rescan(env: Env, registry: str) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    out = (await env.ok(CLIENT_RESCAN_Q, {"registry": registry}))["rescan_images"]
    if not out["ok"]:
        return out, []
    return out, await env.events(env.admin, out["task_id"])


async def test_registry_settings_live_in_etcd_as_the_original(env: Env) -> None:
    host = f"reg-{secrets.token_hex(3)}.example.com:5000"
    created = await add_registry(env, host, "https://" + host, project=["stable", "community"], username="bot",
                                 password="s3cret")
    assert created["ok"] is True and created["msg"] == ""
    assert created["container_registry"] == {"hostname": host, "config": {
        "url": "https://" + host, "type": "docker", "project": ["stable", "community"], "username": "bot",
        "password": "*****", "ssl_verify": True}}
    quoted = host.replace(":", "%3A")
    raw = await env.etcd.get_prefix(f"config/docker/registry/{quoted}")
    assert raw == {"": "https://" + host, "type": "docker", "project": "stable,community", "username": "bot",
                   "password": "s3cret"}

    again = await add_registry(env, host, "https://elsewhere")
    assert again["ok"] is False and "already exists" in again["msg"]
    assert await env.etcd.get(f"config/docker/registry/{quoted}") == "https://" + host

    listed = (await env.ok(REGS_Q))["container_registries"]
    assert [r["config"]["password"] for r in listed if r["hostname"] == host] == ["*****"]
    assert "s3cret" not in json.dumps(listed)

    modified = (await env.ok(MODIFY_REG_Q, {"hostname": host, "props": {"password": None, "ssl_verify": False}}))
    assert modified["modify_container_registry"]["container_registry"]["config"] == {
        "url": "https://" + host, "type": "docker", "project": ["stable", "community"], "username": "bot",
        "password": None, "ssl_verify": False}
    missing = await env.ok(MODIFY_REG_Q, {"hostname": "nope.example.com", "props": {"ssl_verify": True}})
    assert missing["modify_container_registry"]["ok"] is False

    # not a superadmin: refused with a GraphQL error and null data, etcd unchanged
    before = await env.etcd.get_prefix("config/docker/registry/")
    for who in (env.domain_admin.creds, env.user.creds):
        body = await env.gql(who, DELETE_REG_Q, {"hostname": host})
        assert body["data"] == {"delete_container_registry": None} and body["errors"]
        body = await env.gql(who, CREATE_REG_Q, {"hostname": "x.example.com",
                                                 "props": {"url": "https://x.example.com", "type": "docker"}})
        assert body["data"] == {"create_container_registry": None} and body["errors"]
        body = await env.gql(who, REGS_Q)
        assert body["data"] == {"container_registries": None} and body["errors"]
    assert await env.etcd.get_prefix("config/docker/registry/") == before

    bad = await env.gql(env.admin, CREATE_REG_Q, {"hostname": "bad host/", "props": {"url": "x", "type": "docker"}})
    assert bad["data"] == {"create_container_registry": None} and "hostname" in bad["errors"][0]["message"]

    deleted = (await env.ok(DELETE_REG_Q, {"hostname": host}))["delete_container_registry"]
    assert deleted == {"ok": True, "msg": "", "container_registry": {"hostname": host}}
    assert await env.etcd.get_prefix(f"config/docker/registry/{quoted}") == {}
    assert (await env.ok(REG_Q, {"h": host}))["container_registry"] is None


async def test_rescan_finds_the_pushed_image_with_its_labels(env: Env) -> None:
    reg = env.registry
    await add_registry(env, reg.hostname, reg.url)
    out, events = await rescan(env, reg.hostname)
    assert out["ok"] is True and uuid.UUID(out["task_id"])
    names = [name for name, _ in events]
    assert names[-2:] == ["bgtask_done", "server_close"], events
    done = events[-2][1]
    assert done["task_id"] == out["task_id"]
    assert done["message"] == f"{reg.hostname}: 1 added, 0 updated, 0 removed"
    assert done["current_progress"] == done["total_progress"] == 1

    listed = (await env.ok(CLIENT_LIST_Q, {"is_operation": False}))["images"]
    ours = [i for i in listed if i["registry"] == reg.hostname]
    assert len(ours) == 1
    image = ours[0]
    assert image["name"] == REPOSITORY and image["tag"] == reg.tag and image["architecture"] == "x86_64"
    assert image["digest"].startswith("sha256:") and image["size_bytes"] > 8 * 2**20 and image["aliases"] == []
    got = (await env.ok(CLIENT_GET_Q, {"reference": reg.image, "architecture": "x86_64"}))["image"]
    assert got == image

    full = (await env.ok(f"query($r: String) {{ image(reference: $r) {{ {FULL_IMAGE} }} }}", {"r": reg.image}))["image"]
    labels = {kv["key"]: kv["value"] for kv in full["labels"]}
    assert labels["ai.backend.kernelspec"] == "1" and labels["ai.backend.runtime-path"] == "/usr/bin/python3"
    assert all(labels[k] == v for k, v in EXTRA_LABELS.items())
    assert full["supported_accelerators"] == ["cuda"] and full["is_local"] is False
    assert {"key": "mem", "min": str(320 * 2**20), "max": "Infinity"} in full["resource_limits"]
    assert {"key": "cpu", "min": "1", "max": "Infinity"} in full["resource_limits"]
    assert full["installed"] is False and full["installed_agents"] == []

    # a second scan finds the same image: updated, nothing added or removed
    _, events = await rescan(env, reg.hostname)
    assert events[-2][1]["message"] == f"{reg.hostname}: 0 added, 1 updated, 0 removed"


async def test_rescan_with_credentials(env: Env) -> None:
    reg = env.registry
    url = f"http://{reg.auth_hostname}"
    await add_registry(env, reg.auth_hostname, url, username=reg.username, password="wrong")
    out, _ = await rescan(env, reg.auth_hostname)
    assert out["ok"] is False and "refused our credentials" in out["msg"] and out["task_id"] is None

    await env.ok(MODIFY_REG_Q, {"hostname": reg.auth_hostname, "props": {"password": reg.password}})
    out, events = await rescan(env, reg.auth_hostname)
    assert out["ok"] is True, out
    assert events[-2] == ("bgtask_done", {"task_id": out["task_id"], "current_progress": 1, "total_progress": 1,
                                          "message": f"{reg.auth_hostname}: 1 added, 0 updated, 0 removed"})
    got = (await env.ok(CLIENT_GET_Q, {"reference": f"{reg.auth_hostname}/{REPOSITORY}:{reg.tag}",
                                       "architecture": "x86_64"}))["image"]
    assert got["registry"] == reg.auth_hostname and got["name"] == REPOSITORY


async def test_alias_dealias_forget(env: Env) -> None:
    reg = env.registry
    await add_registry(env, reg.hostname, reg.url)  # no-op when an earlier test added it
    await rescan(env, reg.hostname)
    alias = f"py-{secrets.token_hex(3)}"
    out = (await env.ok(CLIENT_ALIAS_Q, {"alias": alias, "target": reg.image}))["alias_image"]
    assert out == {"ok": True, "msg": ""}
    got = (await env.ok(CLIENT_GET_Q, {"reference": alias, "architecture": "x86_64"}))["image"]
    assert got["registry"] == reg.hostname and got["aliases"] == [alias]
    again = (await env.ok(CLIENT_ALIAS_Q, {"alias": alias, "target": reg.image}))["alias_image"]
    assert again["ok"] is False and "already exists" in again["msg"]
    nothing = (await env.ok(CLIENT_ALIAS_Q, {"alias": "x-" + alias, "target": "no/such:image"}))["alias_image"]
    assert nothing["ok"] is False and "no image" in nothing["msg"]

    assert (await env.ok(CLIENT_DEALIAS_Q, {"alias": alias}))["dealias_image"] == {"ok": True, "msg": ""}
    assert (await env.ok(CLIENT_GET_Q, {"reference": alias, "architecture": "x86_64"}))["image"] is None
    gone = (await env.ok(CLIENT_DEALIAS_Q, {"alias": alias}))["dealias_image"]
    assert gone["ok"] is False and "no alias" in gone["msg"]

    await env.ok(CLIENT_ALIAS_Q, {"alias": alias, "target": reg.image})
    out = (await env.ok(CLIENT_FORGET_Q, {"reference": reg.image, "architecture": "x86_64"}))["forget_image"]
    assert out == {"ok": True, "msg": ""}
    assert (await env.ok(CLIENT_GET_Q, {"reference": reg.image, "architecture": "x86_64"}))["image"] is None
    async with env.db.engine.connect() as conn:  # its alias went with it
        assert await conn.scalar(sa.select(sa.func.count()).select_from(t.image_aliases)
                                 .where(t.image_aliases.c.alias == alias)) == 0
    again = (await env.ok(CLIENT_FORGET_Q, {"reference": reg.image, "architecture": "x86_64"}))["forget_image"]
    assert again["ok"] is False
    _, events = await rescan(env, reg.hostname)  # the registry still has it: a rescan brings it back
    assert "1 added" in events[-2][1]["message"]


async def test_non_superadmins_change_nothing(env: Env) -> None:
    reg = env.registry
    await add_registry(env, reg.hostname, reg.url)
    await rescan(env, reg.hostname)
    await env.ok(CLIENT_ALIAS_Q, {"alias": "keep-me", "target": reg.image})
    before = await env.image_rows()
    for who in (env.domain_admin.creds, env.user.creds):
        for query, variables, field in (
            (CLIENT_RESCAN_Q, {"registry": reg.hostname}, "rescan_images"),
            (CLIENT_ALIAS_Q, {"alias": "evil", "target": reg.image}, "alias_image"),
            (CLIENT_DEALIAS_Q, {"alias": "keep-me"}, "dealias_image"),
            (CLIENT_FORGET_Q, {"reference": reg.image, "architecture": "x86_64"}, "forget_image"),
        ):
            body = await env.gql(who, query, variables)
            assert body["data"] == {field: None}, body
            assert "superadmin" in body["errors"][0]["message"]
    assert await env.image_rows() == before

    # what they may read: local images and their domain's allowed registries only; agents to admins
    listed = (await env.gql(env.user.creds, f"query {{ images {{ {FULL_IMAGE} }} }}"))["data"]["images"]
    assert all(i["registry"] == "bai.local" for i in listed)
    assert (await env.gql(env.user.creds, CLIENT_GET_Q, {"reference": reg.image, "architecture": "x86_64"}
                          ))["data"]["image"] is None
    async with env.db.engine.begin() as conn:
        await conn.execute(t.domains.update().where(t.domains.c.name == "default")
                           .values(allowed_docker_registries=[reg.hostname]))
    try:
        q = f"query($r: String) {{ image(reference: $r) {{ {FULL_IMAGE} }} }}"
        as_user = (await env.gql(env.user.creds, q, {"r": reg.image}))["data"]["image"]
        assert as_user["registry"] == reg.hostname and as_user["installed_agents"] is None
        as_admin = (await env.gql(env.domain_admin.creds, q, {"r": reg.image}))["data"]["image"]
        assert as_admin["installed_agents"] == []
    finally:
        async with env.db.engine.begin() as conn:
            await conn.execute(t.domains.update().where(t.domains.c.name == "default")
                               .values(allowed_docker_registries=[]))

    # a task is followed only by whoever started it (and superadmins)
    out = (await env.ok(CLIENT_RESCAN_Q, {"registry": reg.hostname}))["rescan_images"]
    assert await env.events(env.user.creds, out["task_id"]) == [("status", 404)]
    assert (await env.events(env.admin, out["task_id"]))[-1][0] == "server_close"


async def test_registry_down_is_a_clear_error_and_keeps_the_images(env: Env, tmp_path: Any) -> None:
    reg = env.registry
    # a second registry process over the same storage, scanned once, then stopped
    proc, port = start_registry(tmp_path, reg.storage)
    host = f"127.0.0.1:{port}"
    try:
        await add_registry(env, host, f"http://{host}")
        _, events = await rescan(env, host)
        assert events[-2][1]["message"] == f"{host}: 1 added, 0 updated, 0 removed"
    finally:
        stop(proc)
    before = await env.image_rows()
    out, _ = await rescan(env, host)
    assert out["ok"] is False and out["task_id"] is None
    assert out["msg"].startswith(f"cannot reach the registry at http://{host}/"), out
    assert await env.image_rows() == before
    listed = (await env.ok(CLIENT_LIST_Q, {"is_operation": False}))["images"]
    assert [i["tag"] for i in listed if i["registry"] == host] == [reg.tag]

    # nothing listens at all, and an unknown registry name
    nowhere = f"127.0.0.1:{free_port()}"
    await add_registry(env, nowhere, f"http://{nowhere}")
    out, _ = await rescan(env, nowhere)
    assert out["ok"] is False and "cannot reach the registry" in out["msg"]
    out, _ = await rescan(env, "unknown.example.com")
    assert out == {"ok": False, "msg": "no registry 'unknown.example.com' is configured", "task_id": None}
    assert await env.image_rows() == before


async def test_untag_image_from_registry(env: Env, tmp_path: Any) -> None:
    # a registry of its own (a copy of the test registry's storage): deleting there spares the others
    storage = tmp_path / "storage"
    await asyncio.to_thread(shutil.copytree, env.registry.storage, storage)
    proc, port = start_registry(tmp_path, storage)
    host = f"127.0.0.1:{port}"
    image = f"{host}/{REPOSITORY}:{env.registry.tag}"
    try:
        await add_registry(env, host, f"http://{host}")
        await rescan(env, host)
        image_id = (await env.ok("query($r: String) { image(reference: $r) { id } }", {"r": image}))["image"]["id"]
        q = "mutation($id: String!) { untag_image_from_registry(id: $id) { ok msg } }"
        for who in (env.domain_admin.creds, env.user.creds):
            body = await env.gql(who, q, {"id": image_id})
            assert body["data"] == {"untag_image_from_registry": None} and body["errors"]
        assert (await env.ok(q, {"id": image_id}))["untag_image_from_registry"] == {"ok": True, "msg": ""}
        assert (await env.ok(CLIENT_GET_Q, {"reference": image, "architecture": "x86_64"}))["image"] is None
        again = (await env.ok(q, {"id": image_id}))["untag_image_from_registry"]
        assert again["ok"] is False and "no registry image" in again["msg"]
        # gone from the registry: a rescan finds nothing there
        _, events = await rescan(env, host)
        assert events[-2][1]["message"] == f"{host}: 0 added, 0 updated, 0 removed"
        # the shared test registry still has its image
        listed = (await env.ok(CLIENT_LIST_Q, {"is_operation": False}))["images"]
        assert any(i["registry"] == env.registry.hostname for i in listed)
    finally:
        stop(proc)
