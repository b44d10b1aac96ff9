"""`backend.ai session convert-to-image` with the official client (backend.ai-client 24.3.11,
unchanged) against the installed node: it follows the background task to its end, and a new
session of the image reference it printed runs code and finds a file the first session wrote in
its own filesystem (not a mounted folder); `image list --customized` shows it and `image forget`
removes it, from the agent (Docker) and from the manager. `session commit` leaves an image tar on
the agent host."""

from __future__ import annotations

import glob
import os
import re
import subprocess
from pathlib import Path

from .conftest import Api, unique_name, wait_until

MARKER = "/home/work/.imagify-marker.txt"
#: agent.toml [agent] image-commit-path (the default)
COMMIT_PATH = "/var/lib/bai/commit"
_REFERENCE = re.compile(r"bai\.local/\S+?:\S+?-customized_[0-9a-f]{32}")


def _run(exe: Path, env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=180)
    if check:
        assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_convert_to_image_then_a_session_of_it(official_client: Path, node_env: dict[str, str], api: Api) -> None:
    first, second = unique_name("im"), unique_name("im")
    word = unique_name("kept")
    reference = ""
    try:
        _run(official_client, node_env, "session", "create", "-t", first, "python")
        _run(official_client, node_env, "run", "-t", first, "-c", f"open({MARKER!r}, 'w').write({word!r})", "python")
        proc = _run(official_client, node_env, "session", "convert-to-image", first, f"e2e-env.{word}")
        output = proc.stdout + proc.stderr
        # The client exits 0 even when the task fails: what it printed tells.
        assert "Session export process completed." in output, output
        assert "Error during the operation" not in output, output
        found = _REFERENCE.search(output)
        assert found is not None, output
        reference = found.group(0)

        # The older `session commit`: an image tar on the agent host, GET .../commit says when it is done.
        committed = _run(official_client, node_env, "session", "commit", first)
        assert "Request to commit" in committed.stdout + committed.stderr, committed
        wait_until(lambda: api.call("GET", f"/session/{first}/commit")[1].get("status") == "ready",
                   "the tar commit to end", deadline=120)
        tars = wait_until(lambda: glob.glob(f"{COMMIT_PATH}/*/{first}-*.tar"), "the tar to appear", deadline=10)
        assert os.path.getsize(tars[0]) > 0
        # The node may have room for one session only (2 cores): the first one makes way.
        _run(official_client, node_env, "session", "destroy", first)

        _run(official_client, node_env, "session", "create", "-t", second, reference)
        ran = _run(official_client, node_env, "run", "-t", second, "-c", f"print(1); print(open({MARKER!r}).read())",
                   reference)
        assert ran.stdout.splitlines()[-2:] == ["1", word], ran.stdout
        listed = _run(official_client, node_env, "image", "list", "--customized")
        assert f"e2e-env.{word} (Owner: " in listed.stdout, listed.stdout
    finally:
        for name in (first, second):
            _run(official_client, node_env, "session", "destroy", name, check=False)
        for tar in glob.glob(f"{COMMIT_PATH}/*/{first}-*.tar"):
            os.unlink(tar)
        if reference:
            forgot = _run(official_client, node_env, "image", "forget", reference, "--arch", "x86_64")
            assert "Image forgotten" in forgot.stdout + forgot.stderr, forgot
            inspected = subprocess.run(["docker", "image", "inspect", reference], capture_output=True, timeout=60)
            assert inspected.returncode != 0, "the forgotten image is still on the agent"
