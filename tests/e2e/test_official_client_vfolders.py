"""The storage issue's acceptance with the official client 24.3.11 against the installed node, as a
user would run it: a folder is created, filled (a small file and 20 MiB), listed, renamed,
downloaded back byte for byte, mounted and written from a session; a second, non-admin user
(made by the superadmin with `admin user add` + `admin keypair add`) can neither see nor touch it
until invited read-only, then reads but cannot write, and its session mount is read-only (EROFS
inside the container); the folder goes to the trash, the invitee loses it, and it is deleted from
the trash."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(900)

Run = Callable[..., subprocess.CompletedProcess[str]]

WRITE_FROM_SESSION = (
    "import os; p='/home/work/{folder}/from-session.txt'; open(p, 'w').write('written in a session'); "
    "print('WROTE', os.stat(p).st_size)")
TRY_WRITE = (
    "import errno\n"
    "try:\n"
    "    open('/home/work/{folder}/intruder.txt', 'w').write('x')\n"
    "    print('WRITE-ALLOWED')\n"
    "except OSError as exc:\n"
    "    print('WRITE-REFUSED', errno.errorcode.get(exc.errno))\n"
    "print(open('/home/work/{folder}/renamed.txt').read())\n")


def _runner(exe: Path, env: dict[str, str], cwd: Path) -> Run:
    def run(*args: str, ok: bool | None = True, stdin: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(exe), *args], env=env, cwd=cwd, capture_output=True, text=True, input=stdin,
                              timeout=timeout)
        if ok is True:
            assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        elif ok is False:
            assert proc.returncode != 0, f"{args} should have failed:\n{proc.stdout}\n{proc.stderr}"
        return proc
    return run


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _out(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def admin(official_client: Path, node_env: dict[str, str], workdir: Path) -> Run:
    return _runner(official_client, node_env, workdir)


@pytest.fixture
def second_user(admin: Run, official_client: Path, node_env: dict[str, str], workdir: Path
                ) -> Iterator[tuple[Run, str]]:
    """A non-admin user of the default domain and project, made with the official admin commands."""
    email = f"e2e-vf-{uuid.uuid4().hex[:8]}@example.com"
    admin("admin", "user", "add", "default", email, f"pw-{uuid.uuid4().hex}", "-u", email.split("@")[0])
    try:
        out = admin("--output", "json", "admin", "keypair", "add", email, "default").stdout
        key = json.loads(out)
        assert key["ok"] is True, key
        env = {**node_env, "BACKEND_ACCESS_KEY": key["access_key"], "BACKEND_SECRET_KEY": key["secret_key"]}
        yield _runner(official_client, env, workdir), email
    finally:
        admin("admin", "user", "purge", email, stdin="y\n", ok=None)


def test_vfolder_acceptance_with_the_official_client(admin: Run, second_user: tuple[Run, str],
                                                     workdir: Path) -> None:
    user, email = second_user
    first = f"e2e-vf-{uuid.uuid4().hex[:8]}"
    folder = f"{first}-r"
    up, down, user_down = workdir / "up", workdir / "down", workdir / "user-down"
    for d in (up, down, user_down):
        d.mkdir()
    (up / "small.txt").write_text("a small file\n")
    (up / "big.bin").write_bytes(os.urandom(20 * 2**20))
    created = False
    try:
        admin("vfolder", "create", first, "local:volume1")
        created = True
        admin("vfolder", "rename", first, folder)
        admin("vfolder", "upload", folder, "small.txt", "big.bin", "-b", str(up))
        admin("vfolder", "mkdir", folder, "sub")
        listing = _out(admin("vfolder", "ls", folder))
        assert "small.txt" in listing and "big.bin" in listing and str(20 * 2**20) in listing, listing
        assert "sub" in listing
        admin("vfolder", "rename-file", folder, "small.txt", "renamed.txt")
        admin("vfolder", "download", folder, "renamed.txt", "big.bin", "-b", str(down))
        assert (down / "renamed.txt").read_text() == "a small file\n"
        assert _sha256(down / "big.bin") == _sha256(up / "big.bin")

        # mounted into a session, the folder takes what the session writes
        ran = admin("run", "--rm", "-m", folder, "-c", WRITE_FROM_SESSION.format(folder=folder), "python")
        assert "WROTE 20" in _out(ran), _out(ran)
        assert "from-session.txt" in _out(admin("vfolder", "ls", folder))

        # the second user neither sees nor touches it, and is told nothing about it
        for args in (("vfolder", "info", folder), ("vfolder", "download", folder, "big.bin", "-b", str(user_down)),
                     ("vfolder", "upload", folder, "small.txt", "-b", str(up)),
                     ("vfolder", "mkdir", folder, "mine")):
            refused = user(*args, ok=False)
            assert "renamed.txt" not in _out(refused), (args, _out(refused))
        assert "renamed.txt" not in _out(user("vfolder", "ls", folder, ok=None))
        assert not any(user_down.iterdir())
        mount_refused = user("run", "--rm", "-m", folder, "-c", "print('MOUNTED')", "python", ok=None)
        assert "MOUNTED" not in _out(mount_refused), _out(mount_refused)

        # invited read-only, the user accepts with the interactive `invitations` command
        invited = admin("vfolder", "invite", "-p", "ro", folder, email)
        assert email in invited.stdout, _out(invited)
        accepted = user("vfolder", "invitations", stdin="1\na\n")
        assert f"You can now access vfolder {folder}" in accepted.stdout, _out(accepted)
        # reads ...
        assert "renamed.txt" in _out(user("vfolder", "ls", folder))
        user("vfolder", "download", folder, "big.bin", "-b", str(user_down))
        assert _sha256(user_down / "big.bin") == _sha256(up / "big.bin")
        # ... but does not write, neither through the API nor through a session's mount
        user("vfolder", "upload", folder, "small.txt", "-b", str(up), ok=False)
        user("vfolder", "mkdir", folder, "mine", ok=False)
        user("vfolder", "rm", folder, "renamed.txt", ok=None)
        in_session = user("run", "--rm", "-m", folder, "-c", TRY_WRITE.format(folder=folder), "python", ok=None)
        assert "WRITE-REFUSED EROFS" in _out(in_session) and "a small file" in _out(in_session), _out(in_session)
        after = _out(admin("vfolder", "ls", folder))
        assert "renamed.txt" in after and "intruder.txt" not in after and "mine" not in after

        # to the trash: the invitee loses it; then deleted from the trash
        admin("vfolder", "delete", folder)
        assert "renamed.txt" not in _out(user("vfolder", "ls", folder, ok=None))
        user("vfolder", "info", folder, ok=False)
        admin("vfolder", "delete-trash", folder)
        created = False
        admin("vfolder", "info", folder, ok=False)
    finally:
        if created:
            for name in (folder, first):
                if admin("vfolder", "delete", name, ok=None).returncode == 0:
                    admin("vfolder", "delete-trash", name, ok=None)
