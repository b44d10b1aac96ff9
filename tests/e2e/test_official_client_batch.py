"""Batch sessions, logs after the end, restart and query counting, with the official client
(backend.ai-client 24.3.11, unchanged) against the installed node."""

from __future__ import annotations

import re
import subprocess
from typing import Any

from .conftest import Api, containers_of, unique_name, wait_until


def _run(exe, env, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=180)
    if check:
        assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _gql(api: Api, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    status, body = api.call("POST", "/admin/gql", {"query": query, "variables": variables})
    assert status == 200 and not body.get("errors"), (status, body)
    return dict(body["data"])


def _ended(api: Api, session_id: str) -> dict[str, Any] | None:
    found = _gql(api, "query($id: UUID!) { compute_session(id: $id) { status status_info result } }",
                 {"id": session_id})["compute_session"]
    return found if found and found["status"] == "TERMINATED" else None


def test_official_batch_sessions_end_with_their_result_and_logs(official_client, node_env, api) -> None:
    for exit_code, result, reason in ((0, "SUCCESS", "task-finished"), (3, "FAILURE", "task-failed")):
        name = unique_name("batch")
        proc = _run(official_client, node_env, "session", "create", "--type", "batch", "-t", name,
                    "-c", f"echo out-of-{name}; echo err-of-{name} >&2; exit {exit_code}", "python")
        match = re.search(r"Session ID ([0-9a-f-]{36})", proc.stdout + proc.stderr)
        assert match, (proc.stdout, proc.stderr)
        session_id = match.group(1)
        ended = wait_until(lambda sid=session_id: _ended(api, sid), f"{name} to end by itself")
        assert (ended["result"], ended["status_info"]) == (result, reason)
        wait_until(lambda sid=session_id: containers_of(sid) == [], f"{name}'s container to go")
        # The log was kept when the container was removed; the official CLI reads it by name.
        logs = wait_until(lambda n=name: (out := _run(official_client, node_env, "session", "logs", n).stdout)
                          and f"err-of-{n}" in out and out, f"{name}'s kept logs")
        assert f"out-of-{name}" in logs and f"err-of-{name}" in logs
        # `task-logs` reads the same log by the task's (session's) id or its main kernel's
        kernel_id = _gql(api, "query($id: UUID!) { compute_session(id: $id) { main_kernel_id } }",
                         {"id": session_id})["compute_session"]["main_kernel_id"]
        for task_id in (session_id, kernel_id):
            assert f"err-of-{name}" in _run(official_client, node_env, "task-logs", task_id).stdout


def test_official_restart_resets_state_and_counts_queries(official_client, node_env, api) -> None:
    name = unique_name("restart")
    try:
        _run(official_client, node_env, "session", "create", "-t", name, "python")
        status, before = api.call("GET", f"/session/{name}")
        assert status == 200 and before["status"] == "RUNNING" and before["numQueriesExecuted"] == 0
        proc = _run(official_client, node_env, "run", "-t", name, "-c", "x = 6*7; print(x)", "python")
        assert "42" in proc.stdout.splitlines()
        _run(official_client, node_env, "session", "restart", name)
        status, after = api.call("GET", f"/session/{name}")
        assert status == 200 and after["status"] == "RUNNING"
        assert after["containerId"] == before["containerId"]  # the same container
        proc = _run(official_client, node_env, "run", "-t", name, "-c", "print(x)", "python", check=False)
        assert "NameError" in proc.stdout + proc.stderr  # its variables are gone
        _run(official_client, node_env, "run", "-t", name, "-c", "print('again')", "python")
        assert api.call("GET", f"/session/{name}")[1]["numQueriesExecuted"] == 3
    finally:
        subprocess.run([str(official_client), "session", "destroy", name], env=node_env, capture_output=True)


def test_our_cli_batch_logs_and_restart(bai, api) -> None:
    """The same with this project's `backend.ai` (its `session restart` is new with this feature)."""
    name = unique_name("ourbatch")
    bai("session", "create", "--type", "batch", "-t", name, "-c", f"echo line-of-{name} >&2; exit 5", "python")
    logs = wait_until(lambda: (out := bai("session", "logs", name).stdout) and f"line-of-{name}" in out and out,
                      f"{name}'s kept logs")
    assert f"line-of-{name}" in logs
    name = unique_name("ourrestart")
    try:
        bai("session", "create", "-t", name, "python")
        container = api.call("GET", f"/session/{name}")[1]["containerId"]
        bai("run", "-t", name, "-c", "y = 1", "python")
        done = bai("session", "restart", name)
        assert "Done." in done.stdout + done.stderr
        status, info = api.call("GET", f"/session/{name}")
        assert (status, info["status"], info["containerId"]) == (200, "RUNNING", container)
        proc = bai("run", "-t", name, "-c", "print(y)", "python", check=False)
        assert "NameError" in proc.stdout + proc.stderr
        missing = bai("session", "restart", unique_name("missing"), check=False)
        assert missing.returncode != 0
    finally:
        bai("session", "destroy", name, check=False)
