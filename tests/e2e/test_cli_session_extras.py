"""Our `backend.ai` against the installed node: `session rename`, `session status-history` (the
server's upper-case status names, in time order), `session convert-to-image` (follows the
background task; prints the image reference), which `image list --customized` shows and `image
forget` removes, and `session commit` (prints the tar's path on the agent host; a task that fails
ends the command with its message and exit 1)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable

from .conftest import json_out, unique_name

Bai = Callable[..., subprocess.CompletedProcess[str]]
_REFERENCE = re.compile(r"^bai\.local/\S+:\S+-customized_[0-9a-f]{32}$")


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def _customized(bai: Bai) -> dict[str, dict[str, object]]:
    listed = json_out(bai("--output", "json", "image", "list", "--customized"))
    return {str(item["reference"]): item for item in listed["items"]}


def test_rename_status_history_convert_to_image_commit(bai: Bai) -> None:
    first, renamed = unique_name("ourx"), unique_name("ourx")
    image_name = unique_name("e2e-ours")
    reference, tar = "", ""
    bai("session", "create", "-t", first, "-r", "cpu=1", "-r", "mem=256m", "python")
    session = first
    try:
        bai("session", "rename", first, renamed)
        session = renamed
        # the old name is gone: renaming it again names the problem in one line
        assert "404" in _one_line_error(bai("session", "rename", first, unique_name("ourx"), check=False))

        history = json_out(bai("--output", "json", "session", "status-history", renamed))
        assert {"PENDING", "SCHEDULED", "PREPARING", "RUNNING"} <= set(history), history
        table = bai("session", "status-history", renamed)
        statuses = [line.split()[0] for line in table.stdout.splitlines()[2:]]
        assert statuses == ["PENDING", "SCHEDULED", "PREPARING", "RUNNING"], table.stdout
        assert "Resource allocation time:" in table.stderr, table.stderr

        bad = bai("session", "convert-to-image", renamed, "not a name!", check=False)
        assert "image_name" in _one_line_error(bad)

        converted = bai("session", "convert-to-image", renamed, image_name)
        reference = converted.stdout.strip().splitlines()[-1]
        assert _REFERENCE.match(reference), converted.stdout
        mine = _customized(bai)
        assert reference in mine and mine[reference]["customized_name"] == image_name, mine

        committed = json_out(bai("--output", "json", "session", "commit", renamed, "--filename", image_name))
        tar = str(committed["path"])
        assert tar.endswith(f"/{image_name}.tar") and os.path.getsize(tar) > 0, committed
        # A task that fails (the agent will not overwrite the tar): its message, exit 1.
        again = bai("--output", "json", "session", "commit", renamed, "--filename", image_name, check=False)
        assert again.returncode == 1 and again.stdout == "", again
        assert "exists already" in json.loads(again.stderr)["error"], again.stderr
    finally:
        bai("session", "destroy", session, check=False)
        if tar:
            os.unlink(tar)
        if reference:
            # Off the agent first, so its next heartbeat does not bring the record back.
            subprocess.run(["docker", "rmi", "-f", reference], capture_output=True, timeout=60)
            bai("image", "forget", reference)
    if reference:
        assert reference not in _customized(bai)
        assert "No image" in _one_line_error(bai("image", "forget", reference, check=False))


def test_create_and_run_refusals_are_one_line(bai: Bai) -> None:
    """session create and run name a refused request in one line (the manager's problem and its
    detail) and exit 1, stdout empty; --output json: one object on stderr, the line and the
    server's problem body."""
    image = unique_name("no-such-image")
    for args, action in ((("session", "create", "-t", unique_name("ourx"), image), "session create"),
                         (("run", "-c", "print(1)", image), "run"),
                         (("run", "--rm", "-t", unique_name("ourx"), "-r", "mem=1x", "-c", "print(1)", "python"),
                          "run")):
        line = _one_line_error(proc := bai(*args, check=False))
        assert line.startswith(f"\u2717 {action} failed: ") and proc.stdout == "", proc
        assert ("HTTP 404" in line and image in line) or ("HTTP 400" in line and "mem" in line), line
        err = json.loads(_one_line_error(proc := bai("--output", "json", *args, check=False)))
        assert proc.stdout == "" and err["error"] == line.removeprefix("\u2717 "), (err, line)
        assert err["api"]["status"] in (400, 404) and err["api"]["type"].startswith("https://api.backend.ai/probs/")
