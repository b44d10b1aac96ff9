"""Service ports on a whole node: published host ports in the session's info, start-service of
the web terminal (``ttyd``) and of JupyterLab through the manager's service function (what the
start-service endpoint and the app proxy call), refused requests, and the host ports freed
when the session ends -- the real manager and agent, real Docker, the real kernel images."""

from __future__ import annotations

import asyncio
import secrets
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from bai.agent.server import AgentServer
from bai.manager import errors
from bai.manager.api.keys import CTX
from bai.manager.services.sessions.services import start_service
from bai.manager.store import keypairs as keypair_store
from bai.manager.store.keypairs import Requester
from tests.fixtures.images import REPO

from .conftest import Node
from .test_sessions import containers, wait_status

JUPYTER_IMAGE = "bai.local/stable/python-jupyter:3.11-debian12"
ROOTFS = "/var/cache/bai/rootfs-python-bookworm"


@pytest.fixture(scope="module")
def jupyter_image(kernel_image: str) -> Iterator[str]:
    # Idempotent: one `docker image inspect` when the image is current; a rebuild from the
    # cached venv'ed rootfs when only its script changed; ~1 min from PyPI otherwise.
    subprocess.run(["bash", str(REPO / "roles/files/build-jupyter-image.sh"), JUPYTER_IMAGE, ROOTFS],
                   check=True, timeout=900, stdout=subprocess.DEVNULL)
    yield JUPYTER_IMAGE


def name() -> str:
    return f"sp-{secrets.token_hex(4)}"


async def requester(node: Node, access_key: str | None = None) -> Requester:
    async with node.db.connect() as conn:
        found = await keypair_store.get_requester(conn, access_key or node.access_key)
    assert found is not None
    return found


async def create(node: Node, image: str, **extra: Any) -> tuple[str, str]:
    n = name()
    st, body = await node.call("POST", "/session", {"name": n, "image": image, **extra})
    assert st == 201 and body["status"] == "RUNNING", body
    return n, str(body["sessionId"])


async def http_get(url: str, deadline: float = 10.0) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=deadline)) as resp:
            return resp.status, await resp.text()


def bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_web_terminal_started_on_demand_and_ports_freed(node: Node) -> None:
    n, sid = await create(node, "python")
    st, info = await node.call("GET", f"/session/{n}")
    assert st == 200, info
    (ttyd,) = [sp for sp in info["servicePorts"] if sp["name"] == "ttyd"]
    assert ttyd["protocol"] == "http" and ttyd["ports"] == [7681] and len(ttyd["host_ports"]) == 1
    host_port = ttyd["host_ports"][0]
    # Published on the agent's bind host only.
    (container,) = await containers(sid)
    assert container["HostConfig"]["PortBindings"]["7681/tcp"] == [{"HostIp": "127.0.0.1",
                                                                     "HostPort": str(host_port)}]
    assert host_port in node.agent.agent.ports.held(container["Config"]["Labels"]["ai.backend.kernel-id"])

    ctx, me = node.client.app[CTX], await requester(node)
    first = await start_service(ctx, me, n, "ttyd")
    assert first["status"] == "started" and first["kernel_port"] == host_port, first
    assert (first["kernel_host"], first["protocol"], first["container_port"]) == ("127.0.0.1", "http", 7681)
    assert first["session_id"] == sid
    again = await start_service(ctx, me, n, "ttyd")
    assert again["status"] == "running" and again["kernel_port"] == host_port
    status, page = await http_get(f"http://127.0.0.1:{host_port}/")
    assert status == 200 and "ShellInABox" in page, page[:300]

    # Refused: an unknown service (the known ones are listed), options the definition does not
    # allow, a port the service lacks, someone else's session.
    with pytest.raises(errors.InvalidAPIParameters, match=r"no service 'jupyter' \(its services: sshd, ttyd\)"):
        await start_service(ctx, me, n, "jupyter")
    with pytest.raises(errors.InvalidAPIParameters, match="LD_PRELOAD"):
        await start_service(ctx, me, n, "ttyd", envs='{"LD_PRELOAD": "/tmp/x.so"}')
    with pytest.raises(errors.InvalidAPIParameters, match="arguments must be a JSON object"):
        await start_service(ctx, me, n, "ttyd", arguments="[1")
    with pytest.raises(errors.InvalidAPIParameters, match="has no port 9999"):
        await start_service(ctx, me, n, "ttyd", port=9999)
    stranger_ak, _ = await node.add_keypair({"total_resource_slots": {}})
    with pytest.raises(errors.SessionNotFound):
        await start_service(ctx, await requester(node, stranger_ak), n, "ttyd")
    # The session keeps running, the terminal too.
    assert (await start_service(ctx, me, n, "ttyd"))["status"] == "running"

    st, _ = await node.call("DELETE", f"/session/{n}")
    assert st == 200
    await wait_status(node, sid, {"TERMINATED"})
    kernel_id = container["Config"]["Labels"]["ai.backend.kernel-id"]
    assert node.agent.agent.ports.held(kernel_id) == []
    # Docker's proxy let go of the port: anything (the next session) can take it.
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while not bindable(host_port):
        assert loop.time() < end, f"host port {host_port} still taken after the session ended"
        await asyncio.sleep(0.05)
    with pytest.raises(errors.SessionNotFound):
        await start_service(ctx, me, n, "ttyd")


async def test_jupyterlab_started_with_its_token(node: Node, jupyter_image: str) -> None:
    # Heartbeats tell the manager about the image; wait for the alias to resolve.
    loop = asyncio.get_running_loop()
    end = loop.time() + 30
    while True:
        n = name()
        st, body = await node.call("POST", "/session", {"name": n, "image": jupyter_image})
        if st == 201:
            break
        assert loop.time() < end and st in (400, 404), body
        await asyncio.sleep(0.5)
    assert body["status"] == "RUNNING", body
    (jupyter,) = [sp for sp in body["servicePorts"] if sp["name"] == "jupyter"]
    assert jupyter["protocol"] == "http" and jupyter["ports"] == [8080]
    assert jupyter["allowed_envs"] == ["JUPYTER_TOKEN"] and jupyter["url_template"].startswith("{protocol}://")
    assert {sp["name"] for sp in body["servicePorts"]} == {"jupyter", "sshd", "ttyd"}

    ctx, me = node.client.app[CTX], await requester(node)
    token = secrets.token_hex(16)
    with pytest.raises(errors.InvalidAPIParameters, match=r"--ServerApp.token"):
        await start_service(ctx, me, n, "jupyter", arguments={"--ServerApp.token": ""})
    started = await start_service(ctx, me, n, "jupyter", envs={"JUPYTER_TOKEN": token})
    assert started["status"] == "started", started
    port = started["kernel_port"]
    status, text = await http_get(f"http://127.0.0.1:{port}/api/status?token={token}")
    assert status == 200 and '"started"' in text, text
    # Nobody without the token gets in.
    assert (await http_get(f"http://127.0.0.1:{port}/api/status"))[0] == 403
    assert (await http_get(f"http://127.0.0.1:{port}/api/status?token=wrong"))[0] == 403
    assert (await start_service(ctx, me, n, "jupyter"))["status"] == "running"
    # Query mode runs on the image's venv python (JupyterLab's packages are there).
    st, out = await node.call("POST", f"/session/{n}", {"mode": "query", "runId": None,
                                                         "code": "import sys; print(sys.prefix)"})
    assert st == 200 and out["result"]["console"] == [["stdout", "/opt/jupyter\n"]], out
    st, _ = await node.call("DELETE", f"/session/{n}")
    assert st == 200



async def test_a_restarted_agent_takes_its_kernels_ports_back(node: Node) -> None:
    n, sid = await create(node, "python")
    ctx, me = node.client.app[CTX], await requester(node)
    started = await start_service(ctx, me, n, "ttyd")
    assert started["status"] == "started"
    kernel_id, host_port = started["kernel_id"], started["kernel_port"]
    # Back on the same address (the manager knows the kernel's agent by it), as in production.
    old = node.agent.config
    config = old.model_copy(update={"agent": old.agent.model_copy(
        update={"rpc_listen_addr": node.agent.addr.removeprefix("http://")})})
    await node.agent.stop()
    # The fixture stops only the agent it started: this one is stopped here (last test of the module).
    node.agent = AgentServer(config)
    try:
        await node.agent.start()
        # Rebuilt from the container's label: the ports (sshd's and ttyd's) are held again, the
        # service still runs.
        held = node.agent.agent.ports.held(kernel_id)
        assert host_port in held and len(held) == 2, held
        loop = asyncio.get_running_loop()
        end = loop.time() + 15
        while True:  # the runner reconnects to the new agent within its back-off
            try:
                again = await start_service(ctx, me, n, "ttyd")
                break
            except errors.InternalServerError as exc:
                assert loop.time() < end, exc
                await asyncio.sleep(0.1)
        assert again["status"] == "running" and again["kernel_port"] == host_port
        assert (await http_get(f"http://127.0.0.1:{host_port}/"))[0] == 200
        st, _ = await node.call("DELETE", f"/session/{n}")
        assert st == 200
        await wait_status(node, sid, {"TERMINATED"})
        assert node.agent.agent.ports.held(kernel_id) == []
    finally:
        await node.agent.stop()
