"""SSH into sessions on a whole node: the owner's keypair SSH keypair reaches every kernel
(``~/.ssh/authorized_keys`` and ``~/id_container``, 0600 in a 0700 ``.ssh``, owned by the kernel
user), a keypair without one gets one generated once even by concurrent sessions, and the
intrinsic ``sshd`` service (dropbear in the real kernel image) lets the owner's key in -- a
command and an SFTP upload over the published port -- and nobody else's. The real manager and
agent, real Docker, the real kernel image, the host's OpenSSH client."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import pytest
import sqlalchemy as sa

from bai.agent.agent import Agent
from bai.agent.dotfiles import authorized_keys
from bai.common import protocol as proto
from bai.common.agent_rpc import AgentError, CommitKernelRequest, KernelCreationConfig
from bai.manager.api.keys import CTX
from bai.manager.services.sessions.services import start_service
from bai.manager.store import keypairs as keypair_store
from bai.manager.store import tables as t
from tests.unit.kernel.test_runner_display_completion_batch import start_runner, stop_runner

from .conftest import Node
from .test_sessions import containers

SSH_OPTS = ["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10",
            "-o", "LogLevel=ERROR"]


async def _create(node: Node, keys: tuple[str, str]) -> tuple[str, str]:
    n = f"ssh-{secrets.token_hex(4)}"
    st, body = await node.call("POST", "/session", {"name": n, "image": "python"}, keys=keys)
    assert st == 201 and body["status"] == "RUNNING", body
    return n, str(body["sessionId"])


async def _in_kernel(session_id: str, *cmd: str) -> str:
    """``cmd`` run in the session's container as its user (what the kernel's processes are)."""
    (info,) = await containers(session_id)
    async with aiodocker.Docker() as docker:
        container = docker.containers.container(info["Id"])
        exe = await container.exec(list(cmd), stdout=True, stderr=True)
        async with exe.start(detach=False) as stream:
            out = b""
            while (msg := await stream.read_out()) is not None:
                out += msg.data
        assert (await exe.inspect())["ExitCode"] == 0, out
    return out.decode()


def _ssh(key: Path, port: int, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", *SSH_OPTS, "-i", str(key), "-p", str(port), "work@127.0.0.1", *command],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


async def test_the_keypair_key_reaches_every_kernel_generated_once(node: Node, tmp_path: Path) -> None:
    keys = await node.add_keypair({"max_concurrent_sessions": 5, "max_containers_per_session": 2})
    async with node.db.connect() as conn:
        assert await keypair_store.ssh_keypair_of(conn, keys[0]) is None
    # Two first sessions at once: one pair is generated and stored, both kernels get it.
    (n1, s1), (n2, s2) = await asyncio.gather(_create(node, keys), _create(node, keys))
    try:
        async with node.db.connect() as conn:
            pair = await keypair_store.ssh_keypair_of(conn, keys[0])
        assert pair is not None and pair[0].startswith("ssh-rsa ") and "PRIVATE KEY-----" in pair[1]
        uid_gid = (await _in_kernel(s1, "id", "-u")).strip() + " " + (await _in_kernel(s1, "id", "-g")).strip()
        for sid in (s1, s2):
            modes = await _in_kernel(sid, "stat", "-c", "%n %a %u %g", "/home/work/.ssh",
                                     "/home/work/.ssh/authorized_keys", "/home/work/id_container")
            assert modes.splitlines() == [f"/home/work/.ssh 700 {uid_gid}",
                                          f"/home/work/.ssh/authorized_keys 600 {uid_gid}",
                                          f"/home/work/id_container 600 {uid_gid}"], modes
            assert await _in_kernel(sid, "cat", "/home/work/.ssh/authorized_keys") == pair[0]
            assert await _in_kernel(sid, "cat", "/home/work/id_container") == pair[1]

        # The intrinsic sshd: the owner's key logs in (a command, an SFTP upload), another key does not.
        st, info = await node.call("GET", f"/session/{n1}", keys=keys)
        assert st == 200, info
        (sshd,) = [sp for sp in info["servicePorts"] if sp["name"] == "sshd"]
        assert sshd["protocol"] == "tcp" and sshd["ports"] == [2200], sshd
        async with node.db.connect() as conn:
            owner = await keypair_store.get_requester(conn, keys[0])
        assert owner is not None
        started = await start_service(node.client.app[CTX], owner, n1, "sshd")
        assert started["status"] == "started", started
        port = int(started["kernel_port"])
        key = tmp_path / "id_container"
        key.write_text(pair[1])
        key.chmod(0o600)
        hello = await asyncio.to_thread(_ssh, key, port, "echo", "hello", "from", "$(whoami)")
        assert hello.returncode == 0 and hello.stdout == "hello from work\n", hello
        upload = tmp_path / "upload.txt"
        upload.write_text(f"via sftp {n1}\n")
        batch = tmp_path / "batch"
        batch.write_text(f"put {upload} /home/work/uploaded.txt\n")
        sftp = await asyncio.to_thread(subprocess.run, ["sftp", *SSH_OPTS, "-i", str(key), "-P", str(port),
                                                        "-b", str(batch), "work@127.0.0.1"],
                                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert sftp.returncode == 0, sftp
        assert await _in_kernel(s1, "cat", "/home/work/uploaded.txt") == f"via sftp {n1}\n"

        stranger = tmp_path / "stranger"
        await asyncio.to_thread(subprocess.run, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
                                check=True, timeout=30)
        refused = await asyncio.to_thread(_ssh, stranger, port, "echo", "in")
        assert refused.returncode == 255 and "in" not in refused.stdout.split(), refused
        assert "Permission denied" in refused.stderr, refused.stderr
    finally:
        for n in (n1, n2):
            await node.call("DELETE", f"/session/{n}", keys=keys)


async def test_a_stored_keypair_is_kept_and_sent(node: Node) -> None:
    keys = await node.add_keypair({"max_concurrent_sessions": 2})
    async with node.db.begin() as conn:  # as PATCH/POST /auth/ssh-keypair store it
        await conn.execute(sa.update(t.keypairs).where(t.keypairs.c.access_key == keys[0]).values(
            ssh_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBAI own\n",
            ssh_private_key="-----BEGIN OPENSSH PRIVATE KEY-----\nown\n-----END OPENSSH PRIVATE KEY-----\n"))
        # a concurrent generator that lost: nothing changes
        assert not await keypair_store.set_ssh_keypair_if_none(conn, keys[0], "ssh-rsa other\n", "other\n")
    n, sid = await _create(node, keys)
    try:
        assert await _in_kernel(sid, "cat", "/home/work/.ssh/authorized_keys") == \
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBAI own\n"
        assert "own" in await _in_kernel(sid, "cat", "/home/work/id_container")
    finally:
        await node.call("DELETE", f"/session/{n}", keys=keys)


def test_an_authorized_keys_dotfile_keeps_its_lines_and_older_agents_get_no_keys() -> None:
    config = KernelCreationConfig.model_validate({
        "image": {"canonical": "x"},
        "dotfiles": [{"path": ".ssh/authorized_keys", "perm": "644", "data": "ssh-ed25519 AAAA mine"}],
        "ssh_keypair": {"public_key": "ssh-rsa BBBB keypair\n", "private_key": "secret"}})
    assert authorized_keys(config) == "ssh-ed25519 AAAA mine\nssh-rsa BBBB keypair\n"
    assert "secret" not in repr(config)  # never in a log line
    body = {"configs": [{"image": {}, "ssh_keypair": {"public_key": "p", "private_key": "s"}}]}
    assert "ssh_keypair" not in proto.for_peer("create_kernels", body, proto.ProtocolVersion(1, 0))["configs"][0]
    assert proto.for_peer("create_kernels", body, proto.ProtocolVersion(1, 1)) is body


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_the_runner_makes_the_keys_directory_private_following_no_symlink() -> None:
    # The runner's side of it on the host's python3 (what runs in the container).
    tmp = Path(tempfile.mkdtemp(prefix="bai-ssh-", dir="/tmp"))
    outside = Path(tempfile.mkdtemp(prefix="bai-ssh-outside-", dir="/tmp"))
    proc, conn, work = await start_runner(tmp)
    try:
        (work / ".ssh").mkdir(mode=0o755)  # e.g. left by an image: made private all the same
        await conn.files.upload(".ssh/authorized_keys", _once(b"ssh-rsa AAAA k\n"), mode=0o600, dir_mode=0o700)
        assert (work / ".ssh").stat().st_mode & 0o777 == 0o700
        assert (work / ".ssh/authorized_keys").stat().st_mode & 0o777 == 0o600
        home_mode = work.stat().st_mode & 0o777
        with pytest.raises(AgentError):  # never the home itself
            await conn.files.upload("id_container", _once(b"k"), mode=0o600, dir_mode=0o700)
        assert work.stat().st_mode & 0o777 == home_mode and not (work / "id_container").exists()
        os.chmod(outside, 0o755)
        (work / ".elsewhere").symlink_to(outside)
        with pytest.raises(AgentError):
            await conn.files.upload(".elsewhere/authorized_keys", _once(b"k"), mode=0o600, dir_mode=0o700)
        assert os.stat(outside).st_mode & 0o777 == 0o755 and not os.listdir(outside)
        # a one-file download keeps the file's mode (the official client's ssh needs its key 0600)
        async with conn.files.download(".ssh/authorized_keys", 2**20, archive=True) as (_, chunks):
            raw = b"".join([c async for c in chunks])
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            (member,) = tar.getmembers()
        assert (member.name, member.mode) == ("authorized_keys", 0o600)
    finally:
        await stop_runner(proc, conn, tmp)
        shutil.rmtree(outside, ignore_errors=True)


def _key_material_in_saved_image(saved: Path, needles: tuple[bytes, ...]) -> list[str]:
    """Where in a ``docker save`` tar (its layers' files, compressed or not) any of ``needles`` is."""
    found: list[str] = []

    def scan(name: str, data: bytes) -> None:
        found.extend(f"{name}: {needle[:24]!r}" for needle in needles if needle in data)

    with tarfile.open(saved) as outer:
        for member in outer.getmembers():
            if not member.isfile():
                continue
            blob = outer.extractfile(member)
            assert blob is not None
            try:
                layer = tarfile.open(fileobj=blob, mode="r:*")
            except tarfile.TarError:  # the image's JSON: scanned as it is
                blob.seek(0)
                scan(member.name, blob.read())
                continue
            with layer:
                for entry in layer.getmembers():
                    if entry.isfile() and (content := layer.extractfile(entry)) is not None:
                        scan(f"{member.name}:{entry.name}", content.read())
    return found


async def test_a_session_saved_as_an_image_carries_no_key(node: Node, tmp_path: Path) -> None:
    """The keys are mounts, never in the container's layer: a commit of the kernel's container
    (``convert-to-image``; ``session commit`` saves the same commit as a tar) holds neither key,
    while the session has both where they always were, a dotfile in ``.ssh`` lands, the runner's
    one-file download of ``id_container`` keeps 0600, and the key's host file (root-only
    directory) goes with the kernel."""
    marker = secrets.token_hex(12)
    public = f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPUB{marker} owner\n"
    private = f"-----BEGIN OPENSSH PRIVATE KEY-----\nPRIV{marker}\n-----END OPENSSH PRIVATE KEY-----\n"
    keys = await node.add_keypair({"max_concurrent_sessions": 1})
    async with node.db.begin() as conn:
        await conn.execute(sa.update(t.keypairs).where(t.keypairs.c.access_key == keys[0]).values(
            ssh_public_key=public, ssh_private_key=private,
            dotfiles=[{"path": ".ssh/config", "perm": "600", "data": "Host example\n  Port 2222\n"}]))
    n, sid = await _create(node, keys)
    canonical = f"bai.local/test/ssh-keyless:{marker[:12]}"
    agent = node.agent.agent
    assert isinstance(agent, Agent)
    try:
        (info,) = await containers(sid)
        kernel_id = info["Config"]["Labels"]["ai.backend.kernel-id"]
        uid_gid = (await _in_kernel(sid, "id", "-u")).strip() + " " + (await _in_kernel(sid, "id", "-g")).strip()
        modes = await _in_kernel(sid, "stat", "-c", "%n %a %u %g", "/home/work/.ssh", "/home/work/.ssh/authorized_keys",
                                 "/home/work/.ssh/config", "/home/work/id_container")
        assert modes.splitlines() == [f"/home/work/.ssh 700 {uid_gid}", f"/home/work/.ssh/authorized_keys 600 {uid_gid}",
                                      f"/home/work/.ssh/config 600 {uid_gid}", f"/home/work/id_container 600 {uid_gid}"]
        assert await _in_kernel(sid, "cat", "/home/work/.ssh/authorized_keys") == public
        assert await _in_kernel(sid, "cat", "/home/work/id_container") == private
        assert "Port 2222" in await _in_kernel(sid, "cat", "/home/work/.ssh/config")
        # what `session download SESS id_container` gets: the key, 0600
        runner = agent.kernels[kernel_id].runner
        assert runner is not None
        async with runner.files.download("id_container", 2**20, archive=True) as (_, chunks):
            raw = b"".join([c async for c in chunks])
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            (member,) = tar.getmembers()
            assert (member.name, member.mode) == ("id_container", 0o600)
            assert (got := tar.extractfile(member)) is not None and got.read() == private.encode()
        # the host's copy: the kernel user's, 0600, in a directory only root enters
        host_dir = agent.ipc_base / kernel_id / "ssh"
        assert (host_dir.stat().st_mode & 0o777, host_dir.stat().st_uid) == (0o700, 0)
        key_stat = (host_dir / "id_container").stat()
        assert f"{key_stat.st_mode & 0o777:o} {key_stat.st_uid} {key_stat.st_gid}" == f"600 {uid_gid}"

        await agent.commit_kernel(CommitKernelRequest(kernel_id=kernel_id, canonical=canonical))
        saved = tmp_path / "saved.tar"
        async with aiodocker.Docker() as docker:
            async with docker.images.export_image(canonical) as stream:
                with saved.open("wb") as out:
                    while chunk := await stream.read(2**20):
                        out.write(chunk)
        leaks = await asyncio.to_thread(_key_material_in_saved_image, saved,
                                        (f"PRIV{marker}".encode(), f"PUB{marker}".encode()))
        assert leaks == [], leaks
        # the session still lets its owner in after the commit
        assert await _in_kernel(sid, "cat", "/home/work/id_container") == private
    finally:
        assert (await node.call("DELETE", f"/session/{n}", keys=keys))[0] == 200
        async with aiodocker.Docker() as docker:
            with contextlib.suppress(aiodocker.DockerError):
                await docker.images.delete(canonical, force=True)
    assert not (agent.ipc_base / kernel_id).exists()
