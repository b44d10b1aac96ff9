"""The keypair's SSH keys as mounts (bai.agent.dotfiles.ssh_key_mounts) on the real agent and
Docker: a restarted agent that adopts the kernel leaves them working (mounts live with the
container), destroying it removes the private key's host file; and, without Docker, where the
fragment puts them and what it leaves out (no keypair; a folder mounted in their place)."""

from __future__ import annotations

import json
import os
import secrets
import uuid
from pathlib import Path
from typing import Any

import pytest

from bai.agent.dotfiles import ssh_key_mounts
from bai.agent.server import AgentServer
from bai.common.agent_rpc import AgentClient, KernelCreationConfig

from .conftest import AgentEnv, EventLog, kernel_config
from .test_agent_component import create_kernel

pytestmark = pytest.mark.timeout(120)

CHECK = """import json, os
print(json.dumps({p: [oct(os.stat(p).st_mode & 0o777), open(p).read() if os.path.isfile(p) else None]
                  for p in ('/home/work/.ssh', '/home/work/.ssh/authorized_keys', '/home/work/id_container')}))"""


async def _keys_seen(rpc: AgentClient, kernel_id: str) -> dict[str, list[str | None]]:
    result = await rpc.execute(None, kernel_id, None, "query", CHECK)
    (out,) = [text for kind, text in result["console"] if kind == "stdout"]
    seen: dict[str, list[str | None]] = json.loads(out)
    return seen


async def test_an_adopted_kernel_keeps_its_keys_and_destroy_removes_the_host_copy(
        agent_env: AgentEnv, events: EventLog, kernel_image: str) -> None:
    marker = secrets.token_hex(8)
    public, private = f"ssh-ed25519 AAAA{marker} k\n", f"-----BEGIN KEY-----\n{marker}\n-----END KEY-----\n"
    config = agent_env.config()
    wanted = {"/home/work/.ssh": ["0o700", None], "/home/work/.ssh/authorized_keys": ["0o600", public],
              "/home/work/id_container": ["0o600", private]}
    first = AgentServer(config)
    await first.start()
    try:
        async with AgentClient(first.addr, agent_env.secret) as rpc:
            started = await create_kernel(rpc, events, config.agent.id, kernel_config(
                kernel_image, ssh_keypair={"public_key": public, "private_key": private}))
            kernel_id = started["kernel_id"]
            assert await _keys_seen(rpc, kernel_id) == wanted
    finally:
        await first.stop()
    await events.wait("agent_terminated", source=config.agent.id)
    host_copy = config.agent.ipc_base_path / kernel_id / "ssh" / "id_container"
    assert host_copy.read_text() == private

    second = AgentServer(config)
    await second.start()
    try:
        async with AgentClient(second.addr, agent_env.secret) as rpc:
            assert await _keys_seen(rpc, kernel_id) == wanted
            await rpc.destroy_kernel(kernel_id)
    finally:
        await second.stop()
    assert not host_copy.parent.exists()


def _config(**extra: Any) -> KernelCreationConfig:
    return KernelCreationConfig.model_validate(kernel_config("bai.local/x:1", **extra))


def test_the_fragment_mounts_what_no_folder_takes_the_place_of(tmp_path: Path) -> None:
    pair = {"public_key": "ssh-rsa AAAA p\n", "private_key": "secret"}
    assert ssh_key_mounts(_config(), tmp_path, 1000, 1000) == {}  # no keypair: nothing
    uid, gid = os.getuid(), os.getgid()
    (tmp_path / "k1").mkdir()  # the kernel's IPC directory, made by the agent
    fragment = ssh_key_mounts(_config(ssh_keypair=pair), tmp_path / "k1", uid, gid)
    key = tmp_path / "k1" / "ssh" / "id_container"
    assert fragment == {"HostConfig": {
        "Tmpfs": {"/home/work/.ssh": f"rw,nosuid,nodev,noexec,size=1m,nr_inodes=1024,mode=0700,uid={uid},gid={gid}"},
        "Binds": [f"{key}:/home/work/id_container:ro"]}}
    assert key.read_text() == "secret\n" and key.stat().st_mode & 0o777 == 0o600
    assert key.parent.stat().st_mode & 0o777 == 0o700
    # folders mounted at those paths (Docker refuses two mounts at one path): theirs, not ours
    for at, left in (("/home/work/.ssh", "Binds"), ("/home/work/id_container", "Tmpfs")):
        ipc = tmp_path / uuid.uuid4().hex
        ipc.mkdir()
        mounts = [{"host_path": str(tmp_path), "kernel_path": at, "permission": "rw"}]
        assert list(ssh_key_mounts(_config(ssh_keypair=pair, mounts=mounts), ipc, uid, gid)["HostConfig"]) == [left]
