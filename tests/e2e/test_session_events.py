"""`session events NAME` against the installed node: a `--type batch --starts-at 3s` session whose
command exits 7 is PENDING first, then shows kernel_started, session_started, session_failure
(exitCode 7), session_terminating, session_terminated, in that order; our CLI stops by itself at
the end (plain and --output json), the official client (24.3.11) prints the same lines. Also
`--depends` through our CLI and the official one."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from .conftest import VENV_BIN, Api, unique_name, wait_until

ORDER = ["kernel_started", "session_started", "session_failure", "session_terminating", "session_terminated"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Follower:
    """A `session events` process whose stdout lines are collected as they come."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(ANSI.sub("", line.rstrip("\n")))

    def saw(self, event: str) -> bool:
        return any(line.split(" ", 1)[0] == event or f'"event": "{event}"' in line for line in self.lines)

    def wait_exit(self, timeout: float) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return rc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=5)


def names_of(lines: list[str]) -> list[str]:
    return [line.split(" ", 1)[0] for line in lines if line and not line.startswith("{")]


def plain_payloads(lines: list[str]) -> dict[str, Any]:
    return {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1]) for line in lines if " " in line}


def _subsequence(wanted: list[str], got: list[str]) -> bool:
    it = iter(got)
    return all(any(g == w for g in it) for w in wanted)


def test_session_events_of_a_delayed_failing_batch(bai, node_env, official_client: Path, api: Api) -> None:
    name = unique_name("events")
    bai("session", "create", "--type", "batch", "--starts-at", "3s", "--enqueue-only", "-t", name,
        "-c", "echo to-out; echo to-err >&2; exit 7", "python")
    status, info = api.call("GET", f"/session/{name}")
    assert status == 200 and info["status"] == "PENDING", info
    ours = Follower([str(VENV_BIN / "backend.ai"), "session", "events", name], node_env)
    ours_json = Follower([str(VENV_BIN / "backend.ai"), "--output", "json", "session", "events", name], node_env)
    official = Follower([str(official_client), "session", "events", name], node_env)
    try:
        # ours end by themselves once the session has ended
        assert ours.wait_exit(90) == 0, ours.proc.stderr.read() if ours.proc.stderr else ""
        assert ours_json.wait_exit(30) == 0
        got = names_of(ours.lines)
        assert _subsequence(ORDER, got), got
        assert got[-1] == "session_terminated" and "session_success" not in got, got
        payloads = plain_payloads(ours.lines)
        assert payloads["session_failure"]["exitCode"] == 7 and payloads["session_failure"]["sessionName"] == name
        assert payloads["session_terminated"]["reason"] == "task-failed"

        records = [json.loads(line) for line in ours_json.lines]
        assert [r["event"] for r in records] == got
        assert next(r for r in records if r["event"] == "session_failure")["data"]["exitCode"] == 7

        # the official client never stops by itself (as against the original); it printed the same
        wait_until(lambda: official.saw("session_terminated"), "the official client's session_terminated", 30)
        official.stop()
        official_names = names_of(official.lines)
        assert _subsequence(ORDER, official_names), (official_names, official.proc.stderr)
        assert plain_payloads(official.lines)["session_failure"]["exitCode"] == 7
    finally:
        for follower in (ours, ours_json, official):
            follower.stop()
    status, info = api.call("GET", f"/session/{name}")
    assert status == 404, info  # ended: only live sessions are found by name


def test_session_events_refuses_an_unknown_session(bai) -> None:
    started = time.monotonic()
    proc = bai("session", "events", unique_name("nosuch"), check=False, timeout=30)
    assert proc.returncode == 1 and "No live session" in proc.stderr, (proc.stdout, proc.stderr)
    assert time.monotonic() - started < 30


def _session_id(output: str) -> str:
    match = re.search(r"Session ID:? ([0-9a-f-]{36})", output)
    assert match, output
    return match.group(1)


def test_depends_through_both_clients(bai, node_env, official_client: Path, api: Api) -> None:
    first, second, third = unique_name("dep"), unique_name("dep"), unique_name("dep")
    ids = [_session_id(bai("session", "create", "--type", "batch", "--enqueue-only", "-t", first, "-c", "sleep 1",
                           "python").stdout)]
    ids.append(_session_id(bai("session", "create", "--type", "batch", "--enqueue-only", "-t", second,
                               "--depends", first, "-c", "true", "python").stdout))
    proc = subprocess.run([str(official_client), "session", "create", "--type", "batch", "--enqueue-only", "-t",
                           third, "--depends", second, "-c", "exit 0", "python"], env=node_env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    ids.append(_session_id(proc.stdout + proc.stderr))

    def ended(sid: str) -> dict[str, Any] | None:
        status, body = api.call("POST", "/admin/gql", {
            "query": "query($id: UUID!) { compute_session(id: $id) { status result } }", "variables": {"id": sid}})
        found = body["data"]["compute_session"] if status == 200 and body.get("data") else None
        return found if found and found["status"] in ("TERMINATED", "CANCELLED") else None

    for sid in ids:
        assert wait_until(lambda s=sid: ended(s), f"{sid} to end", 120) == {"status": "TERMINATED",
                                                                            "result": "SUCCESS"}
    proc = bai("session", "create", "--enqueue-only", "-t", unique_name("dep"), "--depends", unique_name("none"),
               "python", check=False)
    assert proc.returncode == 1 and "dependency" in proc.stderr, (proc.stdout, proc.stderr)
