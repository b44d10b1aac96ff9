"""``commit_kernel``: a running kernel's container saved as an image (the manager's imagify),
against the real Docker engine and the real kernel image; a kernel started from the result finds
what the first one wrote in its own filesystem, and nothing of the first kernel is baked in."""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import stat
import subprocess
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import pytest

from bai.agent.agent import Agent
from bai.agent.commit import CommitInProgress, KernelCommits
from bai.agent.server import AgentServer
from bai.common.agent_rpc import AgentClient, InvalidInput

from .conftest import EventLog, kernel_config
from .test_agent_component import create_kernel

pytestmark = pytest.mark.timeout(180)

#: Every image these tests make carries this label (any value), so teardown finds them all.
TEST_LABEL = "ai.backend.customized-image.bai-test"
MARKER = "/home/work/.imagify-marker.txt"


@pytest.fixture
async def committed_images(docker: aiodocker.Docker) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for image in await docker.images.list(filters={"label": [TEST_LABEL]}):
            await docker.images.delete(image["Id"], force=True)


async def test_commit_a_kernel_and_run_the_image(agent: AgentServer, rpc: AgentClient, events: EventLog,
                                                 kernel_image: str, docker: aiodocker.Docker,
                                                 committed_images: None) -> None:
    agent_id = agent.config.agent.id
    first = (await create_kernel(rpc, events, agent_id, kernel_config(kernel_image)))["kernel_id"]
    run = secrets.token_hex(4)
    target = f"bai.local/stable/python:3.11-debian12-customized_{run}"
    labels = {"ai.backend.customized-image.owner": "user:0b9f", "ai.backend.customized-image.name": "mine",
              TEST_LABEL: run}
    try:
        wrote = await rpc.execute(None, first, None, "query", f"open({MARKER!r}, 'w').write('kept {run}')")
        assert wrote["exitCode"] == 0, wrote
        reply = await rpc.commit_kernel(first, target, labels)
        # Bad input is refused before anything is done: labels outside the customized-image family,
        # a reference without a tag, an unknown kernel.
        with pytest.raises(InvalidInput, match="labels may be added"):
            await rpc.commit_kernel(first, target, {"ai.backend.kernelspec": "9"})
        with pytest.raises(InvalidInput):
            await rpc.call("commit_kernel", {"kernel_id": first, "canonical": "bai.local/x/no-tag"})
        with pytest.raises(Exception, match="not on this agent"):
            await rpc.commit_kernel("no-such-kernel", target, {})
    finally:
        await rpc.destroy_kernel(first)
    assert reply["image"] == target
    info = await docker.images.inspect(target)
    assert info["Id"] == reply["digest"]
    base = (await docker.images.inspect(kernel_image))["Config"]["Labels"]
    got = info["Config"]["Labels"]
    assert got == reply["labels"]
    # The base image's kernel labels are kept, the requested ones added, the first kernel's own
    # container labels (kernel, session, owner, slots, devices, ports) emptied.
    assert {k: got[k] for k in base} == base
    assert {k: got[k] for k in labels} == labels
    assert {k for k, v in got.items() if v == ""} >= {"ai.backend.kernel-id", "ai.backend.session-id",
                                                      "ai.backend.owner", "ai.backend.internal.resource-slots"}
    # Bind mounts (the runner, the IPC directory with the agent's socket) are not in the image.
    probe = await asyncio.to_thread(subprocess.run, ["docker", "run", "--rm", "--network", "none", "--user", "1000:1000", target, "sh", "-c",
                            f"ls -A /opt/bai/kernel/bai_kernel /opt/bai/ipc | grep -v : ; cat {MARKER}"],
                                    capture_output=True, text=True, timeout=60, check=True)
    assert probe.stdout.split() == ["kept", run]

    # A kernel of the new image runs code and sees what the first kernel wrote.
    second = (await create_kernel(rpc, events, agent_id, kernel_config(target)))["kernel_id"]
    try:
        result = await rpc.execute(None, second, None, "query", f"print(1); print(open({MARKER!r}).read())")
        assert result["exitCode"] == 0, result
        assert "".join(c[1] for c in result["console"] if c[0] == "stdout") == f"1\nkept {run}\n"
    finally:
        await rpc.destroy_kernel(second)


async def test_one_commit_per_kernel_at_a_time(agent: AgentServer, rpc: AgentClient, events: EventLog,
                                               kernel_image: str, committed_images: None) -> None:
    backend = agent.agent
    assert isinstance(backend, Agent)
    kernel_id = (await create_kernel(rpc, events, agent.config.agent.id, kernel_config(kernel_image)))["kernel_id"]
    run = secrets.token_hex(4)
    container_id = backend.kernels[kernel_id].container_id
    assert container_id is not None

    def commit(tag: str) -> asyncio.Task[dict[str, object]]:
        return asyncio.create_task(backend.commits.commit(
            kernel_id, container_id, kernel_image, f"bai.local/stable/python:{tag}", {TEST_LABEL: run}))

    try:
        # The first marks the kernel busy before it waits for Docker; the second meets that.
        results = await asyncio.gather(commit(f"c1-{run}"), commit(f"c2-{run}"), return_exceptions=True)
        assert isinstance(results[0], dict)
        assert isinstance(results[1], CommitInProgress)
        assert results[1].status == 409
        assert not backend.commits.in_progress(kernel_id)
    finally:
        await rpc.destroy_kernel(kernel_id)


async def test_save_a_kernel_as_an_image_tar(agent: AgentServer, rpc: AgentClient, events: EventLog,
                                            kernel_image: str, tmp_path: Path) -> None:
    backend = agent.agent
    assert isinstance(backend, Agent)
    kernel_id = (await create_kernel(rpc, events, agent.config.agent.id, kernel_config(kernel_image)))["kernel_id"]
    container_id = backend.kernels[kernel_id].container_id
    assert container_id is not None
    commits = KernelCommits(backend.docker.docker, save_base=tmp_path / "commit")
    try:
        wrote = await rpc.execute(None, kernel_id, None, "query", f"open({MARKER!r}, 'w').write('in the tar')")
        assert wrote["exitCode"] == 0, wrote
        saved = await commits.save(kernel_id, container_id, kernel_image, "user@example.com", "mine.tar")
        # A plain name only, never over an earlier file.
        with pytest.raises(InvalidInput):
            await commits.save(kernel_id, container_id, kernel_image, "../etc", "mine.tar")
        with pytest.raises(InvalidInput, match="exists already") as refused:
            await commits.save(kernel_id, container_id, kernel_image, "user@example.com", "mine.tar")
        assert refused.value.status == 409
        assert (await rpc.call("get_commit_status", {"kernel_id": kernel_id})) == {"kernel": kernel_id,
                                                                                   "status": "ready"}
    finally:
        await rpc.destroy_kernel(kernel_id)
    path = tmp_path / "commit" / "user@example.com" / "mine.tar"
    assert saved == {"kernel": kernel_id, "path": str(path), "size": path.stat().st_size}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == ["mine.tar"]  # nothing half-written left

    def read_tar() -> tuple[dict[str, str], bytes]:
        with tarfile.open(path) as tar:
            manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
            config = json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
            layer = tar.extractfile(manifest[0]["Layers"][-1])
            assert layer is not None
            with tarfile.open(fileobj=io.BytesIO(layer.read())) as top:
                marker = top.extractfile(MARKER.lstrip("/"))
                assert marker is not None
                return config["config"]["Labels"], marker.read()

    labels, marker = await asyncio.to_thread(read_tar)
    assert labels["ai.backend.kernelspec"] == "1" and labels["ai.backend.kernel-id"] == ""
    assert marker == b"in the tar"
