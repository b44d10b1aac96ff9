"""Our `backend.ai vfolder ...` against the installed node (manager + storage proxy): the whole
life of a folder (create, upload small and 20 MiB files, ls, mkdir, rename-file, mv, download
with identical bytes, a directory as a zip, trash and restore, delete-trash), an upload killed
for real after its first chunks and resumed from the proxy's offset, sharing with a second user
(read-only invitation: reads yes, writes no; gone when the owner deletes), console and JSON
forms, one-line failures. Everything is made with unique names and removed again."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import subprocess
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from .conftest import VENV_BIN, Api, json_out, unique_name

Run = Callable[..., subprocess.CompletedProcess[str]]

BIG = 20 * 2**20
# the interrupted upload's file: big enough that the signal lands before the last chunk even when
# the proxy is fast (with 20 MiB a Ctrl-C once arrived after the upload had finished)
RESUMABLE = 64 * 2**20


def runner(env: dict[str, str]) -> Run:
    def run(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(VENV_BIN / "backend.ai"), *args], env=env, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"backend.ai {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc
    return run


@pytest.fixture
def env(node_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The node's client environment with a private cache (upload resume state) per test."""
    return {**node_env, "XDG_CACHE_HOME": str(tmp_path / "cache")}


@pytest.fixture
def vf(env: dict[str, str]) -> Run:
    return runner(env)


@pytest.fixture
def folders(vf: Run) -> Iterator[list[str]]:
    """Names of folders to remove after the test (trash, delete the data, purge the record)."""
    names: list[str] = []
    yield names
    for name in names:
        vf("vfolder", "delete", name, check=False)
        vf("vfolder", "delete-trash", name, check=False)
        vf("vfolder", "purge", name, check=False)


def make_file(path: Path, size: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 2**20))
            f.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(2**20):
            h.update(block)
    return h.hexdigest()


def failed(proc: subprocess.CompletedProcess[str]) -> str:
    """A failed command: non-zero, nothing on stdout, one line on stderr (returned)."""
    assert proc.returncode != 0, proc.stdout
    assert proc.stdout == "", proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def ls(vf: Run, name: str, path: str = ".") -> dict[str, dict[str, Any]]:
    return {i["name"]: i for i in json_out(vf("--output", "json", "vfolder", "ls", name, path))["items"]}


def status_of(api: Api, name: str) -> str | None:
    """The folder's status as the REST list (trash included) shows it; None once it is gone."""
    status, body = api.call("GET", "/folders")
    assert status == 200, body
    return next((f["status"] for f in body if f["name"] == name), None)


def test_folder_lifecycle(vf: Run, api: Api, folders: list[str], tmp_path: Path) -> None:
    name = unique_name("e2e-vf")
    folders.append(name)
    created = vf("vfolder", "create", name)
    assert created.stdout == f'Virtual folder "{name}" is created.\n'
    info = json_out(vf("--output", "json", "vfolder", "info", name))
    assert info["name"] == name and info["status"] == "ready" and info["is_owner"] is True
    assert info["permission"] in ("rw", "wd")
    hosts = json_out(vf("--output", "json", "vfolder", "list-hosts"))
    assert info["host"] in hosts["allowed"]
    console = vf("vfolder", "info", name).stdout
    assert console.startswith(f'Virtual folder "{name}" (ID: {info["id"]})')

    src = tmp_path / "src"
    small = make_file(src / "small.txt", 1234)
    big = make_file(src / "data" / "big.bin", BIG)
    up = json_out(vf("--output", "json", "vfolder", "upload", name, "small.txt", "data", "-b", str(src), "-r"))
    assert up["ok"] is True and up["directories"] == ["data"]
    assert sorted((u["path"], u["size"]) for u in up["uploaded"]) == [("data/big.bin", BIG), ("small.txt", 1234)]
    top = ls(vf, name)
    assert top["small.txt"]["size"] == 1234 and top["small.txt"]["type"] == "FILE"
    assert top["data"]["type"] == "DIRECTORY" and ls(vf, name, "data")["big.bin"]["size"] == BIG
    table = vf("vfolder", "ls", name).stdout.splitlines()
    assert table[0].split() == ["file", "name", "size", "modified", "mode"]
    assert any(row.split()[:2] == ["small.txt", "1234"] for row in table[2:])

    vf("vfolder", "mkdir", "-p", name, "deep/er")
    assert failed(vf("vfolder", "mkdir", name, "deep", check=False)).startswith("\u2717 vfolder mkdir failed")
    vf("vfolder", "mkdir", "-e", name, "deep")
    vf("vfolder", "rename-file", name, "small.txt", "renamed.txt")
    vf("vfolder", "mv", name, "data/big.bin", "deep/er/big.bin")
    assert set(ls(vf, name)) == {"renamed.txt", "data", "deep"}
    assert ls(vf, name, "data") == {}

    dl = tmp_path / "dl"
    got = json_out(vf("--output", "json", "vfolder", "download", name, "renamed.txt", "deep/er/big.bin",
                      "-b", str(dl)))
    assert sorted(d["size"] for d in got["downloaded"]) == [1234, BIG]
    assert sha256(dl / "renamed.txt") == small and sha256(dl / "deep" / "er" / "big.bin") == big
    assert "already exists" in failed(vf("vfolder", "download", name, "renamed.txt", "-b", str(dl), check=False))
    vf("vfolder", "download", name, "deep", "-b", str(tmp_path / "zip"))
    with zipfile.ZipFile(tmp_path / "zip" / "deep.zip") as z:
        assert [n for n in z.namelist() if not n.endswith("/")] == ["er/big.bin"]
        assert hashlib.sha256(z.read("er/big.bin")).hexdigest() == big
    token = json_out(vf("--output", "json", "vfolder", "request-download", name, "renamed.txt"))
    assert token["token"] and token["url"]

    vf("vfolder", "rm", "-y", name, "renamed.txt")
    assert "renamed.txt" not in ls(vf, name)

    assert "Deleted." in vf("vfolder", "delete", name).stderr
    assert status_of(api, name) == "delete-pending"
    assert "Restored." in vf("vfolder", "restore", name).stderr
    assert status_of(api, name) == "ready"
    assert json_out(vf("--output", "json", "vfolder", "info", name))["status"] == "ready"
    vf("vfolder", "delete", name)
    assert json_out(vf("--output", "json", "vfolder", "delete-trash", name))["ok"] is True
    assert status_of(api, name) in (None, "delete-ongoing", "delete-complete")
    gone = failed(vf("vfolder", "info", name, check=False))
    assert gone.startswith("\u2717 vfolder info failed:") and "404" in gone


def test_list_shows_own_folders_in_both_forms(vf: Run, folders: list[str]) -> None:
    name = unique_name("e2e-vf")
    folders.append(name)
    vf("vfolder", "create", name)
    listed = json_out(vf("--output", "json", "vfolder", "list", "--filter", f'name == "{name}"'))
    assert [(i["name"], i["status"], i["ownership_type"]) for i in listed["items"]] == [(name, "ready", "user")]
    assert listed["count"] == listed["total_count"] == 1
    rows = vf("vfolder", "list", "--filter", f'name == "{name}"').stdout.splitlines()
    assert rows[0].split()[:3] == ["Host", "Name", "Status"] and rows[2].split()[1] == name


def _upload_url(state_dir: Path) -> tuple[str, str] | None:
    """The proxy url and token an unfinished upload keeps in its resume state."""
    for path in state_dir.glob("*.json"):
        try:
            data = json.loads(path.read_text())
        except ValueError:
            continue  # being written
        return data["url"], data["token"]
    return None


def _proxy_offset(url: str, token: str) -> int | None:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        conn.request("HEAD", f"{parts.path}?token={token}", headers={"Tus-Resumable": "1.0.0"})
        resp = conn.getresponse()
        resp.read()
        return int(resp.headers["Upload-Offset"]) if resp.status == 200 else None
    finally:
        conn.close()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_an_upload_killed_midway_resumes_from_the_proxy_offset(vf: Run, env: dict[str, str], folders: list[str],
                                                               tmp_path: Path, sig: signal.Signals) -> None:
    name = unique_name("e2e-vf")
    folders.append(name)
    vf("vfolder", "create", name)
    src = tmp_path / "src"
    digest = make_file(src / "big.bin", RESUMABLE)
    state_dir = tmp_path / "cache" / "backend.ai" / "uploads"
    args = [str(VENV_BIN / "backend.ai"), "vfolder", "upload", name, "big.bin", "-b", str(src), "--chunk-size", "64k"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed_at = None
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and proc.poll() is None:
            found = _upload_url(state_dir)
            offset = _proxy_offset(*found) if found else None
            if offset:  # the first chunks are acknowledged: interrupt it for real
                proc.send_signal(sig)
                killed_at = offset
                break
            if not found:
                time.sleep(0.002)  # poll again: the upload has not started yet
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        assert proc.stderr is not None
        stderr = proc.stderr.read().decode()
        proc.stderr.close()
    assert killed_at is not None, "the upload ended before it could be interrupted"
    if sig == signal.SIGINT:
        assert rc == 130 and stderr.strip().splitlines()[-1] == "Interrupted!", (rc, stderr)
    found = _upload_url(state_dir)
    assert found is not None, "the killed upload left its resume state"
    held = _proxy_offset(*found)
    assert held is not None and killed_at <= held < RESUMABLE

    again = json_out(vf("--output", "json", "vfolder", "upload", name, "big.bin", "-b", str(src)))
    (result,) = again["uploaded"]
    assert result["resumed_from"] == held and result["size"] == RESUMABLE
    assert not list(state_dir.glob("*.json")), "the state is removed once the upload completes"
    vf("vfolder", "download", name, "big.bin", "-b", str(tmp_path / "dl"))
    assert sha256(tmp_path / "dl" / "big.bin") == digest


@pytest.fixture
def second_user(vf: Run, env: dict[str, str]) -> Iterator[tuple[str, Run, Api]]:
    """A plain user (admin user add + admin keypair add), a runner and an API client signed with
    its keypair."""
    tag = uuid.uuid4().hex[:10]
    email = f"vf-{tag}@example.com"
    vf("admin", "user", "add", "default", email, f"pw-{tag}-Secret", "-u", f"vf-{tag}", "-g", "default")
    try:
        kp = json_out(vf("--output", "json", "admin", "keypair", "add", email, "default"))
        user_env = {**env, "BACKEND_ACCESS_KEY": kp["access_key"], "BACKEND_SECRET_KEY": kp["secret_key"]}
        yield email, runner(user_env), Api(user_env)
    finally:
        vf("admin", "user", "purge", "--yes", email, check=False)


def test_a_read_only_invitation(vf: Run, folders: list[str], second_user: tuple[str, Run, Api],
                                tmp_path: Path) -> None:
    email, other, other_api = second_user
    name = unique_name("e2e-vf")
    folders.append(name)
    vf("vfolder", "create", name)
    digest = make_file(tmp_path / "src" / "f.bin", 100_000)
    vf("vfolder", "upload", name, "f.bin", "-b", str(tmp_path / "src"))

    # before an invitation the other user neither sees nor touches the folder
    assert status_of(other_api, name) is None
    for args in (("vfolder", "info", name), ("vfolder", "ls", name),
                 ("vfolder", "download", name, "f.bin", "-b", str(tmp_path / "no")),
                 ("vfolder", "delete", name)):
        line = failed(other(*args, check=False))
        assert line.startswith(f"\u2717 {args[0]} {args[1]} failed:") and "HTTP 5" not in line, line
    assert not (tmp_path / "no" / "f.bin").exists()

    invited = vf("vfolder", "invite", "-p", "ro", name, email)
    assert invited.stdout == f"Invitation sent to:\n\t- {email}\n"
    invitations = json_out(other("--output", "json", "vfolder", "invitations"))["invitations"]
    (inv,) = [i for i in invitations if i["vfolder_name"] == name]
    assert inv["perm"] == "ro"
    sent = json_out(vf("--output", "json", "vfolder", "invitations", "--sent"))["invitations"]
    assert inv["id"] in [i["id"] for i in sent]
    other("vfolder", "accept-invitation", inv["id"])

    assert json_out(other("--output", "json", "vfolder", "info", name))["permission"] == "ro"
    assert status_of(other_api, name) == "ready"
    other("vfolder", "download", name, "f.bin", "-b", str(tmp_path / "mine"))
    assert sha256(tmp_path / "mine" / "f.bin") == digest
    make_file(tmp_path / "src" / "g.bin", 10)
    refused = failed(other("vfolder", "upload", name, "g.bin", "-b", str(tmp_path / "src"), check=False))
    assert refused.startswith("\u2717 vfolder upload failed:") and "HTTP 5" not in refused
    failed(other("vfolder", "rm", "-y", name, "f.bin", check=False))
    assert set(ls(vf, name)) == {"f.bin"}

    vf("vfolder", "delete", name)  # to the trash: the invitee loses it
    assert failed(other("vfolder", "info", name, check=False)).startswith("\u2717 vfolder info failed:")
    assert status_of(other_api, name) is None


def test_failures_are_one_line_in_both_forms(vf: Run) -> None:
    missing = unique_name("e2e-missing")
    line = failed(vf("vfolder", "info", missing, check=False))
    assert line.startswith("\u2717 vfolder info failed:") and "HTTP 404" in line
    proc = vf("--output", "json", "vfolder", "info", missing, check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "HTTP 404" in json.loads(proc.stderr)["error"]
    assert "Invalid virtual folder name" in failed(vf("vfolder", "info", "../admin", check=False))


def test_mounts_from_session_create_and_run(vf: Run, folders: list[str], cleanup_sessions: list[str],
                                            tmp_path: Path) -> None:
    """`-m NAME`, `-m NAME:PATH` and `-m type=bind,source=NAME,perm=ro` reach the session: the files
    uploaded with the CLI are there, a file written in the session downloads with the CLI, and
    the read-only mount refuses writes with EROFS."""
    data, models = unique_name("e2e-vf"), unique_name("e2e-vf")
    folders.extend([data, models])
    for name in (data, models):
        vf("vfolder", "create", name)
    (tmp_path / "note.txt").write_text("from the client\n")
    vf("vfolder", "upload", data, "note.txt", "-b", str(tmp_path))
    vf("vfolder", "upload", models, "note.txt", "-b", str(tmp_path))

    session = unique_name("e2e-mount")
    cleanup_sessions.append(session)
    vf("session", "create", "-t", session, "-m", f"{data}:/data/in", "-m", f"type=bind,source={models},perm=ro",
       "python")
    code = (
        "import errno, os\n"
        "print(open('/data/in/note.txt').read().strip())\n"
        "open('/data/in/from-session.txt', 'w').write('written in the session')\n"
        f"print(open('/home/work/{models}/note.txt').read().strip())\n"
        "try:\n"
        f"    open('/home/work/{models}/new.txt', 'w')\n"
        "except OSError as e:\n"
        "    print(errno.errorcode[e.errno])\n"
    )
    out = vf("run", "-t", session, "-c", code, "python").stdout.splitlines()
    assert out == ["from the client", "from the client", "EROFS"]
    assert set(ls(vf, models)) == {"note.txt"}
    vf("vfolder", "download", data, "from-session.txt", "-b", str(tmp_path / "dl"))
    assert (tmp_path / "dl" / "from-session.txt").read_text() == "written in the session"
    vf("session", "destroy", session)

    # (the proxy keeps its upload sessions in the folder's .upload, as the original does)
    listing = f"import os; print([n for n in sorted(os.listdir('/home/work/{data}')) if n != '.upload'])"
    once = vf("run", "--rm", "-m", data, "-c", listing, "python")
    assert once.stdout == "['from-session.txt', 'note.txt']\n"


def test_clone_rename_and_options(vf: Run, folders: list[str], tmp_path: Path) -> None:
    src, dst, renamed = unique_name("e2e-vf"), unique_name("e2e-vf"), unique_name("e2e-vf")
    folders.extend([src, dst, renamed])
    vf("vfolder", "create", src)
    assert json_out(vf("--output", "json", "vfolder", "info", src))["cloneable"] is False
    vf("vfolder", "update-options", src, "--set-cloneable", "true")
    assert json_out(vf("--output", "json", "vfolder", "info", src))["cloneable"] is True
    digest = make_file(tmp_path / "d" / "f.bin", 300_000)
    vf("vfolder", "upload", src, "d", "-r", "-b", str(tmp_path))

    cloned = vf("vfolder", "clone", src, dst)
    assert "Cloning the vfolder is complete." in cloned.stderr
    assert ls(vf, dst, "d")["f.bin"]["size"] == 300_000
    vf("vfolder", "download", dst, "d/f.bin", "-b", str(tmp_path / "dl"))
    assert sha256(tmp_path / "dl" / "d" / "f.bin") == digest

    vf("vfolder", "rename", dst, renamed)
    assert json_out(vf("--output", "json", "vfolder", "info", renamed))["name"] == renamed
    assert "404" in failed(vf("vfolder", "info", dst, check=False))
