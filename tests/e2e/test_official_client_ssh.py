"""SSH, SCP and SFTP into sessions with the official client (backend.ai-client 24.3.11, unchanged)
against the installed node: `session ssh SESS -- CMD` (it downloads ~/id_container from the
session, tunnels `app SESS sshd` and runs the local OpenSSH client), `session scp`, and `sftp`
through the same `app SESS sshd` tunnel; the downloaded key keeps its 0600; another user's
session does not let this user's key in. The client writes into ~/.ssh: HOME is a temp dir."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.halfstack import free_port

from .conftest import Api, unique_name, wait_until
from .webui import create_user, purge_user

SSH_OPTS = ["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR"]


class Client:
    """The official CLI as one user: that user's keys, a HOME (with ~/.ssh) and a working
    directory of its own (`session download` writes there)."""

    def __init__(self, exe: Path, env: dict[str, str], home: Path) -> None:
        (home / ".ssh").mkdir(parents=True, mode=0o700)
        self.exe, self.home = exe, home
        self.env = {**env, "HOME": str(home)}

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        # In a process group of its own: `session ssh/scp` start an `app` proxy child, which a
        # timeout must not leave behind.
        with subprocess.Popen([str(self.exe), *args], env=self.env, cwd=self.home, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                              start_new_session=True) as child:
            try:
                out, err = child.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                out, err = child.communicate()
                raise subprocess.TimeoutExpired(child.args, timeout, out, err) from None
        proc = subprocess.CompletedProcess(child.args, child.returncode, out, err)
        if check:
            assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def session(self, name: str) -> None:
        self.run("session", "create", "-t", name, "python")

    def destroy(self, name: str) -> None:
        subprocess.run([str(self.exe), "session", "destroy", name], env=self.env, cwd=self.home,
                       capture_output=True, timeout=120)

    def key(self, name: str) -> Path:
        """The session's ~/id_container, downloaded as `session ssh` does."""
        self.run("session", "download", name, "id_container")
        key = self.home / "id_container"
        assert key.stat().st_mode & 0o777 == 0o600  # else OpenSSH refuses to use it
        return key

    @staticmethod
    def _listening(port: int) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", port)) == 0

    @contextlib.contextmanager
    def tunnel(self, name: str) -> Iterator[int]:
        """`app NAME sshd -b 127.0.0.1:PORT` running; PORT."""
        port = free_port()
        proc = subprocess.Popen([str(self.exe), "app", name, "sshd", "-b", f"127.0.0.1:{port}"], env=self.env,
                                cwd=self.home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: self._listening(port) or proc.poll() is not None, "the sshd tunnel", 60)
            assert proc.poll() is None
            yield port
        finally:
            # Not SIGINT: 24.3.11 may then wait forever in wait_closed() once it served a
            # connection (tests/e2e/test_app_cli.py).
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _ssh(key: Path, port: int, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", *SSH_OPTS, "-i", str(key), "-p", str(port), "work@127.0.0.1", *command],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def me(official_client: Path, node_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[tuple[Client, str]]:
    client = Client(official_client, node_env, tmp_path_factory.mktemp("ssh-home"))
    name = unique_name("ssh")
    client.session(name)
    try:
        yield client, name
    finally:
        client.destroy(name)


def test_session_ssh_runs_a_command(me: tuple[Client, str]) -> None:
    client, name = me
    proc = client.run("session", "ssh", name, "-p", str(free_port()), "--", "echo", "hello", "from", "$(whoami)")
    assert proc.stdout.splitlines()[-1:] == ["hello from work"], proc
    # the key it downloaded into ~/.ssh is removed again
    assert list((client.home / ".ssh").iterdir()) == []


def test_scp_and_sftp_copy_files_into_the_home(me: tuple[Client, str]) -> None:
    client, name = me
    (client.home / "by-scp.txt").write_text(f"scp {name}\n")
    scp = ("session", "scp", name, "-p", str(free_port()), "by-scp.txt", "work@localhost:by-scp.txt")
    try:
        client.run(*scp, timeout=60)
    except subprocess.TimeoutExpired as first:
        # Seen twice in full-suite runs, never alone: 24.3.11's `app` proxy accepted scp's
        # connection but never opened the websocket to us (no connection to the manager, nothing
        # in its log) and, without closing that connection, waited for it forever on exit. Once
        # more, and say so if it happens again.
        print(f"session scp timed out once (stderr: {first.stderr!r}); trying again")
        client.run(*scp[:4], str(free_port()), *scp[5:], timeout=60)
    (client.home / "by-sftp.txt").write_text(f"sftp {name}\n")
    batch = client.home / "batch"
    batch.write_text(f"put {client.home / 'by-sftp.txt'} /home/work/by-sftp.txt\n")
    key = client.key(name)
    with client.tunnel(name) as port:
        sftp = subprocess.run(["sftp", *SSH_OPTS, "-i", str(key), "-P", str(port), "-b", str(batch), "work@127.0.0.1"],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert sftp.returncode == 0, sftp
        copied = _ssh(key, port, "cat", "/home/work/by-scp.txt", "/home/work/by-sftp.txt")
        assert copied.returncode == 0 and copied.stdout == f"scp {name}\nsftp {name}\n", copied


def test_another_users_session_refuses_this_users_key(me: tuple[Client, str], official_client: Path,
                                                      node_env: dict[str, str], api: Api, tmp_path: Path) -> None:
    client, name = me
    mine = client.key(name).read_text()
    user = create_user(api, prefix="ssh")
    try:
        status, body = api.call("POST", "/admin/gql", {
            "query": "query($e: String) { keypairs(email: $e) { access_key secret_key } }",
            "variables": {"e": user.email}})
        assert status == 200 and body["data"]["keypairs"], body
        keys = body["data"]["keypairs"][0]
        other = Client(official_client, {**node_env, "BACKEND_ACCESS_KEY": keys["access_key"],
                                         "BACKEND_SECRET_KEY": keys["secret_key"]}, tmp_path / "other")
        theirs_name = unique_name("ssh-other")
        other.session(theirs_name)
        theirs = other.key(theirs_name)
        assert theirs.read_text() != mine  # each keypair has its own SSH keypair
        mine_path = tmp_path / "mine"
        mine_path.write_text(mine)
        mine_path.chmod(0o600)
        with other.tunnel(theirs_name) as port:
            refused = _ssh(mine_path, port, "echo", "in")
            assert refused.returncode == 255 and "Permission denied" in refused.stderr, refused
            allowed = _ssh(theirs, port, "echo", "in")  # the same tunnel lets the owner's key in
            assert allowed.returncode == 0 and allowed.stdout == "in\n", allowed
    finally:
        purge_user(api, user)  # ends the user's sessions first
