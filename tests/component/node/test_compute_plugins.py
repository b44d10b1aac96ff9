"""Compute plugins on a whole node (real manager, agent, Docker): a mock accelerator in discrete
mode, then in fractional mode, sessions that get their devices in their environment, a session
that does not fit waiting PENDING with its reason, whole-core requests pinned to their cores, and
an agent restart that takes the running kernels' devices again (no double allocation)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from bai.agent.agent import Agent
from bai.agent.config import AgentConfig
from bai.agent.server import AgentServer
from bai.common import etcd as etcd_mod
from bai.manager.server import build_app
from bai.manager.store import tables as t
from tests.e2e.conftest import official_client  # noqa: F401  (the official client's venv, made once)
from tests.fixtures.halfstack import HalfStack
from tests.fixtures.node_parts import NodeParts, node_parts

from .conftest import Node
from .test_sessions import wait_status

# Two whole GPUs; in fractional mode one share is 8 GiB, so each 4 GiB device holds 0.5 shares.
MOCK_TOML = """
slot_name = "cuda"
device_plugin_name = "CUDADevice"
unit_mem = "8g"
unit_proc = 8
[attributes]
nvidia_driver = "550.54.15"
[[devices]]
mother_uuid = "GPU-aaaa"
model_name = "Mock GPU"
subproc_count = 16
memory_size = "4g"
is_mig_device = false
[[devices]]
mother_uuid = "GPU-bbbb"
model_name = "Mock GPU"
subproc_count = 16
memory_size = "4g"
is_mig_device = false
[[devices]]
mother_uuid = "MIG-cccc"
model_name = "Mock GPU MIG"
subproc_count = 14
memory_size = "10g"
is_mig_device = true
mig_profile = "1g.10gb"
"""
MIG = "cuda.device:1g.10gb-mig"

PROBE = ("import os; print(os.environ.get('BACKENDAI_MOCK_CUDA_DEVICES'), "
         "os.environ.get('CUDA_VISIBLE_DEVICES'), os.environ.get('BACKENDAI_MOCK_CUDA_SHARES'), "
         "len(os.sched_getaffinity(0)))")


@dataclass
class ComputeNode:
    node: Node
    parts: NodeParts
    config: AgentConfig

    @property
    def agent(self) -> Agent:
        agent = self.node.agent.agent
        assert isinstance(agent, Agent)
        return agent

    async def restart_agent(self, expect_slot: str) -> None:
        """Stop the agent (its kernels keep running) and start a new one, which re-adopts them;
        returns once the manager has its heartbeat with ``expect_slot``."""
        async with self.parts.db.connect() as conn:
            since = await conn.scalar(sa.select(sa.func.now()))
        # the same RPC port: the manager keeps each kernel's agent address
        port = self.node.agent.addr.rpartition(":")[2]
        self.config = self.config.model_copy(update={
            "agent": self.config.agent.model_copy(update={"rpc_listen_addr": f"127.0.0.1:{port}"})})
        await self.node.agent.stop()
        self.node.agent = AgentServer(self.config)
        await self.node.agent.start()
        loop = asyncio.get_running_loop()
        end = loop.time() + 30
        while True:
            async with self.parts.db.connect() as conn:
                row = (await conn.execute(sa.select(t.agents).where(t.agents.c.id == self.parts.agent_id))).one()
            if row.status == "ALIVE" and row.last_seen > since and expect_slot in row.available_slots:
                return
            assert loop.time() < end, tuple(row)
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def cnode(halfstack: HalfStack, kernel_image: str) -> AsyncIterator[ComputeNode]:
    tmp = Path(tempfile.mkdtemp(prefix="bai-compute-", dir="/tmp"))
    (tmp / "mock-accelerator.toml").write_text(MOCK_TOML)
    try:
        async with node_parts(halfstack, "compute") as parts:
            base = parts.agent.config
            config = base.model_copy(update={
                "agent": base.agent.model_copy(update={"allow_compute_plugins": ("mock",)}),
                # keeps node_parts' own pinned-cores claims (cpu): with the host's shared ones, the
                # installed node's kernels pinning cores would leave this agent's kernels unpinned
                "plugins": {**base.plugins, "mock": {"config-path": str(tmp / "mock-accelerator.toml")}},
            })
            client = TestClient(TestServer(build_app(parts.manager_config), host="127.0.0.1"))
            await client.start_server()
            agent = AgentServer(config)
            await agent.start()
            node = Node(client, parts.db, parts.access_key, parts.secret_key, agent, parts.redis_addr)
            try:
                await parts.wait_agent_registered()
                yield ComputeNode(node, parts, config)
            finally:
                await client.close()
                await node.agent.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def create(cn: ComputeNode, resources: dict[str, str], enqueue_only: bool = False) -> tuple[str, str]:
    name = f"cp-{secrets.token_hex(4)}"
    st, body = await cn.node.call("POST", "/session", {
        "name": name, "image": "python", "enqueueOnly": enqueue_only,
        "config": {"resources": {"mem": "256m", **resources}}})
    assert st == 201, body
    assert body["status"] == ("PENDING" if enqueue_only else "RUNNING"), body
    return name, body["sessionId"]


async def probe(cn: ComputeNode, name: str) -> list[str]:
    st, res = await cn.node.call("POST", f"/session/{name}", {"mode": "query", "code": PROBE, "runId": None})
    assert st == 200 and res["result"]["exitCode"] == 0, res
    return "".join(text for _, text in res["result"]["console"]).split()


async def host_config(session_id: str) -> dict[str, Any]:
    async with aiodocker.Docker() as docker:
        [container] = await docker.containers.list(
            all=True, filters=json.dumps({"label": [f"ai.backend.session-id={session_id}"]}))
        return dict((await container.show())["HostConfig"])


async def wait_pending_reason(cn: ComputeNode, session_id: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    end = loop.time() + 30
    while True:
        async with cn.parts.db.connect() as conn:
            row = (await conn.execute(sa.select(t.sessions.c.status, t.sessions.c.status_info,
                                                t.sessions.c.status_data)
                                      .where(t.sessions.c.id == session_id))).one()
        if row.status_info == "no-available-instances":
            assert row.status == "PENDING"
            return dict(row.status_data)
        assert row.status == "PENDING" and loop.time() < end, tuple(row)
        await asyncio.sleep(0.05)


async def destroy(cn: ComputeNode, *names: str) -> None:
    for name in names:
        st, body = await cn.node.call("DELETE", f"/session/{name}")
        assert st == 200, body


async def test_discrete_devices_pinned_cores_and_pending(cnode: ComputeNode) -> None:
    async with cnode.parts.db.connect() as conn:
        row = (await conn.execute(sa.select(t.agents).where(t.agents.c.id == cnode.parts.agent_id))).one()
    assert row.available_slots["cuda.device"] == "2"
    assert row.compute_plugins["cuda"]["mock"] is True and row.compute_plugins["cuda"]["nvidia_driver"] == "550.54.15"
    cores = sorted(os.sched_getaffinity(0))

    # (the kernel image asks for at least one core per session; this host may have only two)
    both, both_id = await create(cnode, {"cpu": "1", "cuda.device": "2"})
    assert await probe(cnode, both) == ["GPU-aaaa,GPU-bbbb", "0,1", "None", "1"]      # pinned to one core
    pinned = await host_config(both_id)
    assert pinned["CpusetCpus"] == str(cores[0]) and pinned["NanoCpus"] == 10**9
    assert pinned["Memory"] == pinned["MemorySwap"] == 256 * 2**20

    # No device left (but a core is): the session waits, and the scheduler says why.
    waiting, waiting_id = await create(cnode, {"cpu": "1", "cuda.device": "1"}, enqueue_only=True)
    data = await wait_pending_reason(cnode, waiting_id)
    assert "big enough" in data["scheduler"]["msg"]
    st, body = await cnode.node.call("POST", "/session", {
        "name": f"cp-{secrets.token_hex(4)}", "image": "python", "config": {"resources": {"rocm.device": "1"}}})
    assert st == 400 and "rocm.device" in json.dumps(body), body
    # More devices than any agent has: refused at once, naming the slot; nothing is enqueued.
    st, body = await cnode.node.call("POST", "/session", {
        "name": f"cp-{secrets.token_hex(4)}", "image": "python", "enqueueOnly": True,
        "config": {"resources": {"mem": "256m", "cuda.device": "3"}}})
    assert st == 400 and "cuda.device: 3 > 2" in body["msg"], body
    async with cnode.parts.db.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(t.sessions)
                                 .where(t.sessions.c.status == "PENDING")) == 1

    # Freeing the devices lets the waiting session start on the first one.
    await destroy(cnode, both)
    assert await wait_status(cnode.node, waiting_id, {"RUNNING", "ERROR", "CANCELLED"}) == "RUNNING"
    assert await probe(cnode, waiting) == ["GPU-aaaa", "0", "None", "1"]
    assert cnode.agent.compute.used()["cuda.device"] == 1
    await destroy(cnode, waiting)
    assert cnode.agent.compute.used()["cuda.device"] == 0 and cnode.agent.compute.used()["cpu"] == 0


async def test_malformed_amounts_are_refused_quickly(cnode: ComputeNode) -> None:
    async with cnode.parts.db.connect() as conn:
        before = await conn.scalar(sa.select(sa.func.count()).select_from(t.sessions))
    loop = asyncio.get_running_loop()
    for slot, amount in (("cuda.device", "NaN"), ("cuda.device", "sNaN"), ("cpu", "Infinity"), ("cpu", "-1"),
                         ("cuda.device", "1e999999999"), ("cpu", "abc"), ("mem", "9" * 40), ("mem", "1e99")):
        began = loop.time()
        st, body = await cnode.node.call("POST", "/session", {
            "name": f"cp-{secrets.token_hex(4)}", "image": "python", "enqueueOnly": True,
            "config": {"resources": {slot: amount}}})
        assert st == 400 and body["type"].endswith("/invalid-api-params"), (slot, amount, body)
        assert f"config.resources.{slot}" in json.dumps(body), body
        assert loop.time() - began < 5, (slot, amount)
    async with cnode.parts.db.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(t.sessions)) == before


async def test_mig_slices_are_unique_and_not_mixed_with_whole_devices(cnode: ComputeNode) -> None:
    name, _ = await create(cnode, {"cpu": "1", MIG: "1"})
    assert (await probe(cnode, name))[:2] == ["MIG-cccc", "2"]
    await destroy(cnode, name)
    # Whole devices and MIG slices in one kernel: the agent refuses the kernel, the session ends.
    st, body = await cnode.node.call("POST", "/session", {
        "name": f"cp-{secrets.token_hex(4)}", "image": "python", "enqueueOnly": True,
        "config": {"resources": {"cpu": "1", "mem": "256m", "cuda.device": "1", MIG: "1"}}})
    assert st == 201, body
    assert await wait_status(cnode.node, body["sessionId"], {"RUNNING", "ERROR", "CANCELLED"}) == "CANCELLED"
    async with cnode.parts.db.connect() as conn:
        info, data = (await conn.execute(sa.select(t.sessions.c.status_info, t.sessions.c.status_data)
                                         .where(t.sessions.c.id == body["sessionId"]))).one()
    assert info == "failed-to-start" and "cannot be mixed" in json.dumps(data), (info, data)
    assert cnode.agent.compute.used()[MIG] == 0 and cnode.agent.compute.used()["cuda.device"] == 0


LIVE_STAT = "query($id: UUID!) { compute_session(id: $id) { containers { live_stat last_stat } } }"


async def test_live_stats_of_a_running_kernel(cnode: ComputeNode) -> None:
    name, session_id = await create(cnode, {"cpu": "1", "cuda.device": "1"})
    loop = asyncio.get_running_loop()
    end = loop.time() + 20
    while True:  # the agent publishes at each heartbeat (every second here)
        st, body = await cnode.node.call("POST", "/admin/gql", {"query": LIVE_STAT, "variables": {"id": session_id}})
        assert st == 200 and "errors" not in body, body
        [container] = body["data"]["compute_session"]["containers"]
        stat = json.loads(container["live_stat"] or "null")
        if stat and {"cpu_util", "cpu_used", "mem", "cuda_util", "cuda_mem"} <= set(stat):
            break
        assert loop.time() < end, stat
        await asyncio.sleep(0.1)
    assert container["last_stat"] is None
    assert int(stat["mem"]["current"]) > 0 and stat["mem"]["capacity"] == str(256 * 2**20)
    assert stat["mem"]["unit_hint"] == "bytes" and stat["cpu_util"]["capacity"] == "100"
    assert int(stat["cpu_used"]["current"]) > 0 and stat["cpu_used"]["unit_hint"] == "msec"
    assert stat["cuda_util"]["devices"] == {"GPU-aaaa": "50"} and stat["cuda_mem"]["devices"] == {
        "GPU-aaaa": str(2 * 2**30)}
    await destroy(cnode, name)


async def test_agent_restart_takes_the_same_devices_again(cnode: ComputeNode) -> None:
    held, held_id = await create(cnode, {"cpu": "1", "cuda.device": "1"})
    assert (await probe(cnode, held))[0] == "GPU-aaaa"
    await cnode.restart_agent("cuda.device")
    agent = cnode.agent
    assert agent.compute.used()["cuda.device"] == 1 and agent.compute.used()["cpu"] == 1
    [kernel] = agent.kernels.values()
    assert kernel.allocation["cuda"] == {"cuda.device": {"GPU-aaaa": 1}}
    # The re-adopted kernel still runs and keeps its device and core; a new session gets the others.
    assert (await probe(cnode, held))[0] == "GPU-aaaa"
    other, other_id = await create(cnode, {"cpu": "1", "cuda.device": "1"})
    assert (await probe(cnode, other))[0] == "GPU-bbbb"
    assert (await host_config(other_id))["CpusetCpus"] != (await host_config(held_id))["CpusetCpus"]
    await destroy(cnode, held, other)
    assert agent.compute.used()["cuda.device"] == 0 and agent.compute.used()["cpu"] == 0


async def official(exe: Path, cn: ComputeNode, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKEND_", "SORNA_"))}
    env.update({"BACKEND_ENDPOINT": f"http://{cn.node.client.host}:{cn.node.client.port}",
                "BACKEND_ENDPOINT_TYPE": "api", "BACKEND_ACCESS_KEY": cn.node.access_key,
                "BACKEND_SECRET_KEY": cn.node.secret_key})
    proc = await asyncio.create_subprocess_exec(str(exe), *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(90):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


async def test_the_official_client_asks_for_a_mock_device(cnode: ComputeNode,
                                                          official_client: Path) -> None:  # noqa: F811
    name = f"cp-{secrets.token_hex(4)}"
    rc, out = await official(official_client, cnode, "session", "create", "-t", name,
                             "-r", "cpu=1", "-r", "mem=256m", "-r", "cuda.device=1", "python")
    assert rc == 0 and "is created and ready" in out, out
    assert (await probe(cnode, name))[:2] == ["GPU-aaaa", "0"]
    rc, out = await official(official_client, cnode, "session", "create", "-t", f"cp-{secrets.token_hex(4)}",
                             "-r", "cuda.device=5", "python")
    assert rc != 0 and "cuda.device: 5 > 2" in out, out
    rc, out = await official(official_client, cnode, "session", "destroy", name)
    assert rc == 0, out
    assert cnode.agent.compute.used()["cuda.device"] == 0


async def fractional_mode(cn: ComputeNode) -> None:
    """Switch the mock accelerator to fractional mode through etcd (once per module's node)."""
    if "cuda.shares" in cn.agent.compute.used():
        return
    etcd_cfg = cn.parts.manager_config.etcd
    async with etcd_mod.connect(etcd_cfg.addr, etcd_cfg.namespace) as etcd:
        await etcd.put("config/plugins/accelerator/cuda/allocation_mode", "fractional")
    await cn.restart_agent("cuda.shares")


async def test_fractional_mode_shares(cnode: ComputeNode) -> None:
    await fractional_mode(cnode)
    async with cnode.parts.db.connect() as conn:
        slots = await conn.scalar(sa.select(t.agents.c.available_slots).where(t.agents.c.id == cnode.parts.agent_id))
    assert slots is not None and slots["cuda.shares"] == "1" and "cuda.device" not in slots

    # 0.75 does not fit one device (0.5 each): it spans both, fewest devices first.
    big, _ = await create(cnode, {"cpu": "1", "cuda.shares": "0.75"})
    assert (await probe(cnode, big))[:3] == ["GPU-aaaa,GPU-bbbb", "0,1", "GPU-aaaa:0.5,GPU-bbbb:0.25"]
    waiting, waiting_id = await create(cnode, {"cpu": "1", "cuda.shares": "0.5"}, enqueue_only=True)
    await wait_pending_reason(cnode, waiting_id)
    small, _ = await create(cnode, {"cpu": "1", "cuda.shares": "0.25"})
    assert (await probe(cnode, small))[:3] == ["GPU-bbbb", "1", "GPU-bbbb:0.25"]
    # whole devices are no longer a slot anywhere: refused at once, naming the slot
    st, body = await cnode.node.call("POST", "/session", {
        "name": f"cp-{secrets.token_hex(4)}", "image": "python", "config": {"resources": {"cuda.device": "1"}}})
    assert st == 400 and "cuda.device" in json.dumps(body), body
    await destroy(cnode, waiting, big, small)
    assert cnode.agent.compute.used()["cuda.shares"] == 0


async def session_id_of(cn: ComputeNode, name: str) -> str:
    async with cn.parts.db.connect() as conn:
        return str(await conn.scalar(sa.select(t.sessions.c.id).where(t.sessions.c.name == name)
                                     .order_by(t.sessions.c.created_at.desc()).limit(1)))


async def test_the_official_client_asks_for_fractional_shares(cnode: ComputeNode,
                                                              official_client: Path) -> None:  # noqa: F811
    await fractional_mode(cnode)

    async def bai_json(*args: str) -> dict[str, Any]:
        rc, out = await official(official_client, cnode, "--output", "json", *args)
        assert rc == 0, out
        return dict(json.loads(out))

    name = f"cp-{secrets.token_hex(4)}"
    rc, out = await official(official_client, cnode, "session", "create", "-t", name,
                             "-r", "cpu=1", "-r", "mem=256m", "-r", "cuda.shares=0.5", "python")
    assert rc == 0 and "is created and ready" in out, out
    # the share is seen inside, through the official client's own execute
    rc, out = await official(official_client, cnode, "run", "-t", name, "-c", PROBE, "python")
    assert rc == 0 and "GPU-aaaa 0 GPU-aaaa:0.5 1" in out, out
    session_id = await session_id_of(cnode, name)
    [info] = (await bai_json("session", "info", session_id))["items"]
    assert info["status"] == "RUNNING" and info["occupying_slots"]["cuda.shares"] == "0.5", info

    # the agent's slots as the official admin CLI shows them: the mock devices' shares
    [agent] = (await bai_json("admin", "agent", "info", cnode.parts.agent_id))["items"]
    assert agent["available_slots"]["cuda.shares"] == "1", agent
    assert agent["occupied_slots"]["cuda.shares"] == "0.5", agent

    # 0.75 does not fit what is left (0.5): it waits, and `session info` says why
    waiting = f"cp-{secrets.token_hex(4)}"
    rc, out = await official(official_client, cnode, "session", "create", "--enqueue-only", "-t", waiting,
                             "-r", "cpu=1", "-r", "mem=256m", "-r", "cuda.shares=0.75", "python")
    assert rc == 0 and "enqueued" in out, out
    waiting_id = await session_id_of(cnode, waiting)
    await wait_pending_reason(cnode, waiting_id)
    [info] = (await bai_json("session", "info", waiting_id))["items"]
    assert info["status"] == "PENDING" and info["status_info"] == "no-available-instances", info

    # malformed or negative amounts: a clear one-line refusal, nothing enqueued
    for bad, why in (("-1", "must not be negative"), ("abc", "invalid amount: 'abc'")):
        rc, out = await official(official_client, cnode, "session", "create", "-t", f"cp-{secrets.token_hex(4)}",
                                 "-r", f"cuda.shares={bad}", "python")
        assert rc != 0 and "400 Bad Request" in out and "Traceback" not in out, out
        assert f'"config.resources.cuda.shares": {why}' in out, out
    async with cnode.parts.db.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(t.sessions)
                                 .where(t.sessions.c.status == "PENDING")) == 1

    for target in (waiting, name):
        rc, out = await official(official_client, cnode, "session", "destroy", target)
        assert rc == 0, out
    assert cnode.agent.compute.used()["cuda.shares"] == 0
