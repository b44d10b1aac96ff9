"""Cluster networks on the whole node (real manager, real Docker agent, real kernel image): the
kernels of a single-node cluster session meet on the session's own bridge
``bai-singlenode-<session id>``, where each is reachable by its cluster hostname (``main1``
resolves and connects to ``sub1``); the bridge goes with the session; a session of one kernel
gets none; and a bridge left behind while the agent was down is removed when it starts again."""

from __future__ import annotations

import contextlib
import secrets
import uuid
from typing import Any

import aiodocker
import sqlalchemy as sa
from aiodocker.exceptions import DockerError

from bai.agent.agent import Agent
from bai.common.agent_rpc import DestroyKernelRequest
from bai.manager.store import tables as t

from .conftest import Node


async def _kernels(node: Node, session_id: str) -> list[Any]:
    async with node.db.connect() as conn:
        return list((await conn.execute(sa.select(t.kernels).where(t.kernels.c.session_id == session_id)
                                        .order_by(t.kernels.c.local_rank))).all())


async def _network(name: str) -> dict[str, Any] | None:
    async with aiodocker.Docker() as docker:
        try:
            return await (await docker.networks.get(name)).show()
        except DockerError as exc:
            if exc.status == 404:
                return None
            raise


async def _create(node: Node, keys: tuple[str, str], size: int) -> tuple[str, str]:
    name = f"cn-{secrets.token_hex(3)}"
    status, body = await node.call("POST", "/session", {
        "name": name, "image": "python", "clusterSize": size,
        "config": {"resources": {"cpu": "1", "mem": "256m"}}}, keys=keys)
    assert status == 201 and body["status"] == "RUNNING", body
    return name, body["sessionId"]


async def _run(node: Node, keys: tuple[str, str], name: str, code: str) -> str:
    status, body = await node.call("POST", f"/session/{name}", {"mode": "query", "code": code, "runId": None},
                                   keys=keys)
    assert status == 200 and body["result"]["status"] == "finished", body
    return "".join(text for kind, text in body["result"]["console"] if kind in ("stdout", "stderr"))


async def test_kernels_of_a_cluster_session_reach_each_other_by_hostname(node: Node) -> None:
    keys = await node.add_keypair({"max_containers_per_session": 2})
    name, sid = await _create(node, keys, 2)
    bridge = f"bai-singlenode-{sid}"
    try:
        kernels = await _kernels(node, sid)
        assert [k.cluster_hostname for k in kernels] == ["main1", "sub1"]
        net = await _network(bridge)
        assert net is not None and net["Driver"] == "bridge" and net["Internal"] is False
        assert net["Labels"]["ai.backend.cluster-network"] == "1"
        assert net["Labels"]["ai.backend.session-id"] == sid
        attached = {c["Name"] for c in net["Containers"].values()}
        assert attached == {f"kernel.{k.id}" for k in kernels}
        # something listening in sub1, as the kernel user
        async with aiodocker.Docker() as docker:
            sub1 = docker.containers.container(kernels[1].container_id)
            run = await sub1.exec(["python3", "-m", "http.server", "8000", "--bind", "0.0.0.0"],
                                  stdout=False, stderr=False)
            await run.start(detach=True)
        code = ("import socket, subprocess, time, urllib.request\n"
                "print(subprocess.run(['getent', 'hosts', 'sub1'], capture_output=True, text=True).stdout.split()[1])\n"
                "for i in range(100):\n"
                "    try:\n"
                "        print(urllib.request.urlopen('http://sub1:8000/', timeout=2).status); break\n"
                "    except OSError: time.sleep(0.1)\n"
                "print(socket.gethostname())\n")
        assert (await _run(node, keys, name, code)).split() == ["sub1", "200", "main1"]
    finally:
        status, body = await node.call("DELETE", f"/session/{name}", keys=keys)
    assert status == 200, body
    assert await _network(bridge) is None  # the destroy answered after the bridge went


async def test_a_single_kernel_session_gets_no_network_of_its_own(node: Node) -> None:
    keys = await node.add_keypair({"max_containers_per_session": 1})
    name, sid = await _create(node, keys, 1)
    try:
        kernel, = await _kernels(node, sid)
        async with aiodocker.Docker() as docker:
            info = await docker.containers.container(kernel.container_id).show()
        assert info["HostConfig"]["NetworkMode"] == "default"
        assert list(info["NetworkSettings"]["Networks"]) == ["bridge"]
        assert await _network(f"bai-singlenode-{sid}") is None
    finally:
        await node.call("DELETE", f"/session/{name}", keys=keys)


async def test_a_bridge_left_behind_goes_when_the_agent_starts_again(node: Node) -> None:
    """The agent is stopped (its kernels keep running), the session's containers disappear
    meanwhile, and the agent starts again: it adopts no kernel of that session and removes the
    session's bridge. A bridge another agent on this engine made is not its to remove."""
    keys = await node.add_keypair({"max_containers_per_session": 2})
    name, sid = await _create(node, keys, 2)
    doomed = await _kernels(node, sid)
    other_sid = str(uuid.uuid4())
    other = f"bai-singlenode-{other_sid}"
    async with aiodocker.Docker() as docker:
        await docker.networks.create({"Name": other, "Labels": {
            "ai.backend.cluster-network": "1", "ai.backend.session-id": other_sid,
            "ai.backend.owner": f"{node.agent.config.agent.id}-other"}})
    try:
        await node.agent.stop()
        try:
            async with aiodocker.Docker() as docker:
                for k in doomed:
                    await docker.containers.container(k.container_id).delete(force=True)
            assert await _network(f"bai-singlenode-{sid}") is not None
        finally:
            await node.agent.start()
        assert await _network(f"bai-singlenode-{sid}") is None
        assert await _network(other) is not None
    finally:
        async with aiodocker.Docker() as docker:
            with contextlib.suppress(DockerError):
                await (await docker.networks.get(other)).delete()
        # (the manager may already have closed it: its kernels are gone from the agent)
        await node.call("DELETE", f"/session/{name}", keys=keys)


async def test_kernels_adopted_after_a_restart_still_take_their_bridge_along(node: Node) -> None:
    keys = await node.add_keypair({"max_containers_per_session": 2})
    name, sid = await _create(node, keys, 2)
    kernels = await _kernels(node, sid)
    try:
        await node.agent.stop()
        await node.agent.start()  # re-adopts both kernels (on another RPC port: the manager's rows still
        agent = node.agent.agent  # name the old one, so they are destroyed here, as the manager would)
        assert isinstance(agent, Agent) and await _network(f"bai-singlenode-{sid}") is not None
        for k in kernels:
            await agent.destroy_kernel(DestroyKernelRequest(kernel_id=str(k.id), session_id=sid))
        assert await _network(f"bai-singlenode-{sid}") is None
    finally:
        await node.call("DELETE", f"/session/{name}", keys=keys)
