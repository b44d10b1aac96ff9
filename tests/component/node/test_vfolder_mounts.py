"""Virtual folders mounted into sessions on a whole node: the real manager and agent, Docker, the
kernel image and a real storage proxy (in-process, over a volume under /tmp). A file written
inside the session appears in the folder; a read-only mount refuses writes with EROFS; subpaths,
mount_map aliases and auto-mounted dot-folders land where asked; refused mounts answer 4xx before
anything is enqueued."""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from bai.common import etcd as etcd_mod
from bai.manager.server import build_app
from bai.manager.store import tables as t
from bai.storage.server import running
from tests.component.storage.conftest import make_config
from tests.fixtures.halfstack import HalfStack, free_port
from tests.fixtures.node_parts import node_parts

from .conftest import Node

pytestmark = pytest.mark.timeout(300)

RESOURCES = {"cpu": "1", "mem": "320m"}


@dataclass
class MountNode:
    node: Node
    volume_root: Path
    user: tuple[str, str]  # a plain user of the default domain and project
    user_email: str


@pytest.fixture(scope="module")
async def mnode(halfstack: HalfStack, kernel_image: str) -> AsyncIterator[MountNode]:
    # Under /tmp: the Docker engine of this host binds it into kernels.
    volume_root = Path(tempfile.mkdtemp(prefix="bai-vfmount-", dir="/tmp")) / "volume1"
    volume_root.mkdir()
    proxy_config = make_config(volume_root, manager_port=free_port(), client_port=free_port())
    async with node_parts(halfstack, "vfmount") as parts, running(proxy_config):
        cfg = parts.manager_config.etcd
        async with etcd_mod.connect(cfg.addr, cfg.namespace) as etcd:
            for key, value in {
                "volumes/_types/user": "", "volumes/_types/group": "", "volumes/default_host": "local:volume1",
                "volumes/proxies/local/manager_api": f"http://{proxy_config.api.manager.service_addr}",
                "volumes/proxies/local/client_api": f"http://{proxy_config.api.client.service_addr}",
                "volumes/proxies/local/secret": proxy_config.api.manager.secret,
            }.items():
                await etcd.put(key, value)
        client = TestClient(TestServer(build_app(parts.manager_config), host="127.0.0.1"))
        await client.start_server()
        await parts.agent.start()
        try:
            await parts.wait_agent_registered()
            node = Node(client, parts.db, parts.access_key, parts.secret_key, parts.agent, parts.redis_addr)
            user = await node.add_keypair({"total_resource_slots": {}, "max_concurrent_sessions": 5,
                                           "allowed_vfolder_hosts": {"local:volume1": ["mount-in-session"]}})
            async with parts.db.connect() as conn:
                email = await conn.scalar(sa.select(t.keypairs.c.user_id).where(t.keypairs.c.access_key == user[0]))
            yield MountNode(node, volume_root, user, str(email))
        finally:
            await client.close()
            await parts.agent.stop()
            shutil.rmtree(volume_root.parent, ignore_errors=True)


def name() -> str:
    return f"vm-{secrets.token_hex(3)}"


async def _folder(n: Node, folder: str, keys: tuple[str, str] | None = None, **extra: Any) -> str:
    status, body = await n.call("POST", "/folders", {"name": folder, **extra}, keys=keys)
    assert status == 201, body
    return str(body["id"])


async def _run(n: Node, session: str, code: str, keys: tuple[str, str] | None = None) -> dict[str, Any]:
    status, res = await n.call("POST", f"/session/{session}", {"mode": "query", "code": code, "runId": None},
                               keys=keys)
    assert status == 200, res
    result: dict[str, Any] = res["result"]
    return result


async def _stdout_json(n: Node, session: str, code: str, keys: tuple[str, str] | None = None) -> Any:
    result = await _run(n, session, code, keys)
    out = "".join(text for kind, text in result["console"] if kind == "stdout")
    assert result["exitCode"] == 0, result["console"]
    return json.loads(out)


PROBE = r'''
import errno, json, os
out = {}
open("/home/work/work-rw/hello.txt", "w").write("written inside the session")
os.makedirs("/home/work/work-rw/deep/er", exist_ok=True)
out["listing"] = sorted(os.listdir("/home/work/work-rw"))
out["owner_uid"] = os.stat("/home/work/work-rw/hello.txt").st_uid
out["aliased"] = open("/home/work/inputs/input.txt").read()
try:
    open("/home/work/inputs/new.txt", "w").write("x")
    out["ro_write"] = "allowed"
except OSError as exc:
    out["ro_write"] = errno.errorcode.get(exc.errno, str(exc.errno))
out["dot"] = sorted(os.listdir("/home/work/.cfgdir"))
out["uid"] = os.getuid()
print(json.dumps(out))
'''


async def test_mounts_write_read_only_subpath_alias_and_dot_folder(mnode: MountNode) -> None:
    n = mnode.node
    await _folder(n, "work-rw")
    await _folder(n, "data-src")
    await _folder(n, ".cfgdir")
    status, _ = await n.call("POST", "/folders/data-src/mkdir", {"path": "sub"})
    assert status == 201
    status, _ = await n.call("POST", "/folders/.cfgdir/mkdir", {"path": "marker"})
    assert status == 201
    # a file placed in the folder's subdirectory through the storage proxy's volume
    sub = next(p for p in mnode.volume_root.rglob("sub") if p.is_dir())
    (sub / "input.txt").write_text("from the folder")
    sub.chmod(0o755)
    (sub / "input.txt").chmod(0o644)

    s = name()
    status, body = await n.call("POST", "/session", {"name": s, "image": "python", "config": {
        "resources": RESOURCES, "mounts": ["work-rw", "data-src/sub"], "mount_map": {"data-src/sub": "inputs"},
        "mount_options": {"data-src/sub": {"type": "bind", "permission": "ro"}}}})
    assert status == 201 and body["status"] == "RUNNING", body
    try:
        seen = await _stdout_json(n, s, PROBE)
        assert seen["uid"] == 1000 and seen["owner_uid"] == 1000
        assert seen["listing"] == ["deep", "hello.txt"]
        assert seen["aliased"] == "from the folder"
        assert seen["ro_write"] == "EROFS"
        assert seen["dot"] == ["marker"]
        # what the session wrote is in the folder: on the volume and through the API
        written = next(p for p in mnode.volume_root.rglob("hello.txt"))
        assert written.read_bytes() == b"written inside the session"
        status, files = await n.call("GET", "/folders/work-rw/files?path=.")
        assert status == 200 and sorted(f["name"] for f in files["items"]) == ["deep", "hello.txt"]
        assert not (sub / "new.txt").exists()

        status, info = await n.call("GET", f"/session/{s}")
        assert status == 200 and sorted(info["mounts"]) == [".cfgdir", "data-src", "work-rw"]
        status, gql = await n.call("POST", "/admin/gql", {"query": (
            "query($id: UUID!) { compute_session(id: $id) { mounts vfolder_mounts } }"),
            "variables": {"id": body["sessionId"]}})
        assert status == 200, gql
        got = gql["data"]["compute_session"]
        assert sorted(got["mounts"]) == [".cfgdir", "data-src", "work-rw"] and len(got["vfolder_mounts"]) == 3
        async with n.db.connect() as conn:
            stored = await conn.scalar(sa.select(t.sessions.c.vfolder_mounts).where(t.sessions.c.name == s))
        by_name = {m["name"]: m for m in stored}
        assert by_name["data-src"]["kernel_path"] == "/home/work/inputs"
        assert by_name["data-src"]["vfsubpath"] == "sub" and by_name["data-src"]["mount_perm"] == "ro"
        assert by_name["work-rw"]["kernel_path"] == "/home/work/work-rw"
        assert by_name[".cfgdir"]["kernel_path"] == "/home/work/.cfgdir"
    finally:
        await n.call("DELETE", f"/session/{s}")


async def test_shared_read_only_folder_mounts_read_only(mnode: MountNode) -> None:
    n, user = mnode.node, mnode.user
    lent_id = await _folder(n, "lent")
    status, body = await n.call("POST", "/folders/lent/invite", {"perm": "ro", "user_ids": [mnode.user_email]})
    assert status == 201, body
    status, invs = await n.call("GET", "/folders/invitations/list", keys=user)
    inv = next(i for i in invs["invitations"] if i["vfolder_name"] == "lent")
    assert (await n.call("POST", "/folders/invitations/accept", {"inv_id": inv["id"]}, keys=user))[0] == 200

    before = await n.rows(t.sessions)
    refused = await n.call("POST", "/session", {"name": name(), "image": "python", "config": {
        "resources": RESOURCES, "mounts": ["lent"], "mount_options": {"lent": {"permission": "rw"}}}}, keys=user)
    assert refused[0] == 400 and refused[1]["type"].endswith("/vfolder-permission-error"), refused
    assert await n.rows(t.sessions) == before

    s = name()  # mounted by its ID this time: the kernel path is still its name
    status, created = await n.call("POST", "/session", {"name": s, "image": "python", "config": {
        "resources": RESOURCES, "mounts": [lent_id]}}, keys=user)
    assert status == 201 and created["status"] == "RUNNING", created
    try:
        seen = await _stdout_json(n, s, r'''
import errno, json, os
try:
    open("/home/work/lent/mine.txt", "w").write("x")
    r = "allowed"
except OSError as exc:
    r = errno.errorcode.get(exc.errno, str(exc.errno))
print(json.dumps({"write": r, "listable": isinstance(os.listdir("/home/work/lent"), list)}))
''', keys=user)
        assert seen == {"write": "EROFS", "listable": True}
        assert not list(mnode.volume_root.rglob("mine.txt"))
    finally:
        await n.call("DELETE", f"/session/{s}", keys=user)


async def test_refused_mounts_enqueue_nothing(mnode: MountNode) -> None:
    n, user = mnode.node, mnode.user
    await _folder(n, "busy")
    await _folder(n, "other")
    status, _ = await n.call("POST", "/folders/busy/mkdir", {"path": "a/b"})
    assert status == 201
    await _folder(n, "private-of-admin")
    cases: list[tuple[dict[str, Any], tuple[str, str] | None, int]] = [
        ({"mounts": ["no-such-folder"]}, None, 404),
        ({"mounts": ["private-of-admin"]}, user, 404),  # another user's folder, not shared
        ({"mounts": ["busy", "busy/a"]}, None, 400),  # overlapping sources
        ({"mounts": ["busy", "other"], "mount_map": {"busy": "x", "other": "x/y"}}, None, 400),  # nested targets
        ({"mounts": ["busy", "other"], "mount_map": {"busy": "same", "other": "same"}}, None, 400),
        ({"mounts": ["busy"], "mount_map": {"busy": "/etc/cron.d"}}, None, 400),  # system path
        ({"mounts": ["busy"], "mount_map": {"busy": "/opt/bai/ipc"}}, None, 400),  # the runner's
        ({"mounts": ["busy"], "mount_map": {"busy": "../../etc"}}, None, 400),
        ({"mounts": ["busy", "other"], "mount_map": {"busy": "x", "other": "busy"}}, None, 400),  # a mapped name
        ({"mounts": ["busy/../../x"]}, None, 400),
        ({"mounts": ["busy/no/such/dir"]}, None, 400),  # the proxy finds no such subpath
        ({"mounts": ["busy"], "mount_options": {"busy": {"permission": "rwx"}}}, None, 400),
        ({"mounts": ["busy\x01"]}, None, 400),
    ]
    before = (await n.rows(t.sessions), await n.rows(t.kernels))
    for config, keys, want in cases:
        status, body = await n.call("POST", "/session", {"name": name(), "image": "python",
                                                          "config": {"resources": RESOURCES, **config}}, keys=keys)
        assert status == want, (config, body)
        assert body["type"].startswith("https://api.backend.ai/probs/")
        assert str(mnode.volume_root) not in json.dumps(body)  # no host path in the answer
    assert (await n.rows(t.sessions), await n.rows(t.kernels)) == before


async def test_project_local_folder_is_each_users_own_local(mnode: MountNode) -> None:
    """Runs last (it adds a dot-folder every later session of the project would mount): a
    project's ``.local`` is mounted at /home/work/.local as a directory of its own per user."""
    n, user = mnode.node, mnode.user
    status, body = await n.call("POST", "/folders", {"name": ".local", "group": "default"})
    assert status == 201, body
    s = name()
    status, created = await n.call("POST", "/session", {"name": s, "image": "python",
                                                        "config": {"resources": RESOURCES}}, keys=user)
    assert status == 201 and created["status"] == "RUNNING", created
    try:
        seen = await _stdout_json(n, s, r'''
import json, os
open("/home/work/.local/mine.txt", "w").write("per user")
print(json.dumps(sorted(os.listdir("/home/work/.local"))))
''', keys=user)
        assert seen == ["mine.txt"]
        written = next(mnode.volume_root.rglob("mine.txt"))
        async with n.db.connect() as conn:
            user_uuid = await conn.scalar(sa.select(t.keypairs.c.user).where(t.keypairs.c.access_key == user[0]))
        assert written.parent.name == user_uuid.hex and written.read_text() == "per user"
    finally:
        await n.call("DELETE", f"/session/{s}", keys=user)
