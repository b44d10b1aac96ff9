"""``POST /session/{ref}/imagify`` through the real manager and agent: a session saved as an image
only its owner sees, a new session of it finds what the first one wrote; bad input, another
user's session and a session that is not running are refused with problem+json and start nothing."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import aiodocker
import pytest
import sqlalchemy as sa

from bai.manager.store import tables as t
from tests.fixtures.images import KERNEL_IMAGE
from tests.fixtures.registry import Registry

from .conftest import Node

pytestmark = pytest.mark.timeout(240)

PROBS = "https://api.backend.ai/probs/"
MARKER = "/home/work/.imagify-marker.txt"
POLICY = {"total_resource_slots": {}, "max_concurrent_sessions": 5, "max_containers_per_session": 1}


def name() -> str:
    return f"s-{secrets.token_hex(5)}"


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            out.append((fields["event"], json.loads(fields.get("data") or "{}")))
    return out


async def bgtask_events(node: Node, task_id: str, keys: tuple[str, str]) -> list[tuple[str, dict[str, Any]]]:
    async with asyncio.timeout(120):  # the stream ends once the task has
        status, text = await node.call("GET", f"/events/background-task?task_id={task_id}", keys=keys)
    assert status == 200, text
    return sse_events(text)


async def bgtask_count(node: Node) -> int:
    import redis.asyncio as aioredis

    host, _, port = node.redis_addr.rpartition(":")
    async with aioredis.Redis(host=host, port=int(port), db=4) as redis:
        return len([k async for k in redis.scan_iter(match="bgtask.*")])


async def test_imagify_then_a_session_of_the_image(node: Node, owner: tuple[str, str]) -> None:
    other = await node.add_keypair(POLICY)
    first, run = name(), secrets.token_hex(4)
    st, body = await node.call("POST", "/session", {"name": first, "image": "python",
                                                    "config": {"resources": {"cpu": "1", "mem": "320m"},
                                                               "environ": {"MY_TOKEN": run}}}, keys=owner)
    assert st == 201 and body["status"] == "RUNNING", body
    canonical = ""
    try:
        st, res = await node.call("POST", f"/session/{first}",
                                  {"mode": "query", "code": f"open({MARKER!r}, 'w').write('kept {run}')",
                                   "runId": None}, keys=owner)
        assert st == 200 and res["result"]["exitCode"] == 0, res

        # Refused, and no background task started: a bad name, someone else's session (as if it
        # did not exist, or 403 when asked on the owner's behalf), a visibility we do not offer.
        tasks_before = await bgtask_count(node)
        for query, keys, status, kind in [
            ("image_name=bad%20name!", owner, 400, "invalid-api-params"),
            ("image_name=", owner, 400, "invalid-api-params"),
            ("image_name=ok&image_visibility=project", owner, 400, "invalid-api-params"),
            ("image_name=ok", other, 404, "object-not-found"),
            (f"image_name=ok&owner_access_key={owner[0]}", other, 403, "generic-forbidden"),
        ]:
            st, err = await node.call("POST", f"/session/{first}/imagify?{query}", keys=keys)
            assert st == status, (query, err)
            assert node.last_headers["Content-Type"] == "application/problem+json"
            assert err["type"] == PROBS + kind, err
        assert await bgtask_count(node) == tasks_before

        st, started = await node.call("POST", f"/session/{first}/imagify?image_name=my-env.{run}", keys=owner)
        assert st == 200, started
        events = await bgtask_events(node, started["task_id"], owner)
        names = [e for e, _ in events]
        assert names[-2:] == ["bgtask_done", "server_close"], events
        canonical = events[-2][1]["message"]
        assert canonical.startswith("bai.local/stable/python:3.11-debian12-customized_"), canonical
        # Another user may not follow the owner's task.
        assert (await node.call("GET", f"/events/background-task?task_id={started['task_id']}", keys=other))[0] == 404
    finally:
        assert (await node.call("DELETE", f"/session/{first}", keys=owner))[0] == 200

    async with node.db.connect() as conn:
        row = (await conn.execute(sa.select(t.images).where(t.images.c.name == canonical))).one()
        owner_uuid = await conn.scalar(sa.select(t.keypairs.c.user).where(t.keypairs.c.access_key == owner[0]))
    assert row.labels["ai.backend.customized-image.owner"] == f"user:{owner_uuid}"
    assert row.labels["ai.backend.customized-image.name"] == f"my-env.{run}"
    assert row.labels["ai.backend.kernelspec"] == "1" and row.installed_agents == [node.agent.config.agent.id]
    # The image keeps its base's run settings and not the values of the session's environment
    # (its ids, the user's variables: maybe secrets), nor the agent's command.
    async with aiodocker.Docker() as docker:
        saved = (await docker.images.inspect(canonical))["Config"]
        base = (await docker.images.inspect(KERNEL_IMAGE))["Config"]
    assert saved["Env"][:len(base["Env"])] == base["Env"], saved["Env"]
    added = saved["Env"][len(base["Env"]):]
    assert "MY_TOKEN=" in added and all(item.endswith("=") for item in added), saved["Env"]
    assert not any(run in item for item in saved["Env"])
    assert (saved.get("Cmd"), saved.get("Entrypoint")) == (base.get("Cmd"), base.get("Entrypoint")), saved

    # Only the owner sees it and starts sessions from it.
    query = {"query": "{ images { name tag } }"}
    mine = (await node.call("POST", "/admin/gql", query, keys=owner))[1]["data"]["images"]
    theirs = (await node.call("POST", "/admin/gql", query, keys=other))[1]["data"]["images"]
    assert any(i["tag"] == canonical.rpartition(":")[2] for i in mine)
    assert not any(i["tag"] == canonical.rpartition(":")[2] for i in theirs)
    st, err = await node.call("POST", "/session", {"name": name(), "image": canonical}, keys=other)
    assert st == 404 and err["type"] == PROBS + "object-not-found", err

    second = name()
    st, body = await node.call("POST", "/session", {"name": second, "image": canonical,
                                                    "config": {"resources": {"cpu": "1", "mem": "320m"}}},
                               keys=owner)
    assert st == 201 and body["status"] == "RUNNING", body
    try:
        st, res = await node.call("POST", f"/session/{second}",
                                  {"mode": "query", "code": f"print(1); print(open({MARKER!r}).read())",
                                   "runId": None}, keys=owner)
        assert res["result"]["console"] == [["stdout", f"1\nkept {run}\n"]], res
        # Committing under the same name again replaces that image (same reference).
        st, again = await node.call("POST", f"/session/{second}/imagify?image_name=my-env.{run}", keys=owner)
        assert st == 200, again
        events = await bgtask_events(node, again["task_id"], owner)
        assert events[-2] == ("bgtask_done", {**events[-2][1], "message": canonical}), events
    finally:
        assert (await node.call("DELETE", f"/session/{second}", keys=owner))[0] == 200

    # The official `image list --customized` and `image forget`: the owner's own, only theirs.
    listing = {"query": "{ customized_images { id tag labels { key value } } }"}
    [own] = (await node.call("POST", "/admin/gql", listing, keys=owner))[1]["data"]["customized_images"]
    assert own["tag"] == canonical.rpartition(":")[2]
    assert {"key": "ai.backend.customized-image.name", "value": f"my-env.{run}"} in own["labels"]
    assert (await node.call("POST", "/admin/gql", listing, keys=other))[1]["data"]["customized_images"] == []
    forget = {"query": "mutation($i: String!) { forget_image_by_id(image_id: $i) { ok msg } }",
              "variables": {"i": own["id"]}}
    st, out = await node.call("POST", "/admin/gql", forget, keys=other)
    assert out.get("errors") and "superadmin" in out["errors"][0]["message"], out
    st, out = await node.call("POST", "/admin/gql", forget, keys=owner)
    assert out["data"]["forget_image_by_id"] == {"ok": True, "msg": ""}, out
    async with node.db.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).where(t.images.c.id == own["id"])) == 0


async def test_imagify_needs_a_running_session(node: Node, owner: tuple[str, str]) -> None:
    pending = name()
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    st, body = await node.call("POST", "/session", {"name": pending, "image": "python", "type": "batch",
                                                    "startupCommand": "true", "startsAt": later,
                                                    "enqueueOnly": True}, keys=owner)
    assert st == 201 and body["status"] == "PENDING", body
    try:
        st, err = await node.call("POST", f"/session/{pending}/imagify?image_name=x", keys=owner)
        assert st == 400 and err["type"] == PROBS + "invalid-api-params" and "not running" in err["msg"], err
        st, err = await node.call("POST", "/session/no-such-session/imagify?image_name=x", keys=owner)
        assert st == 404 and node.last_headers["Content-Type"] == "application/problem+json", err
    finally:
        assert (await node.call("DELETE", f"/session/{pending}", keys=owner))[0] == 200


async def test_commit_to_a_tar_on_the_agent(node: Node, owner: tuple[str, str]) -> None:
    """The older ``session commit``: an image tar under the agent's image-commit-path."""
    session = name()
    st, body = await node.call("POST", "/session", {"name": session, "image": "python"}, keys=owner)
    assert st == 201 and body["status"] == "RUNNING", body
    async with node.db.connect() as conn:
        email = await conn.scalar(sa.select(t.keypairs.c.user_id).where(t.keypairs.c.access_key == owner[0]))
    folder = node.agent.config.agent.image_commit_path / str(email)
    try:
        st, err = await node.call("POST", f"/session/{session}/commit?fname=../x", keys=owner)
        assert st == 400 and err["type"] == PROBS + "invalid-api-params", err
        st, started = await node.call("POST", f"/session/{session}/commit?fname=mine", keys=owner)
        assert st == 201 and started["path"] == f"{email}/mine.tar", started
        events = await bgtask_events(node, started["bgtask_id"], owner)
        assert events[-2] == ("bgtask_done", {**events[-2][1], "message": str(folder / "mine.tar")}), events
        assert (folder / "mine.tar").stat().st_size > 0
        st, status = await node.call("GET", f"/session/{session}/commit", keys=owner)
        assert st == 200 and status == {"status": "ready", "kernel": started["kernel"]}, status
        # The same file again: the agent refuses to overwrite it, and the task says so.
        st, again = await node.call("POST", f"/session/{session}/commit?fname=mine", keys=owner)
        assert st == 201, again
        events = await bgtask_events(node, again["bgtask_id"], owner)
        assert events[-2][0] == "bgtask_failed" and "exists already" in events[-2][1]["message"], events
    finally:
        assert (await node.call("DELETE", f"/session/{session}", keys=owner))[0] == 200
        for leftover in folder.glob("*") if folder.exists() else []:
            leftover.unlink()
        if folder.exists():
            folder.rmdir()


async def test_imagify_pushes_to_the_projects_registry(node: Node, owner: tuple[str, str],
                                                       docker_registry: Registry) -> None:
    """With a configured registry of the session's project, the image is pushed there (with the
    registry's credentials) and a session of it pulls it on an agent that lacks it."""
    host = docker_registry.auth_hostname
    status, created = await node.call("POST", "/admin/gql", {
        "query": "mutation($h: String!, $p: CreateContainerRegistryInput!) { create_container_registry("
                 "hostname: $h, props: $p) { ok msg } }",
        "variables": {"h": host, "p": {"url": f"http://{host}", "type": "docker", "username": docker_registry.username,
                                       "password": docker_registry.password}}})
    assert status == 200 and created["data"]["create_container_registry"]["ok"], created
    groups = t.groups.update().where(t.groups.c.name == "default")
    async with node.db.begin() as conn:
        await conn.execute(groups.values(container_registry={"registry": host, "project": "bai-test"}))
    first, second, run = name(), name(), secrets.token_hex(4)
    try:
        st, body = await node.call("POST", "/session", {"name": first, "image": "python"}, keys=owner)
        assert st == 201 and body["status"] == "RUNNING", body
        try:
            st, res = await node.call("POST", f"/session/{first}", {
                "mode": "query", "code": f"open({MARKER!r}, 'w').write('pushed {run}')", "runId": None}, keys=owner)
            assert res["result"]["exitCode"] == 0, res
            st, started = await node.call("POST", f"/session/{first}/imagify?image_name=pushed", keys=owner)
            assert st == 200, started
            events = await bgtask_events(node, started["task_id"], owner)
            assert events[-2][0] == "bgtask_done", events
        finally:
            assert (await node.call("DELETE", f"/session/{first}", keys=owner))[0] == 200
        canonical = events[-2][1]["message"]
        assert canonical.startswith(f"{host}/bai-test/python:3.11-debian12-customized_"), canonical
        tags = await asyncio.to_thread(_registry_tags, docker_registry, "bai-test/python")
        assert canonical.rpartition(":")[2] in tags

        # Gone from this agent: the session's agent pulls it from the registry, credentials and all.
        async with aiodocker.Docker() as docker:
            await docker.images.delete(canonical, force=True)
        st, body = await node.call("POST", "/session", {"name": second, "image": canonical}, keys=owner)
        assert st == 201 and body["status"] == "RUNNING", body
        st, res = await node.call("POST", f"/session/{second}", {
            "mode": "query", "code": f"print(open({MARKER!r}).read())", "runId": None}, keys=owner)
        assert res["result"]["console"] == [["stdout", f"pushed {run}\n"]], res
    finally:
        await node.call("DELETE", f"/session/{second}", keys=owner)
        async with node.db.begin() as conn:
            await conn.execute(groups.values(container_registry=None))
        await node.call("POST", "/admin/gql", {
            "query": "mutation($h: String!) { delete_container_registry(hostname: $h) { ok } }",
            "variables": {"h": host}})


def _registry_tags(registry: Registry, repository: str) -> list[str]:
    request = urllib.request.Request(f"http://{registry.auth_hostname}/v2/{repository}/tags/list")
    token = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as resp:
        return list(json.load(resp)["tags"])
