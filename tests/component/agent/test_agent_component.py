"""The agent end to end: RPC -> Docker -> kernel runner, with events on the real Redis stream."""

from __future__ import annotations

import asyncio
import json
import stat
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
import pytest

from bai.agent.server import AgentServer
from bai.common import etcd as etcd_mod
from bai.common.agent_rpc import AgentClient, AgentError, InvalidInput, KernelNotFound

from .conftest import AgentEnv, EventLog, kernel_config

pytestmark = pytest.mark.timeout(180)


async def create_kernel(rpc: AgentClient, events: EventLog, agent_id: str, config: dict[str, Any],
                        kernel_id: str | None = None, session_id: str | None = None) -> dict[str, Any]:
    kernel_id, session_id = kernel_id or str(uuid.uuid4()), session_id or str(uuid.uuid4())
    await rpc.create_kernels(session_id, [kernel_id], [config])
    started = await events.wait("kernel_started", source=agent_id, kernel_id=kernel_id, within=60)
    return started["args"]


async def containers_of(docker: aiodocker.Docker, kernel_id: str) -> list[Any]:
    return await docker.containers.list(all=True, filters=json.dumps({"label": [f"ai.backend.kernel-id={kernel_id}"]}))


async def test_heartbeat_and_registration(agent: AgentServer, agent_env: AgentEnv, events: EventLog,
                                          kernel_image: str) -> None:
    agent_id = agent.config.agent.id
    beat = (await events.wait("agent_heartbeat", source=agent_id))["args"]
    assert beat["id"] == agent_id and beat["addr"] == agent.addr
    assert beat["scaling_group"] == "default"
    assert beat["slot_types"] == {"cpu": "count", "mem": "bytes"}
    assert int(beat["resource_slots"]["cpu"]) >= 1 and int(beat["resource_slots"]["mem"]) > 2**30
    [image] = [i for i in beat["images"] if i["canonical"] == kernel_image]
    assert image["digest"].startswith("sha256:")
    assert image["labels"]["ai.backend.kernelspec"] == "1"
    async with etcd_mod.connect(agent_env.halfstack.etcd_addr, agent_env.namespace) as etcd:
        assert await etcd.get(f"nodes/agents/{agent_id}") == "running"


async def test_rpc_auth_and_validation(agent: AgentServer, agent_env: AgentEnv, rpc: AgentClient) -> None:
    assert await rpc.ping("hello") == "hello"
    async with AgentClient(agent.addr, "wrong-secret") as bad:
        with pytest.raises(AgentError) as info:
            await bad.ping()
        assert info.value.status == 401 and info.value.type == "agent-invalid-input"
    async with aiohttp.ClientSession() as http, http.post(f"{agent.addr}/rpc/ping", json={"msg": "x"}) as resp:
        assert resp.status == 401
        assert (await resp.json())["type"] == "agent-invalid-input"
    with pytest.raises(InvalidInput) as info:
        await rpc.call("execute", {"kernel_id": "k1"})  # no mode
    assert info.value.status == 400 and "mode" in info.value.msg
    with pytest.raises(InvalidInput):
        await rpc.call("create_kernels", {"session_id": "s", "kernel_ids": ["../../etc"],
                                          "configs": [kernel_config("x")]})
    with pytest.raises(InvalidInput):
        await rpc.call("create_kernels", {"session_id": "s", "kernel_ids": ["a", "b"], "configs": [kernel_config("x")]})
    with pytest.raises(InvalidInput) as info:
        await rpc.call("no_such_method", {})
    assert info.value.status == 404
    with pytest.raises(KernelNotFound) as nf:
        await rpc.execute("s", "no-such-kernel", None, "query", "1")
    assert nf.value.status == 404 and nf.value.type == "kernel-not-found"


async def test_kernel_lifecycle(agent: AgentServer, rpc: AgentClient, events: EventLog,
                                docker: aiodocker.Docker, kernel_image: str) -> None:
    agent_id = agent.config.agent.id
    kernel_id, session_id = str(uuid.uuid4()), str(uuid.uuid4())
    started = await create_kernel(rpc, events, agent_id, kernel_config(kernel_image, cpu="0.5"), kernel_id, session_id)
    assert events.find("kernel_creating", source=agent_id, kernel_id=kernel_id, session_id=session_id)
    info = started["creation_info"]
    # the image's intrinsic SSH server and web terminal, published on host ports of the bind host
    assert [(p["name"], p["protocol"], p["container_ports"]) for p in info["service_ports"]] == [
        ("sshd", "tcp", [2200]), ("ttyd", "http", [7681])]
    assert [len(p["host_ports"]) for p in info["service_ports"]] == [1, 1] and info["kernel_host"] == "127.0.0.1"

    result = await rpc.execute(session_id, kernel_id, None, "query", "print(6*7)")
    assert result == {"runId": result["runId"], "status": "finished", "console": [["stdout", "42\n"]],
                      "exitCode": 0, "options": None, "files": []}
    result = await rpc.execute(session_id, kernel_id, "cfa3fa28d421877d", "query",
                               "import sys; print(sys.version); x = 6*7; x")
    assert result["runId"] == "cfa3fa28d421877d"
    [[kind, text]] = result["console"]
    assert kind == "stdout" and text.startswith("3.11.") and text.endswith("]\n42")
    probe = await rpc.execute(session_id, kernel_id, None, "query",
                              "import os, socket; (os.environ['GREETING'], os.environ['BACKENDAI_KERNEL_ID'], "
                              "'PYTHONPATH' in os.environ, os.getcwd(), socket.gethostname())")
    assert probe["console"] == [["stdout", repr(("hi", kernel_id, False, "/home/work", "main1"))]]

    [summary] = await containers_of(docker, kernel_id)
    spec = await docker.containers.container(summary.id).show()
    host = spec["HostConfig"]
    assert spec["Id"] == info["container_id"]
    assert host["NanoCpus"] == 500_000_000
    assert host["Memory"] == 256 * 2**20
    assert host["ShmSize"] == 64 * 2**20
    assert host["Init"] is True
    import resource as rlimits
    ulimits = {u["Name"]: u for u in host["Ulimits"]}
    assert ulimits["nofile"]["Hard"] <= rlimits.getrlimit(rlimits.RLIMIT_NOFILE)[1]
    assert ulimits["memlock"]["Hard"] <= rlimits.getrlimit(rlimits.RLIMIT_MEMLOCK)[1]
    assert any(b.endswith(":/opt/bai/kernel/bai_kernel:ro") for b in host["Binds"])
    # Confined: non-root, no capabilities, no privilege gain, pids and log limits, read-only mounts.
    assert spec["Config"]["User"] == "1000:1000"
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert host["SecurityOpt"] == ["no-new-privileges:true"] and host["PidsLimit"] == 4096
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": str(10 * 2**20), "max-file": "3"}}
    assert all(b.endswith(":ro") for b in host["Binds"])
    labels = spec["Config"]["Labels"]
    assert labels["ai.backend.kernel-id"] == kernel_id
    assert labels["ai.backend.session-id"] == session_id
    assert labels["ai.backend.owner"] == agent_id
    assert spec["Config"]["Cmd"] == ["/usr/bin/python3", "-s", "-m", "bai_kernel"]

    listed = await rpc.list_kernels()
    assert {"kernel_id": kernel_id, "session_id": session_id, "container_id": spec["Id"], "status": "RUNNING"} in listed
    assert isinstance(await rpc.get_logs(kernel_id), str)

    ipc_dir = Path(agent.config.agent.ipc_base_path) / kernel_id
    # The agent's own socket in its own (root-owned) directory, connectable by the kernel user only.
    sock = (ipc_dir / "agent.sock").lstat()
    assert stat.S_ISSOCK(sock.st_mode) and (sock.st_uid, sock.st_gid, stat.S_IMODE(sock.st_mode)) == (1000, 1000, 0o600)
    assert ipc_dir.lstat().st_uid == 0 and stat.S_IMODE(ipc_dir.lstat().st_mode) == 0o755
    # A host account that happens to have the kernel uid cannot reach the socket: the base is root's.
    assert stat.S_IMODE(ipc_dir.parent.lstat().st_mode) == 0o700
    as_kernel_uid = await asyncio.to_thread(
        subprocess.run,
        ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "/usr/bin/python3", "-c",
         f"import socket; socket.socket(socket.AF_UNIX).connect({str(ipc_dir / 'agent.sock')!r})"],
        capture_output=True, text=True, timeout=30)
    assert as_kernel_uid.returncode != 0 and "PermissionError" in as_kernel_uid.stderr
    stats = await rpc.destroy_kernel(kernel_id, session_id)
    assert stats["status"] == "terminated"
    terminated = await events.wait("kernel_terminated", source=agent_id, kernel_id=kernel_id)
    assert terminated["args"]["reason"] == "user-requested"
    # The event comes after the removal: nothing of the kernel is left.
    assert await containers_of(docker, kernel_id) == []
    assert not ipc_dir.exists()
    with pytest.raises(KernelNotFound):
        await rpc.execute(session_id, kernel_id, None, "query", "1")
    with pytest.raises(KernelNotFound):
        await rpc.destroy_kernel(kernel_id, session_id)


async def test_get_logs_is_a_bounded_tail(agent: AgentServer, rpc: AgentClient, events: EventLog,
                                         kernel_image: str) -> None:
    started = await create_kernel(rpc, events, agent.config.agent.id, kernel_config(kernel_image))
    kernel_id = started["kernel_id"]
    try:
        # Each crash of user code leaves one line in the container log (the runner's stderr).
        for code in range(3, 7):
            assert (await rpc.execute(None, kernel_id, None, "query", f"import os; os._exit({code})"))["exitCode"] == code
        lines = [f"bai-kernel: user-code process exited with status {code}\n" for code in range(3, 7)]
        assert (await rpc.get_logs(kernel_id)).endswith("".join(lines))
        assert await rpc.get_logs(kernel_id, tail_lines=2) == "".join(lines[-2:])
        # The byte cap keeps the newest whole lines that fit and says it cut.
        reply = await rpc.call("get_logs", {"kernel_id": kernel_id, "tail_lines": 10, "max_bytes": len(lines[-1]) + 5})
        assert reply == {"logs": lines[-1], "truncated": True}
        with pytest.raises(InvalidInput):
            await rpc.call("get_logs", {"kernel_id": kernel_id, "tail_lines": 10**6})
    finally:
        await rpc.destroy_kernel(kernel_id)


async def test_continue_and_input_through_rpc(agent: AgentServer, rpc: AgentClient, events: EventLog,
                                              kernel_image: str) -> None:
    kernel_id = str(uuid.uuid4())
    await create_kernel(rpc, events, agent.config.agent.id, kernel_config(kernel_image), kernel_id)
    try:
        first = await rpc.execute(None, kernel_id, None, "query",
                                  "print('a', flush=True)\nname = input('who? ')\nprint('hi', name)", flush_timeout=5)
        assert first["status"] == "waiting-input" and first["options"] == {"is_password": False}
        assert first["console"] == [["stdout", "a\nwho? "]]
        second = await rpc.execute(None, kernel_id, first["runId"], "input", "bai", flush_timeout=5)
        assert second["status"] == "finished" and second["console"] == [["stdout", "hi bai\n"]]
        slow = await rpc.execute(None, kernel_id, None, "query",
                                 "import os, time\nprint(1, flush=True)\n"
                                 "while not os.path.exists('/home/work/go'): time.sleep(0.01)\nprint(2)",
                                 flush_timeout=0.2)
        assert slow["status"] == "continued" and slow["console"] == [["stdout", "1\n"]]
        # A second query queues behind the first one (one run at a time per kernel).
        queued = asyncio.create_task(rpc.execute(None, kernel_id, None, "query", "print('next')", flush_timeout=10))
        await rpc.execute(None, kernel_id, None, "query", "", flush_timeout=0)  # noop run, also queued
        with pytest.raises(InvalidInput):
            await rpc.execute(None, kernel_id, "0000000000000000", "continue", "")
        # Unblock the first run from inside the container (touching the file via a new run would deadlock).
        proc = await asyncio.create_subprocess_exec(
            "docker", "exec", f"kernel.{kernel_id}", "touch", "/home/work/go")
        assert await proc.wait() == 0
        done = await rpc.execute(None, kernel_id, slow["runId"], "continue", "", flush_timeout=10)
        assert done["status"] == "finished" and done["console"] == [["stdout", "2\n"]]
        assert (await queued)["console"] == [["stdout", "next\n"]]
    finally:
        await rpc.destroy_kernel(kernel_id)


async def test_container_killed_externally(agent: AgentServer, rpc: AgentClient, events: EventLog,
                                           docker: aiodocker.Docker, kernel_image: str) -> None:
    agent_id = agent.config.agent.id
    started = await create_kernel(rpc, events, agent_id, kernel_config(kernel_image))
    kernel_id = started["kernel_id"]
    proc = await asyncio.create_subprocess_exec("docker", "kill", started["creation_info"]["container_id"],
                                                stdout=asyncio.subprocess.DEVNULL)
    assert await proc.wait() == 0
    terminated = await events.wait("kernel_terminated", source=agent_id, kernel_id=kernel_id)
    assert terminated["args"]["reason"] == "self-terminated"
    assert terminated["args"]["exit_code"] == 137
    assert await containers_of(docker, kernel_id) == []
    assert all(k["kernel_id"] != kernel_id for k in await rpc.list_kernels())


async def test_unknown_image_is_cancelled(agent: AgentServer, rpc: AgentClient, events: EventLog,
                                          docker: aiodocker.Docker) -> None:
    agent_id = agent.config.agent.id
    kernel_id = str(uuid.uuid4())
    await rpc.create_kernels("s", [kernel_id], [kernel_config("bai.local/no/such-image:0")])
    cancelled = await events.wait("kernel_cancelled", source=agent_id, kernel_id=kernel_id)
    assert cancelled["args"]["reason"] == "failed-to-create"
    assert "such-image" in cancelled["args"]["error"]
    assert await containers_of(docker, kernel_id) == []
    assert all(k["kernel_id"] != kernel_id for k in await rpc.list_kernels())


async def test_runner_that_never_starts_is_cancelled_fast(agent: AgentServer, rpc: AgentClient, events: EventLog,
                                                          docker: aiodocker.Docker, kernel_image: str) -> None:
    # The runtime exits at once: the death watch must cut the wait short (runner-start-timeout is 20 s).
    kernel_id = str(uuid.uuid4())
    config = kernel_config(kernel_image)
    config["image"]["labels"] = {"ai.backend.runtime-path": "/bin/false"}
    began = time.monotonic()
    await rpc.create_kernels("s", [kernel_id], [config])
    cancelled = await events.wait("kernel_cancelled", source=agent.config.agent.id, kernel_id=kernel_id)
    assert time.monotonic() - began < 10
    assert cancelled["args"]["reason"] == "failed-to-create"
    assert await containers_of(docker, kernel_id) == []


async def test_destroy_during_creation_and_multi_kernel_create(agent: AgentServer, rpc: AgentClient,
                                                               events: EventLog, docker: aiodocker.Docker,
                                                               kernel_image: str) -> None:
    agent_id = agent.config.agent.id
    doomed, kept, session_id = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    await rpc.create_kernels(session_id, [doomed, kept], [kernel_config(kernel_image), kernel_config(kernel_image)])
    # Straight away: the doomed kernel is still being created.
    assert (await rpc.destroy_kernel(doomed, session_id))["status"] == "terminated"
    terminated = await events.wait("kernel_terminated", source=agent_id, kernel_id=doomed)
    assert terminated["args"]["reason"] == "user-requested"
    assert await containers_of(docker, doomed) == []
    await events.wait("kernel_started", source=agent_id, kernel_id=kept, session_id=session_id)
    assert not events.find("kernel_started", source=agent_id, kernel_id=doomed)
    assert (await rpc.execute(session_id, kept, None, "query", "1 + 1"))["console"] == [["stdout", "2"]]
    await rpc.destroy_kernel(kept, session_id, reason="force-terminated")
    await events.wait("kernel_terminated", source=agent_id, kernel_id=kept, reason="force-terminated")


async def test_overcommit_is_refused(agent: AgentServer, rpc: AgentClient, events: EventLog,
                                     docker: aiodocker.Docker, kernel_image: str) -> None:
    kernel_id = str(uuid.uuid4())
    await rpc.create_kernels("s", [kernel_id], [kernel_config(kernel_image, cpu="4096")])
    cancelled = await events.wait("kernel_cancelled", source=agent.config.agent.id, kernel_id=kernel_id)
    assert "not enough cpu" in cancelled["args"]["error"]
    assert await containers_of(docker, kernel_id) == []


async def test_destroy_unknown_kernel_removes_stray_container(agent: AgentServer, rpc: AgentClient,
                                                              docker: aiodocker.Docker, kernel_image: str) -> None:
    kernel_id = str(uuid.uuid4())
    stray = await docker.containers.create({
        "Image": kernel_image, "Cmd": ["sleep", "60"],
        "Labels": {"ai.backend.kernel-id": kernel_id, "ai.backend.owner": agent.config.agent.id},
    })
    with pytest.raises(KernelNotFound):
        await rpc.destroy_kernel(kernel_id)
    assert await containers_of(docker, kernel_id) == []
    with pytest.raises(aiodocker.DockerError):
        await stray.show()


async def test_restarted_agent_readopts_kernels(agent_env: AgentEnv, events: EventLog, kernel_image: str) -> None:
    config = agent_env.config()
    agent_id = config.agent.id
    first = AgentServer(config)
    await first.start()
    try:
        async with AgentClient(first.addr, agent_env.secret) as rpc:
            started = await create_kernel(rpc, events, agent_id, kernel_config(kernel_image))
            kernel_id = started["kernel_id"]
            await rpc.execute(None, kernel_id, None, "query", "state = 'kept'")
    finally:
        await first.stop()
    await events.wait("agent_terminated", source=agent_id)

    second = AgentServer(config)
    await second.start()
    try:
        async with AgentClient(second.addr, agent_env.secret) as rpc:
            [listed] = await rpc.list_kernels()
            assert listed["kernel_id"] == kernel_id and listed["status"] == "RUNNING"
            result = await rpc.execute(None, kernel_id, None, "query", "state")
            assert result["console"] == [["stdout", "'kept'"]]
            await rpc.destroy_kernel(kernel_id)
            await events.wait("kernel_terminated", source=agent_id, kernel_id=kernel_id, reason="user-requested")
            assert await rpc.list_kernels() == []
    finally:
        await second.stop()


async def test_performance(agent: AgentServer, rpc: AgentClient, events: EventLog, kernel_image: str) -> None:
    """Prints the numbers (run with -s); asserts only generous bounds, the machine may be busy."""
    agent_id = agent.config.agent.id
    create_times = []
    for _ in range(3):
        began = time.perf_counter()
        started = await create_kernel(rpc, events, agent_id, kernel_config(kernel_image))
        create_times.append(time.perf_counter() - began)
        kernel_id = started["kernel_id"]
        if len(create_times) < 3:
            await rpc.destroy_kernel(kernel_id)
    raw_times = []
    for _ in range(3):
        began = time.perf_counter()
        proc = await asyncio.create_subprocess_exec("docker", "run", "--rm", kernel_image, "python3", "-c", "pass")
        assert await proc.wait() == 0
        raw_times.append(time.perf_counter() - began)
    try:
        for _ in range(20):
            await rpc.execute(None, kernel_id, None, "query", "print(1)")
        samples = []
        for _ in range(300):
            began = time.perf_counter()
            result = await rpc.execute(None, kernel_id, None, "query", "print(1)")
            samples.append(time.perf_counter() - began)
            assert result["console"] == [["stdout", "1\n"]]
    finally:
        await rpc.destroy_kernel(kernel_id)
    samples.sort()
    median_ms, p95_ms = statistics.median(samples) * 1000, samples[int(len(samples) * 0.95)] * 1000
    create_ms, raw_ms = statistics.median(create_times) * 1000, statistics.median(raw_times) * 1000
    print(f"\nexecute print(1) via RPC: median {median_ms:.2f} ms, p95 {p95_ms:.2f} ms")
    print(f"create->started median {create_ms:.0f} ms {[round(t * 1000) for t in create_times]}; "
          f"docker run --rm python3 -c pass median {raw_ms:.0f} ms {[round(t * 1000) for t in raw_times]}; "
          f"ratio {create_ms / raw_ms:.2f}")
    assert median_ms < 25
    assert create_ms < raw_ms * 3


async def test_agent_killed_hard_readopts_kernels(agent_env: AgentEnv, events: EventLog, kernel_image: str) -> None:
    """kill -9 of the agent process: the runner loses its connection, retries, and connects to
    the next agent's socket; the kernel keeps its state and no kernel is lost or duplicated."""
    agent_id = f"i-kill-{uuid.uuid4().hex[:8]}"
    agent_env.agent_ids.append(agent_id)
    toml = agent_env.root / f"{agent_id}.toml"
    toml.write_text(
        f'[etcd]\nnamespace = "{agent_env.namespace}"\naddr = "{agent_env.halfstack.etcd_addr}"\n'
        f'[agent]\nid = "{agent_id}"\nrpc-listen-addr = "127.0.0.1:0"\n'
        f'ipc-base-path = "{agent_env.root / "ipc"}"\nheartbeat-interval = 1.0\n'
        '[resource]\nreserved-cpu = 0\nreserved-mem = "0"\n')

    async def start_agent(dead_addr: str | None = None) -> tuple[asyncio.subprocess.Process, str]:
        seen = len(events.find("agent_heartbeat", source=agent_id))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from bai.agent.cli import main; main()", "start", "--config", str(toml))
        loop = asyncio.get_running_loop()
        end = loop.time() + 60
        while True:
            # a heartbeat of the killed agent may still arrive after it: wait for the new one's
            fresh = [b for b in events.find("agent_heartbeat", source=agent_id)[seen:]
                     if b["args"]["addr"] != dead_addr]
            if fresh:
                return proc, fresh[-1]["args"]["addr"]
            assert proc.returncode is None and loop.time() < end, "the agent did not come up"
            await events._poll(200)

    first, addr = await start_agent()
    try:
        async with AgentClient(addr, agent_env.secret) as rpc:
            started = await create_kernel(rpc, events, agent_id, kernel_config(kernel_image))
            kernel_id = started["kernel_id"]
            await rpc.execute(None, kernel_id, None, "query", "state = 'kept'")
    finally:
        first.kill()
        await first.wait()
    began = time.perf_counter()
    second, addr = await start_agent(dead_addr=addr)
    try:
        async with AgentClient(addr, agent_env.secret) as rpc:
            result = await rpc.execute(None, kernel_id, None, "query", "state")
            readopted = time.perf_counter() - began
            assert result["console"] == [["stdout", "'kept'"]]
            assert [k["kernel_id"] for k in await rpc.list_kernels()] == [kernel_id]
            print(f"\nagent kill -9: kernel usable again {readopted * 1000:.0f} ms after the new agent was started")
            await rpc.destroy_kernel(kernel_id)
    finally:
        second.terminate()
        async with asyncio.timeout(30):
            await second.wait()
    assert not events.find("kernel_terminated", source=agent_id, kernel_id=kernel_id, reason="self-terminated")
