"""Saving a session as an image (``POST /session/{ref}/imagify``) or as a tar on its agent
(``POST /session/{ref}/commit``) while the manager or the agent is killed with SIGKILL mid-way
(see conftest for the node of real processes). The commit is caught mid-way, not timed: the
session's container holds some 20,000 small files (Docker takes seconds to commit them), and
each scenario waits for the agent to say it is committing (or for the tar's ``.part`` file to
appear) before it kills.

What must hold: the client that asked gets a clear final answer naming what died (never
``running`` forever); nothing half-done is visible (no image row from an interrupted commit, no
tar renamed into place, no untagged image or ``.part`` file left once the agent is back); an
image the agent finishes for a dead manager is its owner's alone; the session keeps running; a
second commit afterwards works (no lock outlives the process that held it)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import tomllib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import pytest
import sqlalchemy as sa

from bai.agent.commit import COMMIT_MARK
from bai.common import etcd as etcd_mod
from bai.common.agent_rpc import AgentClient
from bai.common.auth import API_VERSION, sign_request
from bai.manager.services.images import customized_for
from bai.manager.store import tables as t

from .conftest import Cluster, record, until

pytestmark = pytest.mark.timeout(120)

SESSION = "imgfault"
NAME_LABEL = "ai.backend.customized-image.name"
OWNER_LABEL = "ai.backend.customized-image.owner"
#: Enough small files that Docker takes seconds to commit the container's layer (40 MiB in all).
#: Written by a thread in the kernel (one execute answers "continued" after a few seconds).
FILL = """
import os, threading
filled = False
def _fill():
    global filled
    os.makedirs("/tmp/fill", exist_ok=True)
    for i in range(20000):
        with open(f"/tmp/fill/{i}", "wb") as f:
            f.write(os.urandom(2048))
    filled = True
threading.Thread(target=_fill, daemon=True).start()
print("filling")
"""
SAVE_BASE = Path("/var/lib/bai/commit")  # the fault agent's default image-commit-path


@pytest.fixture(scope="module")
async def agent_rpc(cluster: Cluster) -> AsyncIterator[AgentClient]:
    conf = tomllib.loads((cluster.root / "agent.toml").read_text())
    async with etcd_mod.connect(conf["etcd"]["addr"], conf["etcd"]["namespace"]) as etcd:
        secret = await etcd.get("config/agent/rpc-secret")
    assert secret
    async with AgentClient(conf["agent"]["rpc-listen-addr"], str(secret)) as client:
        yield client


@pytest.fixture(scope="module")
async def busy_session(cluster: Cluster) -> AsyncIterator[str]:
    """A session whose container is slow to commit; destroyed (and its images removed) at the end."""
    await cluster.create(SESSION)
    assert await cluster.run(SESSION, FILL) == "filling\n"

    async def filled() -> bool:
        return await cluster.run(SESSION, "print(filled)") == "True\n"
    await until(filled, "the session writing its files", 60, interval=0.2)
    try:
        yield SESSION
    finally:
        await cluster.call("DELETE", f"/session/{SESSION}")
        async with aiodocker.Docker() as docker:
            for image in await docker.images.list(filters={"label": [f"{NAME_LABEL}"]}):
                labels = image.get("Labels") or {}
                if str(labels.get(NAME_LABEL, "")).startswith("fault-"):
                    await docker.images.delete(image["Id"], force=True)


FORGET = "mutation($r: String!) { forget_image(reference: $r, architecture: \"x86_64\") { ok msg } }"


@pytest.fixture(autouse=True)
async def forget_saved_images(cluster: Cluster) -> AsyncIterator[None]:
    """Each scenario saves up to three images of one user, the default customized-image quota:
    forget them (the user's way: the agent removes them too) so the next scenario starts free."""
    yield
    async with cluster.db.connect() as conn:
        names = list(await conn.scalars(sa.select(t.images.c.name)
                                        .where(t.images.c.labels[NAME_LABEL].astext.like("fault-%"))))
    for name in names:
        st, body = await cluster.call("POST", "/admin/gql", {"query": FORGET, "variables": {"r": name}})
        assert st == 200 and body["data"]["forget_image"]["ok"], (name, st, body)


async def main_kernel(cluster: Cluster, session: str) -> str:
    async with cluster.db.connect() as conn:
        return str(await conn.scalar(
            sa.select(t.kernels.c.id).select_from(t.kernels.join(t.sessions, t.kernels.c.session_id == t.sessions.c.id))
            .where(t.sessions.c.name == session, t.sessions.c.status == "RUNNING")))


async def final_event(cluster: Cluster, task_id: str, deadline: float) -> tuple[str, dict[str, Any]]:
    """Follow ``GET /events/background-task`` as a client does, until its final record."""
    path = f"/events/background-task?task_id={task_id}"
    host = cluster.api.removeprefix("http://")
    signed = sign_request(cluster.access_key, cluster.secret_key, "GET", path, host, "text/plain")
    headers = {"Content-Type": "text/plain", "X-BackendAI-Version": API_VERSION, "Host": host,
               "Date": signed.date, "Authorization": signed.authorization}
    async with cluster.http.get(cluster.api + path, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=deadline)) as resp:
        assert resp.status == 200, await resp.text()
        event = ""
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event in ("bgtask_done", "bgtask_failed", "bgtask_cancelled"):
                return event, json.loads(line.removeprefix("data: "))
    raise AssertionError(f"the stream of task {task_id} ended without a final record")


async def commit_ongoing(rpc: AgentClient, kernel: str) -> bool:
    return await rpc.get_commit_status(kernel) == "ongoing"


def commits_logged(cluster: Cluster, kernel: str) -> int:
    """How many times the agent has logged handing the kernel's container to Docker's commit."""
    lines = cluster.agent.log.read_text(errors="replace").splitlines()
    return sum(1 for line in lines if "committing container" in line and f"of kernel {kernel}" in line)


async def in_docker_commit(cluster: Cluster, rpc: AgentClient, kernel: str, before: int) -> None:
    """Until the agent is inside Docker's commit of the kernel (it logs that just before asking
    Docker, and still says the commit is ongoing after that)."""
    async def inside() -> bool:
        return commits_logged(cluster, kernel) > before and await commit_ongoing(rpc, kernel)
    await until(inside, "the agent inside Docker's commit", 30, interval=0.02)


async def images_named(cluster: Cluster, name: str) -> list[Any]:
    async with cluster.db.connect() as conn:
        return list((await conn.execute(sa.select(t.images.c.name, t.images.c.labels)
                                        .where(t.images.c.labels[NAME_LABEL].astext == name))).all())


async def docker_leftovers(pid: int) -> list[str]:
    """Untagged images the agent process ``pid`` committed (what its interrupted commits left)."""
    async with aiodocker.Docker() as docker:
        found = []
        for summary in await docker.images.list(filters={"dangling": ["true"]}):
            info = await docker.images.inspect(summary["Id"])
            if str(info.get("Comment") or "").startswith(f"{COMMIT_MARK} (pid {pid})"):
                found.append(summary["Id"])
        return found


async def docker_has_label(name: str) -> bool:
    async with aiodocker.Docker() as docker:
        return bool(await docker.images.list(all=True, filters={"label": [f"{NAME_LABEL}={name}"]}))


async def imagify(cluster: Cluster, name: str) -> str:
    st, body = await cluster.call("POST", f"/session/{SESSION}/imagify", {"image_name": name})
    assert st == 200, (st, body)
    return str(body["task_id"])


async def agent_back(cluster: Cluster) -> None:
    restarted = time.time()
    await asyncio.to_thread(cluster.agent.start, 60)

    async def beat() -> bool:
        seen = await cluster.last_heartbeat()
        return seen is not None and seen.timestamp() > restarted
    await until(beat, "a heartbeat of the restarted agent", 30)


async def test_manager_killed_during_imagify(cluster: Cluster, busy_session: str, agent_rpc: AgentClient) -> None:
    kernel = await main_kernel(cluster, SESSION)
    name = f"fault-m-{secrets.token_hex(3)}"
    began = time.monotonic()
    before = commits_logged(cluster, kernel)
    task_id = await imagify(cluster, name)
    await in_docker_commit(cluster, agent_rpc, kernel, before)
    cluster.manager.kill()
    killed = time.monotonic()
    await asyncio.to_thread(cluster.manager.start, 30)
    await until(cluster.api_up, "the API answering again", 10)

    # While the agent still commits for the dead manager, the new one refuses another commit
    # (409) rather than start a task the agent would refuse: a commit it starts must succeed
    # (should the agent have been done first).
    was = await agent_rpc.get_commit_status(kernel)
    st, body = await cluster.call("POST", f"/session/{SESSION}/imagify", {"image_name": f"{name}-probe"})
    if st == 200:
        assert (await final_event(cluster, str(body["task_id"]), 60))[0] == "bgtask_done"
    else:
        assert was == "ongoing" and st == 409 and body["type"].endswith("/commit-in-progress"), (st, body)
    refused_while_ongoing = st == 409

    # The client following the task hears that it was lost with its manager, not "running" forever.
    event, data = await final_event(cluster, task_id, 40)
    answered = time.monotonic() - killed
    assert event == "bgtask_failed", (event, data)
    assert "lost" in data["message"] and "manager" in data["message"], data
    assert "may still finish the image" in data["message"], data

    # The agent finishes the commit it was asked for; its heartbeat reports the image, which
    # is its owner's alone (visibility comes from the image's own labels).
    await until(lambda: _not(commit_ongoing(agent_rpc, kernel)), "the agent's commit ending", 60, interval=0.1)
    await until(lambda: _any(images_named(cluster, name)), "the heartbeat reporting the image", 20)
    [row] = await images_named(cluster, name)
    owner = str(row.labels[OWNER_LABEL])
    assert owner.startswith("user:")
    assert customized_for(dict(row.labels), uuid.UUID(owner.removeprefix("user:")))
    assert not customized_for(dict(row.labels), uuid.uuid4())  # another user sees nothing of it

    # The session kept running, and a second commit works (no lock left in manager or agent).
    assert await cluster.run(SESSION, "print('alive')") == "alive\n"
    st, status = await cluster.call("GET", f"/session/{SESSION}/commit")
    assert (st, status["status"]) == (200, "ready"), status
    again = f"fault-m2-{secrets.token_hex(3)}"
    event, data = await final_event(cluster, await imagify(cluster, again), 60)
    assert event == "bgtask_done", (event, data)
    assert [r.name for r in await images_named(cluster, again)] == [data["message"]]
    record("imagify-manager-kill9", lost_task_answered_s=answered, total_s=time.monotonic() - began,
           refused_while_agent_committing=refused_while_ongoing)


async def test_agent_killed_during_imagify(cluster: Cluster, busy_session: str, agent_rpc: AgentClient) -> None:
    kernel = await main_kernel(cluster, SESSION)
    name = f"fault-a-{secrets.token_hex(3)}"
    began = time.monotonic()
    before = commits_logged(cluster, kernel)
    task_id = await imagify(cluster, name)
    await in_docker_commit(cluster, agent_rpc, kernel, before)
    assert cluster.agent.proc is not None
    dead_pid = cluster.agent.proc.pid
    cluster.agent.kill()
    killed = time.monotonic()

    event, data = await final_event(cluster, task_id, 30)
    answered = time.monotonic() - killed
    assert event == "bgtask_failed", (event, data)
    assert cluster.agent_id in data["message"] and "stopped answering" in data["message"], data
    assert "no image was recorded" in data["message"], data

    # Docker finishes a commit its client abandoned; the image stays untagged (nothing reports it).
    await until(lambda: docker_has_label(name), "Docker finishing the abandoned commit", 30, interval=0.1)
    assert await docker_leftovers(dead_pid)
    await agent_back(cluster)
    assert await docker_leftovers(dead_pid) == []  # removed at the agent's start, before its heartbeats
    assert not await docker_has_label(name)
    assert await images_named(cluster, name) == []

    assert await agent_rpc.get_commit_status(kernel) == "ready"
    await until(lambda: _runs(cluster), "execute through the re-adopted kernel", 30, interval=0.1)
    again = f"fault-a2-{secrets.token_hex(3)}"
    event, data = await final_event(cluster, await imagify(cluster, again), 60)
    assert event == "bgtask_done", (event, data)
    record("imagify-agent-kill9", failed_task_answered_s=answered, total_s=time.monotonic() - began)


async def test_agent_killed_while_saving_a_tar(cluster: Cluster, busy_session: str, agent_rpc: AgentClient) -> None:
    kernel = await main_kernel(cluster, SESSION)
    fname = f"fault-save-{secrets.token_hex(3)}"
    began = time.monotonic()
    st, started = await cluster.call("POST", f"/session/{SESSION}/commit", {"fname": fname})
    assert st == 201, (st, started)
    subdir, file = started["path"].split("/")
    target = SAVE_BASE / subdir / file
    assert cluster.agent.proc is not None
    dead_pid = cluster.agent.proc.pid
    part = SAVE_BASE / subdir / f".{file}.{dead_pid}.part"

    async def exporting() -> bool:
        return part.exists()
    try:
        await until(exporting, "the agent writing the tar", 30, interval=0.01)
        cluster.agent.kill()
        event, data = await final_event(cluster, started["bgtask_id"], 30)
        assert event == "bgtask_failed", (event, data)
        assert cluster.agent_id in data["message"] and "no file was saved" in data["message"], data
        assert part.exists() and not target.exists()  # never renamed into place

        await agent_back(cluster)
        assert not part.exists()  # the killed process's partial tar is gone
        assert await docker_leftovers(dead_pid) == []  # and so is its temporary image
        assert not target.exists()
        assert await agent_rpc.get_commit_status(kernel) == "ready"

        # The same file name can be saved now, whole.
        st, started = await cluster.call("POST", f"/session/{SESSION}/commit", {"fname": fname})
        assert st == 201, (st, started)
        event, data = await final_event(cluster, started["bgtask_id"], 60)
        assert (event, data["message"]) == ("bgtask_done", str(target)), (event, data)
        assert target.stat().st_size > 0 and target.stat().st_mode & 0o777 == 0o600
        record("commit-tar-agent-kill9", total_s=time.monotonic() - began)
    finally:
        target.unlink(missing_ok=True)
        part.unlink(missing_ok=True)


async def _not(check: Any) -> bool:
    return not await check


async def _any(check: Any) -> bool:
    return bool(await check)


async def _runs(cluster: Cluster) -> bool:
    try:
        return await cluster.run(SESSION, "print('alive')", deadline=5) == "alive\n"
    except AssertionError:
        return False
