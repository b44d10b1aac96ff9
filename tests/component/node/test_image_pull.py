"""An image that exists only in a registry: the agent pulls it when a session needs it, the
session shows PULLING with ``pulling N%`` in its status info and reaches RUNNING; a missing image
or a registry that is down fails the session with a clear status and leaves nothing behind.

Docker pulls through a small proxy in front of the real registry that sends blobs at a limited
rate (a slow network), so the pull lasts long enough for its progress to be seen."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiodocker
import aiohttp
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from aiodocker.exceptions import DockerError
from aiohttp import web

from bai.common.events import REDIS_DB_STREAM, STREAM_KEY
from bai.manager.store import tables as t
from tests.fixtures.halfstack import free_port
from tests.fixtures.registry import REPOSITORY, Registry

from .conftest import Node
from .test_sessions import containers, wait_status

#: Blob bytes per second through the proxy: the 8 MiB layer takes about 4 s.
RATE = 2 * 2**20
CHUNK = 64 * 2**10


@pytest.fixture(scope="module")
async def slow_registry(docker_registry: Registry) -> AsyncIterator[str]:
    """``127.0.0.1:<port>``: the registry behind a proxy that throttles what it sends back."""
    session = aiohttp.ClientSession(auto_decompress=False)

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with session.request(request.method, f"{docker_registry.url}{request.rel_url}", headers=headers,
                                   data=await request.read(), allow_redirects=False) as upstream:
            resp = web.StreamResponse(status=upstream.status, headers={
                k: v for k, v in upstream.headers.items() if k.lower() not in ("transfer-encoding", "connection")})
            await resp.prepare(request)
            async for chunk in upstream.content.iter_chunked(CHUNK):
                await resp.write(chunk)
                if "/blobs/" in request.path:
                    await asyncio.sleep(len(chunk) / RATE)  # the slow network this test needs
            await resp.write_eof()
            return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await session.close()


async def gql(node: Node, query: str, variables: dict[str, Any] | None = None) -> Any:
    status, body = await node.call("POST", "/admin/gql", {"query": query, "variables": variables or {}})
    assert status == 200 and "errors" not in body, body
    return body["data"]


@pytest.fixture(scope="module")
async def pullable(node: Node, docker_registry: Registry, slow_registry: str) -> str:
    """The canonical name of the registry's image (through the slow proxy), configured and
    scanned through GraphQL and known to the manager, absent from the local Docker."""
    image = f"{slow_registry}/{REPOSITORY}:{docker_registry.tag}"
    await registered(node, slow_registry, image)
    await remove_local(image)
    return image


async def registered(node: Node, host: str, image: str) -> None:
    created = await gql(node, "mutation($h: String!, $u: String!) { create_container_registry(hostname: $h, "
                              "props: {url: $u, type: \"docker\"}) { ok msg } }", {"h": host, "u": f"http://{host}"})
    assert created["create_container_registry"]["ok"], created
    out = (await gql(node, "mutation($r: String) { rescan_images(registry: $r) { ok msg task_id } }",
                     {"r": host}))["rescan_images"]
    assert out["ok"], out
    q = "query($r: String) { image(reference: $r) { registry installed } }"
    loop = asyncio.get_running_loop()
    end = loop.time() + 60
    while (await gql(node, q, {"r": image}))["image"] is None:
        assert loop.time() < end, "the rescan never found the image"
        await asyncio.sleep(0.1)


async def remove_local(image: str) -> None:
    async with aiodocker.Docker() as docker:
        try:
            await docker.images.delete(image, force=True)
        except DockerError as exc:
            if exc.status != 404:
                raise


async def stream_events(node: Node, kernel_id: str) -> list[tuple[str, dict[str, Any]]]:
    redis = aioredis.Redis.from_url(f"redis://{node.redis_addr}/{REDIS_DB_STREAM}")
    try:
        entries = await redis.xrange(STREAM_KEY)
    finally:
        await redis.aclose()
    found = []
    for _id, fields in entries:
        args = json.loads(fields[b"args"])
        if args.get("kernel_id") == kernel_id:
            found.append((fields[b"name"].decode(), args))
    return found


async def allow(node: Node, *registries: str) -> None:
    async with node.db.begin() as conn:
        await conn.execute(t.domains.update().where(t.domains.c.name == "default")
                           .values(allowed_docker_registries=list(registries)))


async def test_session_pulls_a_registry_image_with_progress(node: Node, pullable: str, slow_registry: str) -> None:
    image = pullable
    # the domain does not allow the registry yet: refused before anything is queued
    st, body = await node.call("POST", "/session", {"name": f"p-{secrets.token_hex(4)}", "image": image})
    assert st == 403 and "not allowed in the domain 'default'" in body["msg"], body
    await allow(node, slow_registry)

    name = f"p-{secrets.token_hex(4)}"
    seen: list[str] = []

    async def watch() -> None:
        while True:
            async with node.db.connect() as conn:
                row = (await conn.execute(sa.select(t.sessions.c.status, t.sessions.c.status_info)
                                          .where(t.sessions.c.name == name))).first()
            if row is not None and (not seen or seen[-1] != f"{row.status} {row.status_info}"):
                seen.append(f"{row.status} {row.status_info}")
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    try:
        st, body = await node.call("POST", "/session", {"name": name, "image": image,
                                                        "config": {"resources": {"cpu": "1", "mem": "320m"}}})
    finally:
        watcher.cancel()
    assert st == 201 and body["status"] == "RUNNING", body
    sid = body["sessionId"]

    # it was PULLING, with progress in its status info, on its way to RUNNING
    percents = [int(s.split()[-1].rstrip("%")) for s in seen if s.startswith("PULLING pulling ") and s.endswith("%")]
    assert percents and all(0 <= p <= 100 for p in percents) and percents == sorted(percents), seen
    assert any(0 < p < 100 for p in percents), seen
    async with node.db.connect() as conn:
        history = await conn.scalar(sa.select(t.sessions.c.status_history).where(t.sessions.c.id == sid))
        kernel_id = str(await conn.scalar(sa.select(t.kernels.c.id).where(t.kernels.c.session_id == sid)))
    assert {"PREPARING", "PULLING", "RUNNING"} <= set(history)
    events = await stream_events(node, kernel_id)
    names = [n for n, _ in events]
    assert names.index("kernel_pulling") < names.index("kernel_pull_progress") < names.index("kernel_started")
    last = [a for n, a in events if n == "kernel_pull_progress"][-1]
    assert last["current_progress"] == last["total_progress"] > 8 * 2**20

    st, res = await node.call("POST", f"/session/{name}", {"mode": "query", "code": "print(6*7)", "runId": None})
    assert st == 200 and res["result"]["console"] == [["stdout", "42\n"]]
    async with aiodocker.Docker() as docker:
        assert (await docker.images.inspect(image))["Id"].startswith("sha256:")

    # the agent's next heartbeats tell the manager it has the image now
    loop = asyncio.get_running_loop()
    end = loop.time() + 20
    q = "query($r: String) { image(reference: $r) { installed installed_agents } }"
    while not (got := (await gql(node, q, {"r": image}))["image"])["installed"]:
        assert loop.time() < end, got
        await asyncio.sleep(0.1)
    assert node.agent.agent is not None and got["installed_agents"] == [node.agent.agent.id]
    assert (await node.call("DELETE", f"/session/{name}"))[0] == 200


async def _failing_session(node: Node, image: str, reference: str) -> tuple[str, Any]:
    """A session of ``image`` (known to the manager, absent here and from the registry): its
    final status, status info and data; no container, kernel or slot remains."""
    async with node.db.begin() as conn:
        labels = await conn.scalar(sa.select(t.images.c.labels).where(t.images.c.name == reference))
        await conn.execute(sa.insert(t.images).values(
            id=uuid.uuid4(), name=image, architecture="x86_64", registry=image.split("/")[0],
            tag=image.rsplit(":", 1)[1], labels=labels, is_local=False))
    await remove_local(image)
    name = f"f-{secrets.token_hex(4)}"
    st, body = await node.call("POST", "/session", {"name": name, "image": image,
                                                    "config": {"resources": {"cpu": "1", "mem": "320m"}}})
    assert st == 201, body
    sid = body["sessionId"]
    assert await wait_status(node, sid, {"CANCELLED", "ERROR"}) == "CANCELLED"
    assert await containers(sid) == []
    assert node.agent.agent is not None
    assert all(k["session_id"] != sid for k in node.agent.agent.list_kernels())
    async with node.db.connect() as conn:
        row = (await conn.execute(sa.select(t.sessions).where(t.sessions.c.id == sid))).one()
        occupied = await conn.scalar(sa.select(t.agents.c.occupied_slots))
    assert all(v in ("0", 0) for v in (occupied or {}).values()), occupied
    return row.status_info, row.status_data


async def test_missing_image_fails_the_session_clearly(node: Node, pullable: str, slow_registry: str) -> None:
    reference = pullable
    missing = f"{slow_registry}/{REPOSITORY}:no-such-tag"
    await allow(node, slow_registry)
    info, data = await _failing_session(node, missing, reference)
    assert info == "image-pull-failed"
    assert data["error"]["repr"].startswith(f"cannot pull {missing}: "), data
    assert "not found" in data["error"]["repr"] or "unknown" in data["error"]["repr"], data


async def test_registry_down_fails_the_session_clearly(node: Node, pullable: str, slow_registry: str) -> None:
    reference = pullable
    down = f"127.0.0.1:{free_port()}"
    await allow(node, slow_registry, down)
    image = f"{down}/{REPOSITORY}:{reference.rsplit(':', 1)[1]}"
    # configured (so agents pull its images: scheduling/images.py ``pullable``), then down
    created = await gql(node, "mutation($h: String!, $u: String!) { create_container_registry(hostname: $h, "
                              "props: {url: $u, type: \"docker\"}) { ok msg } }", {"h": down, "u": f"http://{down}"})
    assert created["create_container_registry"]["ok"], created
    try:
        info, data = await _failing_session(node, image, reference)
    finally:
        await gql(node, "mutation($h: String!) { delete_container_registry(hostname: $h) { ok } }", {"h": down})
    assert info == "image-pull-failed"
    assert data["error"]["repr"].startswith(f"cannot pull {image}: "), data
    assert "connection refused" in data["error"]["repr"], data


async def test_pull_with_the_registry_credentials(node: Node, docker_registry: Registry) -> None:
    """The manager hands the agent the registry's credentials from etcd; wrong ones fail the pull."""
    host = docker_registry.auth_hostname
    image = f"{host}/{REPOSITORY}:{docker_registry.tag}"
    created = await gql(node, "mutation($h: String!, $p: CreateContainerRegistryInput!) { create_container_registry("
                              "hostname: $h, props: $p) { ok msg } }",
                        {"h": host, "p": {"url": f"http://{host}", "type": "docker", "username": docker_registry.username,
                                          "password": docker_registry.password}})
    assert created["create_container_registry"]["ok"], created
    out = (await gql(node, "mutation($r: String) { rescan_images(registry: $r) { ok msg } }", {"r": host}))
    assert out["rescan_images"]["ok"], out
    loop = asyncio.get_running_loop()
    end = loop.time() + 60
    while (await gql(node, "query($r: String) { image(reference: $r) { tag } }", {"r": image}))["image"] is None:
        assert loop.time() < end, "the rescan never found the image"
        await asyncio.sleep(0.1)
    await allow(node, host)

    await remove_local(image)
    name = f"a-{secrets.token_hex(4)}"
    st, body = await node.call("POST", "/session", {"name": name, "image": image,
                                                    "config": {"resources": {"cpu": "1", "mem": "320m"}}})
    assert st == 201 and body["status"] == "RUNNING", body
    assert (await node.call("DELETE", f"/session/{name}"))[0] == 200

    await gql(node, "mutation($h: String!) { modify_container_registry(hostname: $h, props: {password: \"wrong\"}) "
                    "{ ok } }", {"h": host})
    await remove_local(image)
    name = f"a-{secrets.token_hex(4)}"
    st, body = await node.call("POST", "/session", {"name": name, "image": image,
                                                    "config": {"resources": {"cpu": "1", "mem": "320m"}}})
    assert st == 201 and body["status"] == "CANCELLED", body
    async with node.db.connect() as conn:
        row = (await conn.execute(sa.select(t.sessions).where(t.sessions.c.id == body["sessionId"]))).one()
    assert row.status_info == "image-pull-failed"
    assert row.status_data["error"]["repr"].startswith(f"cannot pull {image}: "), row.status_data
    assert await containers(body["sessionId"]) == []


async def test_a_projects_own_registry_is_allowed_for_its_sessions(node: Node, pullable: str,
                                                                   slow_registry: str) -> None:
    """``container_registry`` of a project (GraphQL modify_group) allows its sessions that
    registry's images even when the domain does not; unset, they are refused again."""
    await allow(node)  # the domain allows no registry
    projects = (await gql(node, '{ groups(domain_name: "default") { id name container_registry } }'))["groups"]
    gid = next(g["id"] for g in projects if g["name"] == "default")
    modify = ("mutation($g: UUID!, $p: ModifyGroupInput!) { modify_group(gid: $g, props: $p) "
              "{ ok msg group { container_registry } } }")

    async def set_registry(value: Any) -> Any:
        return (await gql(node, modify, {"g": gid, "p": {"container_registry": json.dumps(value)}}))["modify_group"]

    bad = await node.call("POST", "/admin/gql", {"query": modify, "variables": {
        "g": gid, "p": {"container_registry": json.dumps({"registry": 5})}}})
    assert "errors" in bad[1] and "container_registry" in bad[1]["errors"][0]["message"], bad
    out = await set_registry({"registry": slow_registry, "project": "bai-test"})
    assert out["ok"] and json.loads(out["group"]["container_registry"]) == {"registry": slow_registry,
                                                                          "project": "bai-test"}, out
    try:
        name = f"pr-{secrets.token_hex(4)}"
        st, body = await node.call("POST", "/session", {"name": name, "image": pullable,
                                                        "config": {"resources": {"cpu": "1", "mem": "320m"}}})
        assert st == 201 and body["status"] == "RUNNING", body
        assert (await node.call("DELETE", f"/session/{name}"))[0] == 200
    finally:
        out = await set_registry({})
        assert out["ok"] and json.loads(out["group"]["container_registry"]) == {}, out
    st, body = await node.call("POST", "/session", {"name": f"pr-{secrets.token_hex(4)}", "image": pullable})
    assert st == 403 and "container_registry" in body["msg"], body
