"""Host mounts on a whole node (the real manager app and the real agent, as root): a tmpfs mounted
through ``/folders/_/mounts`` lands under each node's mount base (a temporary directory here) on the
manager's node and on the agent's, shows in ``GET /folders/_/mounts`` and in /proc/self/mounts,
``edit_fstab`` adds and removes exactly one line of each node's configured fstab (a file made
here), and unmounting removes it all. Hostile input is refused with 400 before anything is mounted
or read; non-superadmins are refused with 401. Whatever a test leaves mounted is unmounted at the
end."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from bai.agent.server import AgentServer
from bai.common import etcd as etcd_mod
from bai.common.agent_rpc import AgentClient, InvalidInput
from bai.common.host_mounts import HostMountsConfig
from bai.manager.server import build_app
from bai.manager.store import tables as t
from tests.e2e.conftest import official_client  # noqa: F401  (the official client's venv, made once)
from tests.fixtures.halfstack import HalfStack
from tests.fixtures.node_parts import node_parts

from .conftest import Node

pytestmark = pytest.mark.timeout(180)

FSTAB = "# made by test_host_mounts\nproc /proc proc defaults 0 0\n"
#: Allowed by the test nodes' fs-types but unknown to the kernel: a mount that fails for real.
UNKNOWN_FS = "bai-nosuchfs"


@dataclass
class Side:
    base: Path
    fstab: Path

    def mount_points(self) -> list[str]:
        """Mount points under the base, as the kernel reports them (stacked mounts repeat)."""
        with open("/proc/self/mounts") as f:
            points = [line.split()[1] for line in f]
        return [p for p in points if os.path.dirname(p) == str(self.base)]

    def mounted(self) -> set[str]:
        return set(self.mount_points())


@dataclass
class MountsNode:
    node: Node
    agent_id: str
    manager: Side
    agent: Side
    rpc_secret: str


def _side(root: Path, who: str) -> tuple[Side, HostMountsConfig]:
    side = Side(root / who / "mounts", root / who / "fstab")
    side.fstab.parent.mkdir(parents=True)
    side.fstab.write_text(FSTAB)
    return side, HostMountsConfig.model_validate({
        "enabled": True, "mount-base": str(side.base), "fstab-path": str(side.fstab),
        "fs-types": ["tmpfs", "nfs", UNKNOWN_FS], "command-timeout": 10})


def _unmount_everything(side: Side) -> None:
    for point in sorted(side.mounted(), reverse=True):
        subprocess.run(["umount", "-l", point], check=False, timeout=30)


@pytest.fixture(scope="module")
async def mnode(halfstack: HalfStack, kernel_image: str) -> AsyncIterator[MountsNode]:
    root = Path(tempfile.mkdtemp(prefix="bai-hostmounts-", dir="/tmp"))
    manager_side, manager_cfg = _side(root, "manager")
    agent_side, agent_cfg = _side(root, "agent")
    try:
        async with node_parts(halfstack, "hostmnt") as parts:
            # the parts' agent was never started: this one, with host mounts on, takes its place
            agent = AgentServer(parts.agent.config.model_copy(update={"host_mounts": agent_cfg}))
            manager_config = parts.manager_config.model_copy(update={"host_mounts": manager_cfg})
            client = TestClient(TestServer(build_app(manager_config), host="127.0.0.1"))
            await client.start_server()
            await agent.start()
            try:
                await parts.wait_agent_registered()
                async with etcd_mod.connect(manager_config.etcd.addr, manager_config.etcd.namespace) as etcd:
                    secret = await etcd.get("config/agent/rpc-secret") or ""
                yield MountsNode(Node(client, parts.db, parts.access_key, parts.secret_key, agent, parts.redis_addr),
                                 parts.agent_id, manager_side, agent_side, secret)
            finally:
                await client.close()
                await agent.stop()
    finally:
        _unmount_everything(manager_side)
        _unmount_everything(agent_side)
        shutil.rmtree(root, ignore_errors=True)


def _name() -> str:
    return f"hm-{secrets.token_hex(3)}"


def _fstab_lines(side: Side, target: Path) -> list[str]:
    return [line for line in side.fstab.read_text().splitlines() if line.split()[1:2] == [str(target)]]


async def test_tmpfs_mounted_listed_in_fstab_and_unmounted_on_manager_and_agent(mnode: MountsNode) -> None:
    n, name = mnode.node, _name()
    body = {"name": name, "fs_location": "bai-test", "fs_type": "tmpfs", "options": "size=1m,mode=0755",
            "edit_fstab": True}
    status, reply = await n.call("POST", "/folders/_/mounts", body)
    assert status == 200, reply
    assert reply["manager"]["success"] is True, reply
    assert reply["agents"][mnode.agent_id]["success"] is True, reply
    for side in (mnode.manager, mnode.agent):
        target = side.base / name
        assert side.mounted() == {str(target)}
        assert target.is_mount()
        (target / "probe").write_text("on the tmpfs")  # a real, writable filesystem
        lines = _fstab_lines(side, target)
        assert lines == [f"bai-test {target} tmpfs size=1m,mode=0755,nosuid,nodev 0 0"]
        assert side.fstab.read_text().startswith(FSTAB)  # the rest of the file is untouched

    status, listing = await n.call("GET", "/folders/_/mounts")
    assert status == 200, listing
    assert listing["manager"]["mounts"] == [str(mnode.manager.base / name)]
    agent_view = listing["agents"][mnode.agent_id]
    assert agent_view["success"] is True and agent_view["mounts"] == [str(mnode.agent.base / name)]
    assert agent_view["entries"][0]["fs_type"] == "tmpfs" and agent_view["entries"][0]["source"] == "bai-test"
    assert "nosuid" in agent_view["entries"][0]["options"].split(",")

    status, fstab = await n.call("GET", "/folders/_/fstab")
    assert status == 200, fstab
    assert fstab["node"] == "manager" and fstab["content"] == mnode.manager.fstab.read_text()
    status, fstab = await n.call("GET", f"/folders/_/fstab?agent_id={mnode.agent_id}&fstab_path={mnode.agent.fstab}")
    assert status == 200, fstab
    assert fstab == {"content": mnode.agent.fstab.read_text(), "node": "agent", "node_id": mnode.agent_id}

    # the same mount again changes nothing (no second mount, no second fstab line)
    status, again = await n.call("POST", "/folders/_/mounts", body)
    assert status == 200 and again["manager"]["success"] and again["agents"][mnode.agent_id]["success"], again
    for side in (mnode.manager, mnode.agent):
        assert len(_fstab_lines(side, side.base / name)) == 1
        assert side.mount_points() == [str(side.base / name)]

    status, reply = await n.call("DELETE", "/folders/_/mounts", {"name": name, "edit_fstab": True})
    assert status == 200, reply
    assert reply["manager"]["success"] and reply["agents"][mnode.agent_id]["success"], reply
    for side in (mnode.manager, mnode.agent):
        assert side.mounted() == set()
        assert not (side.base / name).exists()
        assert side.fstab.read_text() == FSTAB


async def test_umounts_alias_without_fstab_edit(mnode: MountsNode) -> None:
    n, name = mnode.node, _name()
    status, reply = await n.call("POST", "/folders/_/mounts", {"name": name, "fs_location": "t", "fs_type": "tmpfs"})
    assert status == 200 and reply["manager"]["success"] and reply["agents"][mnode.agent_id]["success"], reply
    assert mnode.agent.fstab.read_text() == FSTAB and mnode.manager.fstab.read_text() == FSTAB
    status, reply = await n.call("POST", "/folders/_/umounts", {"name": name})
    assert status == 200 and reply["manager"]["success"] and reply["agents"][mnode.agent_id]["success"], reply
    assert mnode.manager.mounted() == set() and mnode.agent.mounted() == set()
    # nothing there any more: unmounting again succeeds and says so
    status, reply = await n.call("POST", "/folders/_/umounts", {"name": name})
    assert status == 200 and "nothing is mounted" in reply["agents"][mnode.agent_id]["message"], reply


async def test_a_failing_mount_leaves_nothing_behind(mnode: MountsNode) -> None:
    n, name = mnode.node, _name()
    status, reply = await n.call("POST", "/folders/_/mounts", {
        "name": name, "fs_location": "nowhere", "fs_type": UNKNOWN_FS, "edit_fstab": True})
    assert status == 200, reply
    for result in (reply["manager"], reply["agents"][mnode.agent_id]):
        assert result["success"] is False and "mount failed" in result["message"], reply
    for side in (mnode.manager, mnode.agent):
        assert side.mounted() == set() and not (side.base / name).exists()
        assert side.fstab.read_text() == FSTAB


async def test_only_the_named_resource_group_s_agents_are_asked(mnode: MountsNode) -> None:
    n, name = mnode.node, _name()
    status, reply = await n.call("POST", "/folders/_/mounts", {
        "name": name, "fs_location": "t", "fs_type": "tmpfs", "scaling_group": "no-such-group"})
    try:
        assert status == 200 and reply["manager"]["success"] and reply["agents"] == {}, reply
        assert mnode.agent.mounted() == set()
    finally:
        status, reply = await n.call("DELETE", "/folders/_/mounts", {"name": name})
        assert status == 200 and reply["manager"]["success"], reply
    assert mnode.manager.mounted() == set()


GOOD = {"name": "ok", "fs_location": "t", "fs_type": "tmpfs"}


@pytest.mark.parametrize(("change", "where"), [
    ({"name": "../escape"}, "name"),
    ({"name": ".."}, "name"),
    ({"name": "a/b"}, "name"),
    ({"name": ".hidden"}, "name"),
    ({"name": "x" * 65}, "name"),
    ({"name": "nul\u0000"}, None),
    ({"options": "size=1m,bind"}, "options"),
    ({"options": "size=1m,remount"}, "options"),
    ({"options": "size=1m, suid"}, "options"),
    ({"options": "suid"}, "options"),
    ({"options": "x-mount.mkdir=0777"}, "options"),
    ({"options": "size=1m,,mode=1"}, "options"),
    ({"options": "size=1m\nbind"}, "options"),
    ({"options": "size=1m\u0000,bind"}, None),
    ({"options": "mode='0'"}, "options"),
    ({"fs_location": "-oremount"}, "fs_location"),
    ({"fs_location": "a b"}, "fs_location"),
    ({"fs_location": "a,b"}, "fs_location"),
    ({"fs_location": "x\n/etc/shadow /mnt ext4"}, "fs_location"),
    ({"fs_type": "ext4"}, None),  # well-formed, but not in the node's fs-types
    ({"fs_type": "TMPFS;rm"}, "fs_type"),
    ({"fstab_path": "/etc/shadow", "edit_fstab": True}, None),
    ({"fstab_path": "/tmp/../etc/fstab"}, "fstab_path"),
    ({"edit_fstab": 1}, "edit_fstab"),
    ({"unknown": 1}, "unknown"),
])
async def test_hostile_mount_requests_are_400_and_touch_nothing(mnode: MountsNode, change: dict[str, Any],
                                                                 where: str | None) -> None:
    status, reply = await mnode.node.call("POST", "/folders/_/mounts", {**GOOD, **change})
    assert status == 400, reply
    assert mnode.node.last_headers["Content-Type"].startswith("application/problem+json")
    if where is not None:
        assert where in str(reply.get("data") or reply.get("msg")), reply
    for side in (mnode.manager, mnode.agent):
        assert side.mounted() == set()
        assert not side.base.exists() or os.listdir(side.base) == []
        assert side.fstab.read_text() == FSTAB


async def test_hostile_umount_and_fstab_requests_are_400(mnode: MountsNode) -> None:
    n = mnode.node
    for body in ({"name": "../agent"}, {"name": "x", "fstab_path": "/etc/passwd", "edit_fstab": True}):
        for method, path in (("DELETE", "/folders/_/mounts"), ("POST", "/folders/_/umounts")):
            status, reply = await n.call(method, path, body)
            assert status == 400, (method, body, reply)
    for query in ("fstab_path=/etc/passwd", f"fstab_path=/etc/passwd&agent_id={mnode.agent_id}",
                  f"fstab_path={mnode.manager.fstab}/../../agent/fstab", "fstab_path=relative/fstab"):
        status, reply = await n.call("GET", f"/folders/_/fstab?{query}")
        assert status == 400, (query, reply)
        assert "root:" not in str(reply)  # nothing of the named file came back
    # the agent's fstab is only the agent's: the manager does not read it for itself
    status, reply = await n.call("GET", f"/folders/_/fstab?fstab_path={mnode.agent.fstab}")
    assert status == 400 and "proc /proc" not in str(reply), reply
    status, reply = await n.call("GET", "/folders/_/fstab?agent_id=i-no-such-agent")
    assert status == 404, reply


async def test_non_superadmins_are_refused(mnode: MountsNode) -> None:
    n = mnode.node
    user = await n.add_keypair({"total_resource_slots": {}, "max_concurrent_sessions": 1})
    admin = await n.add_keypair({"total_resource_slots": {}, "max_concurrent_sessions": 1})
    async with n.db.begin() as conn:
        await conn.execute(sa.update(t.users).where(t.users.c.main_access_key == admin[0]).values(role="admin"))
    for keys in (user, admin):
        for method, path, body in (
                ("GET", "/folders/_/mounts", None), ("GET", "/folders/_/fstab", None),
                ("POST", "/folders/_/mounts", {**GOOD, "name": "denied"}),
                ("POST", "/folders/_/umounts", {"name": "denied"}),
                ("DELETE", "/folders/_/mounts", {"name": "denied"})):
            status, reply = await n.call(method, path, body, keys=keys)
            assert status == 401, (keys, method, path, reply)
            assert "content" not in reply and "manager" not in reply
    for side in (mnode.manager, mnode.agent):
        assert side.mounted() == set() and side.fstab.read_text() == FSTAB


@pytest.mark.parametrize("request_", [
    {"name": "../x", "fs_location": "t", "fs_type": "tmpfs"},
    {"name": "ok", "fs_location": "t", "fs_type": "tmpfs", "options": "remount,size=1m"},
    {"name": "ok", "fs_location": "-t", "fs_type": "tmpfs"},
    {"name": "ok", "fs_location": "t", "fs_type": "ext4"},  # not in this agent's fs-types
    {"name": "ok", "fs_location": "t", "fs_type": "tmpfs", "fstab_path": "/etc/fstab", "edit_fstab": True},
])
async def test_the_agent_checks_its_rpc_input_itself(mnode: MountsNode, request_: dict[str, Any]) -> None:
    """Whoever holds the RPC secret still cannot mount outside the base, inject options or edit
    another file: the agent refuses with agent-invalid-input before doing anything."""
    async with AgentClient(mnode.node.agent.addr, mnode.rpc_secret) as client:
        with pytest.raises(InvalidInput) as refused:
            await client.call("mount_host", request_)
        assert refused.value.status == 400
        with pytest.raises(InvalidInput):
            await client.read_fstab("/etc/passwd")
    assert mnode.agent.mounted() == set() and mnode.agent.fstab.read_text() == FSTAB
    assert not mnode.agent.base.exists() or os.listdir(mnode.agent.base) == []


async def _official(exe: Path, n: Node, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKEND_", "SORNA_"))}
    env.update({"BACKEND_ENDPOINT": f"http://{n.client.host}:{n.client.port}", "BACKEND_ENDPOINT_TYPE": "api",
                "BACKEND_ACCESS_KEY": n.access_key, "BACKEND_SECRET_KEY": n.secret_key})
    proc = await asyncio.create_subprocess_exec(str(exe), *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(120):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_the_official_client_s_admin_vfolder_commands(mnode: MountsNode, official_client: Path) -> None:  # noqa: F811
    """``backend.ai admin vfolder list-mounts|mount-host|umount-host|get-fstab-contents`` of the
    official client 24.3.11 read our answers (it always asks for nfs, which this host lacks)."""
    n, name = mnode.node, _name()
    status, reply = await n.call("POST", "/folders/_/mounts", {"name": name, "fs_location": "t", "fs_type": "tmpfs"})
    assert status == 200 and reply["agents"][mnode.agent_id]["success"], reply
    rc, out = await _official(official_client, n, "admin", "vfolder", "list-mounts")
    assert rc == 0, out
    assert out.startswith("manager\n") and f"mounts : ['{mnode.manager.base / name}']" in out, out
    assert f"  {mnode.agent_id}\n" in out and f"mounts : ['{mnode.agent.base / name}']" in out, out

    rc, out = await _official(official_client, n, "admin", "vfolder", "umount-host", name)
    assert rc == 0 and "success : True" in out and f"unmounted {mnode.agent.base / name}" in out, out
    assert mnode.manager.mounted() == set() and mnode.agent.mounted() == set()

    rc, out = await _official(official_client, n, "admin", "vfolder", "mount-host", "-o", "vers=4", "--edit-fstab",
                              "127.0.0.1:/nothing", name)
    assert rc == 0 and "success : False" in out and "success : True" not in out, out
    assert mnode.agent.fstab.read_text() == FSTAB and mnode.manager.fstab.read_text() == FSTAB
    assert not (mnode.agent.base / name).exists()

    rc, out = await _official(official_client, n, "admin", "vfolder", "get-fstab-contents", "-a", mnode.agent_id)
    assert rc == 0 and "'node': 'agent'" in out and "proc /proc proc defaults" in out, out


async def test_mounts_and_refusals_are_on_the_audit_log(mnode: MountsNode) -> None:
    n, name = mnode.node, _name()
    user = await n.add_keypair({"total_resource_slots": {}, "max_concurrent_sessions": 1})
    assert (await n.call("POST", "/folders/_/mounts", {**GOOD, "name": name}))[0] == 200
    assert (await n.call("DELETE", "/folders/_/mounts", {"name": name}))[0] == 200
    assert (await n.call("POST", "/folders/_/mounts", {**GOOD, "name": name}, keys=user))[0] == 401
    # a refused caller is named by the key it claimed (it is no requester)
    expected = {("POST /folders/_/mounts", "ok", n.access_key), ("DELETE /folders/_/mounts", "ok", n.access_key),
                ("POST /folders/_/mounts", "denied", user[0])}
    loop = asyncio.get_running_loop()
    end = loop.time() + 30
    while True:  # the audit writer stores its queue in the background
        async with n.db.connect() as conn:
            rows = (await conn.execute(sa.select(t.audit_logs.c.operation, t.audit_logs.c.outcome,
                                                 t.audit_logs.c.access_key, t.audit_logs.c.args)
                                       .where(t.audit_logs.c.operation.like("% /folders/_/%mounts")))).all()
        seen = {(r.operation, r.outcome, r.access_key) for r in rows if r.args.get("name") == name}
        seen |= {(r.operation, r.outcome, r.args.get("access_key")) for r in rows if r.outcome == "denied"}
        if expected <= seen or loop.time() > end:
            break
        await asyncio.sleep(0.1)
    assert expected <= seen, rows


async def test_the_agent_s_mount_rpc_needs_the_secret(mnode: MountsNode) -> None:
    async with AgentClient(mnode.node.agent.addr, "not-the-secret") as client:
        for call in (client.mount_host(_name(), "t", "tmpfs"), client.read_fstab(), client.host_mounts()):
            with pytest.raises(InvalidInput) as refused:
                await call
            assert refused.value.status == 401
    assert mnode.agent.mounted() == set()
