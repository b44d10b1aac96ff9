"""Forgetting a customized image removes it from the agent that holds it (the real manager, agent
and Docker): refused, naming the agent, while a session uses it (row and image kept); once the
session is gone it leaves Docker and the database, and the agent's later heartbeats do not bring
it back. The agent's ``remove_image`` refuses kernel images; a kernel image's forget leaves it on
the agent, which registers it again."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import subprocess
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiodocker
import pytest
import sqlalchemy as sa
from aiodocker.exceptions import DockerError

from bai.common import etcd as etcd_mod
from bai.common.agent_rpc import AgentClient, InvalidInput
from bai.manager.store import tables as t
from tests.fixtures.images import KERNEL_IMAGE

from .conftest import Node

pytestmark = pytest.mark.timeout(180)

POLICY = {"total_resource_slots": {}, "max_concurrent_sessions": 5, "max_containers_per_session": 1}
RESOURCES = {"resources": {"cpu": "1", "mem": "320m"}}
FORGET_BY_ID = "mutation($i: String!) { forget_image_by_id(image_id: $i) { ok msg } }"
FORGET = "mutation($r: String!) { forget_image(reference: $r, architecture: \"x86_64\") { ok msg } }"


def name() -> str:
    return f"s-{secrets.token_hex(5)}"


async def gql(node: Node, query: str, keys: tuple[str, str] | None = None, **variables: Any) -> Any:
    status, body = await node.call("POST", "/admin/gql", {"query": query, "variables": variables}, keys=keys)
    assert status == 200 and not body.get("errors"), body
    return body["data"]


async def until(check: Any, what: str, deadline: float = 20.0) -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not (found := await check()):
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return found


async def image_row(node: Node, canonical: str) -> Any:
    async with node.db.connect() as conn:
        return (await conn.execute(sa.select(t.images).where(t.images.c.name == canonical))).first()


async def in_docker(canonical: str) -> bool:
    async with aiodocker.Docker() as docker:
        try:
            await docker.images.inspect(canonical)
        except DockerError as exc:
            if exc.status == 404:
                return False
            raise
    return True


async def last_heartbeat(node: Node) -> datetime:
    async with node.db.connect() as conn:
        seen: datetime = await conn.scalar(sa.select(t.agents.c.last_seen)
                                           .where(t.agents.c.id == node.agent.config.agent.id))
    return seen


async def two_more_heartbeats(node: Node) -> None:
    for _ in range(2):
        before = await last_heartbeat(node)
        await until(lambda b=before: _later(node, b), "the agent's next heartbeat", deadline=15)


async def _later(node: Node, before: datetime) -> bool:
    return await last_heartbeat(node) > before


async def bgtask_message(node: Node, task_id: str, keys: tuple[str, str]) -> str:
    async with asyncio.timeout(120):  # the stream ends once the task has
        status, text = await node.call("GET", f"/events/background-task?task_id={task_id}", keys=keys)
    assert status == 200, text
    events = [dict(line.split(": ", 1) for line in block.splitlines() if ": " in line) for block in text.split("\n\n")]
    done = [e for e in events if e.get("event") in ("bgtask_done", "bgtask_failed")]
    assert done and done[-1]["event"] == "bgtask_done", text
    return str(json.loads(done[-1]["data"])["message"])


@pytest.fixture
async def agent_rpc(node: Node) -> AsyncIterator[AgentClient]:
    conf = node.agent.config
    async with etcd_mod.connect(conf.etcd.addr, conf.etcd.namespace) as etcd:
        secret = await etcd.get("config/agent/rpc-secret")
    assert secret
    async with AgentClient(node.agent.addr, str(secret)) as client:
        yield client


async def test_forgetting_a_customized_image_removes_it_from_its_agent(node: Node, owner: tuple[str, str]) -> None:
    agent_id = node.agent.config.agent.id
    first, second = name(), name()
    st, body = await node.call("POST", "/session", {"name": first, "image": "python", "config": RESOURCES}, keys=owner)
    assert st == 201 and body["status"] == "RUNNING", body
    try:
        st, started = await node.call("POST", f"/session/{first}/imagify?image_name=forget-{secrets.token_hex(3)}",
                                      keys=owner)
        assert st == 200, started
        canonical = await bgtask_message(node, started["task_id"], owner)
    finally:
        assert (await node.call("DELETE", f"/session/{first}", keys=owner))[0] == 200
    row = await image_row(node, canonical)
    assert row is not None and row.installed_agents == [agent_id], row

    # A session of it runs: the agent keeps the image, the manager its row, and the answer says why.
    st, body = await node.call("POST", "/session", {"name": second, "image": canonical, "config": RESOURCES},
                               keys=owner)
    assert st == 201 and body["status"] == "RUNNING", body
    try:
        out = (await gql(node, FORGET_BY_ID, owner, i=str(row.id)))["forget_image_by_id"]
        assert out["ok"] is False and agent_id in out["msg"] and "in use" in out["msg"], out
        assert (await image_row(node, canonical)).id == row.id
        assert await in_docker(canonical)
    finally:
        assert (await node.call("DELETE", f"/session/{second}", keys=owner))[0] == 200

    # The session is gone: so is the image, from Docker and from the database, for good.
    out = (await gql(node, FORGET_BY_ID, owner, i=str(row.id)))["forget_image_by_id"]
    assert out == {"ok": True, "msg": ""}, out
    assert not await in_docker(canonical)
    assert await image_row(node, canonical) is None
    await two_more_heartbeats(node)
    assert await image_row(node, canonical) is None
    # Forgotten already: as for any image that is not there (to its owner: as for another's).
    st, hidden = await node.call("POST", "/admin/gql", {"query": FORGET, "variables": {"r": canonical}}, keys=owner)
    assert "superadmin" in hidden["errors"][0]["message"], hidden
    again = (await gql(node, FORGET, None, r=canonical))["forget_image"]
    assert again["ok"] is False and "no image" in again["msg"], again


async def test_the_agent_removes_customized_images_only(node: Node, agent_rpc: AgentClient) -> None:
    with pytest.raises(InvalidInput) as refused:
        await agent_rpc.remove_image(KERNEL_IMAGE)
    assert refused.value.status == 403 and "customized-image.owner" in refused.value.msg, refused.value
    assert await in_docker(KERNEL_IMAGE)
    # Not there: nothing to do, and it says so.
    assert await agent_rpc.remove_image(f"{KERNEL_IMAGE}-customized_{secrets.token_hex(16)}") is False
    with pytest.raises(InvalidInput) as bad:
        await agent_rpc.remove_image("no tag/../x")
    assert bad.value.status == 400, bad.value

    # A customized image a stopped container still uses stays until that container is gone.
    custom = f"{KERNEL_IMAGE}-customized_{secrets.token_hex(16)}"
    dockerfile = f"FROM {KERNEL_IMAGE}\nLABEL ai.backend.customized-image.owner=user:{secrets.token_hex(4)}\n"
    await asyncio.to_thread(subprocess.run, ["docker", "build", "-q", "-t", custom, "-"], input=dockerfile.encode(),
                            check=True, capture_output=True, timeout=60)
    async with aiodocker.Docker() as docker:
        container = await docker.containers.create({"Image": custom, "Cmd": ["true"]},
                                                   name=f"forget-{secrets.token_hex(4)}")
        try:
            with pytest.raises(InvalidInput) as in_use:
                await agent_rpc.remove_image(custom)
            assert in_use.value.status == 409 and "in use by the created container forget-" in in_use.value.msg, \
                in_use.value
            assert await in_docker(custom)
        finally:
            await container.delete(force=True)
            assert await agent_rpc.remove_image(custom) is True
            assert not await in_docker(custom)


async def test_forgetting_a_kernel_image_leaves_it_on_the_agent(node: Node) -> None:
    """Not a customized image: the row goes, the agent keeps the image and registers it again."""
    plain = f"bai.local/test/forget-plain:{secrets.token_hex(4)}"
    dockerfile = f"FROM {KERNEL_IMAGE}\nLABEL bai.test.forget-image={plain}\n"
    await asyncio.to_thread(subprocess.run, ["docker", "build", "-q", "-t", plain, "-"], input=dockerfile.encode(),
                            check=True, capture_output=True, timeout=60)
    try:
        await until(lambda: image_row(node, plain), "the agent's heartbeat with the image")
        out = (await gql(node, FORGET, None, r=plain))["forget_image"]
        assert out["ok"] is True and node.agent.config.agent.id in out["msg"], out
        assert "register it again" in out["msg"], out
        assert await in_docker(plain)
        await until(lambda: image_row(node, plain), "the image registered again")
    finally:
        await asyncio.to_thread(subprocess.run, ["docker", "rmi", plain], capture_output=True, timeout=60)


async def test_a_pushed_customized_image_is_forgotten_even_while_used(node: Node) -> None:
    """Its registry is configured (agents pull it from there): holders that keep their copy do
    not block the forget, the answer names them; unused copies are removed."""
    host = f"127.0.0.1:{40000 + secrets.randbelow(20000)}"  # configured only: forgetting reads no registry
    pushed = f"{host}/forget/python:3.11-debian12-customized_{secrets.token_hex(16)}"
    dockerfile = f"FROM {KERNEL_IMAGE}\nLABEL ai.backend.customized-image.owner=user:{secrets.token_hex(4)}\n"
    await asyncio.to_thread(subprocess.run, ["docker", "build", "-q", "-t", pushed, "-"], input=dockerfile.encode(),
                            check=True, capture_output=True, timeout=60)
    created = await gql(node, "mutation($h: String!, $u: String!) { create_container_registry(hostname: $h, "
                              "props: {url: $u, type: \"docker\"}) { ok msg } }", h=host, u=f"http://{host}")
    assert created["create_container_registry"]["ok"], created
    async with aiodocker.Docker() as docker:
        container = await docker.containers.create({"Image": pushed, "Cmd": ["true"]},
                                                   name=f"forget-{secrets.token_hex(4)}")
        try:
            await until(lambda: image_row(node, pushed), "the agent's heartbeat with the image")
            out = (await gql(node, FORGET, None, r=pushed))["forget_image"]
            assert out["ok"] is True and node.agent.config.agent.id in out["msg"] and "in use" in out["msg"], out
            assert await in_docker(pushed)
            await container.delete(force=True)
            # The agent still holds it, so its heartbeat registered it again; now nothing uses it.
            await until(lambda: image_row(node, pushed), "the image registered again")
            out = (await gql(node, FORGET, None, r=pushed))["forget_image"]
            assert out == {"ok": True, "msg": ""}, out
            assert not await in_docker(pushed)
        finally:
            with contextlib.suppress(DockerError):
                await container.delete(force=True)
            with contextlib.suppress(DockerError):
                await docker.images.delete(pushed, force=True)
            await gql(node, "mutation($h: String!) { delete_container_registry(hostname: $h) { ok } }", h=host)
