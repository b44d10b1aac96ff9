"""Execution in full with the official client (backend.ai-client 24.3.11, unchanged) against the
installed node: query mode with separate stdout/stderr and input() fed from piped stdin, batch
mode (`run FILES`) with its exit code, `session upload`, `session ls`, `session download` of a
file the batch run wrote and of a whole directory, and a refused `../../etc/passwd`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from .conftest import VENV_BIN, Api, unique_name


def _run(exe: Path, env: dict[str, str], *args: str, cwd: Path | None = None, stdin: str | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=180, cwd=cwd,
                          input=stdin)
    if check:
        assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_official_query_mode_streams_and_input(official_client: Path, node_env: dict[str, str], api: Api) -> None:
    name = unique_name("xq")
    try:
        _run(official_client, node_env, "session", "create", "-t", name, "python")
        code = ("import sys\n"
                "print('to-out')\n"
                "print('to-err', file=sys.stderr)\n"
                "who = input('name? ')\n"
                "print('hello', who)\n")
        proc = _run(official_client, node_env, "run", "-t", name, "-c", code, "python", stdin="bob\n")
        assert "to-out" in proc.stdout.splitlines() and "to-err" not in proc.stdout
        assert "to-err" in proc.stderr
        assert "hello bob" in proc.stdout
    finally:
        _run(official_client, node_env, "session", "destroy", name, check=False)


def test_official_batch_run_upload_ls_download(official_client: Path, node_env: dict[str, str], api: Api,
                                               tmp_path: Path) -> None:
    name = unique_name("xb")
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "main.py").write_text(
        "import hashlib, os\n"
        "from pkg.helper import VALUE\n"
        "data = bytes(range(256)) * 4096\n"
        "open('result.bin', 'wb').write(data)\n"
        "print('wrote', VALUE, hashlib.sha256(data).hexdigest())\n")
    (src / "pkg" / "__init__.py").write_text("")
    (src / "pkg" / "helper.py").write_text("VALUE = 42\n")
    try:
        _run(official_client, node_env, "session", "create", "-t", name, "python")
        # run FILES: the client uploads them (paths relative to the current directory), then runs
        # batch mode; exec "*" runs main.py.
        proc = _run(official_client, node_env, "run", "-t", name, "python", "main.py", "pkg/__init__.py",
                    "pkg/helper.py", cwd=src)
        expected = hashlib.sha256(bytes(range(256)) * 4096).hexdigest()
        assert f"wrote 42 {expected}" in proc.stdout
        assert "Build finished. (exit code = 0)" in proc.stdout + proc.stderr
        assert "Execution finished. (exit code = 0)" in proc.stdout + proc.stderr
        # A failing build is reported with its exit code; exec does not run.
        failing = _run(official_client, node_env, "run", "-t", name, "--build", "echo no-compiler >&2; exit 5",
                       "--exec", "touch should-not-exist", "python", "main.py", cwd=src, check=False)
        assert "Build finished. (exit code = 5)" in failing.stdout + failing.stderr
        assert "Execution finished. (exit code = 5)" in failing.stdout + failing.stderr
        assert "no-compiler" in failing.stderr

        extra = tmp_path / "notes.txt"
        extra.write_bytes(os.urandom(5000))
        _run(official_client, node_env, "session", "upload", name, "notes.txt", cwd=tmp_path)
        listing = _run(official_client, node_env, "session", "ls", name).stdout
        for filename in ("main.py", "pkg", "result.bin", "notes.txt"):
            assert filename in listing, listing
        assert "should-not-exist" not in listing
        sub = _run(official_client, node_env, "session", "ls", name, "/home/work/pkg").stdout
        assert "helper.py" in sub

        dest = tmp_path / "down"
        dest.mkdir()
        _run(official_client, node_env, "session", "download", name, "result.bin", "notes.txt", "--dest", str(dest))
        assert hashlib.sha256((dest / "result.bin").read_bytes()).hexdigest() == expected
        assert (dest / "notes.txt").read_bytes() == extra.read_bytes()

        refused = _run(official_client, node_env, "session", "download", name, "../../etc/passwd", "--dest",
                       str(dest), check=False)
        assert refused.returncode != 0
        assert "'..' is not allowed" in refused.stdout + refused.stderr
        assert sorted(p.name for p in dest.iterdir()) == ["notes.txt", "result.bin"]  # nothing leaked

        # A directory comes as one tar of everything below it, extracted by the client as is.
        tree = tmp_path / "tree"
        tree.mkdir()
        _run(official_client, node_env, "session", "download", name, "pkg", "--dest", str(tree))
        assert (tree / "pkg" / "helper.py").read_text() == "VALUE = 42\n"
        assert (tree / "pkg" / "__init__.py").read_text() == ""
        assert any(p.name.startswith("helper.") for p in (tree / "pkg" / "__pycache__").iterdir())
        status, body = api.call("GET", f"/session/{name}/files", {"path": "/etc"})
        assert status == 400, body
    finally:
        _run(official_client, node_env, "session", "destroy", name, check=False)


def test_our_cli_run_files_upload_ls_download(node_env: dict[str, str], tmp_path: Path) -> None:
    ours = VENV_BIN / "backend.ai"
    name = unique_name("xc")
    (tmp_path / "main.py").write_text("open('out.txt', 'w').write('from batch')\nprint('batch ran')\n")
    try:
        proc = _run(ours, node_env, "run", "-t", name, "python", "main.py", cwd=tmp_path)
        assert proc.stdout == "batch ran\n" and "Build finished. (exit code = 0)" in proc.stderr
        failing = _run(ours, node_env, "run", "-t", name, "--exec", "exit 9", "python", "main.py", cwd=tmp_path,
                       check=False)
        assert failing.returncode == 9
        (tmp_path / "extra.txt").write_text("extra")
        _run(ours, node_env, "session", "upload", name, "extra.txt", cwd=tmp_path)
        listing = _run(ours, node_env, "--output", "json", "session", "ls", name).stdout
        assert {"main.py", "out.txt", "extra.txt"} <= {f["filename"] for f in json.loads(listing)["files"]}
        dest = tmp_path / "down"
        _run(ours, node_env, "session", "download", name, "out.txt", "--dest", str(dest))
        assert (dest / "out.txt").read_text() == "from batch"
        refused = _run(ours, node_env, "session", "download", name, "../../etc/passwd", "--dest", str(dest),
                       check=False)
        assert refused.returncode == 1 and "'..' is not allowed" in refused.stderr
        assert sorted(p.name for p in dest.iterdir()) == ["out.txt"]
        # A directory: its files and subdirectories, and its symlinks left out.
        _run(ours, node_env, "run", "-t", name, "-c", "import os; os.makedirs('d/sub'); open('d/sub/f', 'w')"
             ".write('deep'); os.symlink('/etc', 'd/etc-link')", "python")
        _run(ours, node_env, "session", "download", name, "d", "--dest", str(tmp_path / "tree"))
        assert (tmp_path / "tree" / "d" / "sub" / "f").read_text() == "deep"
        assert sorted(p.name for p in (tmp_path / "tree" / "d").iterdir()) == ["sub"]
        # Without a session, `session ls` still lists the sessions.
        assert name in _run(ours, node_env, "session", "ls").stdout
    finally:
        _run(ours, node_env, "session", "destroy", name, check=False)
