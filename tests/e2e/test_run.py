"""The walking skeleton, as a user types it."""

from __future__ import annotations

import subprocess

from .conftest import containers_of, unique_name, wait_until


def test_run_rm_prints_42(bai, api) -> None:
    before = api.call("GET", "/")[1]
    assert before == {"version": "v8.20240315", "manager": "24.03.11"}
    proc = bai("run", "--rm", "-c", "print(6*7)", "python")
    assert proc.stdout == "42\n"


def test_run_reports_stderr_and_exit_code(bai) -> None:
    proc = bai("run", "--rm", "-c", "import sys; print('out'); print('err', file=sys.stderr); raise SystemExit(3)",
               "python", check=False)
    assert "out\n" in proc.stdout and "err" not in proc.stdout
    assert "err" in proc.stderr
    assert proc.returncode != 0


def test_named_session_keeps_state_and_destroy_leaves_nothing(bai, api, cleanup_sessions) -> None:
    name = unique_name()
    cleanup_sessions.append(name)
    bai("session", "create", "-t", name, "python")
    status, info = api.call("GET", f"/session/{name}")
    assert status == 200 and info["status"] == "RUNNING"
    bai("run", "-t", name, "-c", "x = 6*7", "python")
    assert bai("run", "-t", name, "-c", "print(x)", "python").stdout == "42\n"
    status, created = api.call("POST", "/session", {"name": name, "image": "python"})
    assert status == 201 and created["created"] is False
    session_id = created["sessionId"]
    assert len(containers_of(session_id)) == 1
    bai("session", "destroy", name)
    assert containers_of(session_id) == []
    assert api.call("GET", f"/session/{name}")[0] == 404


def test_container_death_terminates_session(bai, api, cleanup_sessions) -> None:
    name = unique_name()
    cleanup_sessions.append(name)
    status, created = api.call("POST", "/session", {"name": name, "image": "python"})
    assert status == 201 and created["status"] == "RUNNING", created
    session_id = created["sessionId"]
    [container] = containers_of(session_id)
    subprocess.run(["docker", "kill", container], check=True, capture_output=True)

    def dead() -> bool:
        st, body = api.call("GET", f"/session/{name}")
        return st == 404  # no live session of that name any more
    wait_until(dead, "the session to end after its container died")
    wait_until(lambda: containers_of(session_id) == [], "the dead container to be removed")


def test_enqueue_only_then_destroy(api) -> None:
    name = unique_name()
    status, created = api.call("POST", "/session", {"name": name, "image": "python", "enqueueOnly": True})
    assert status == 201 and created["status"] == "PENDING" and created["created"] is True

    def running() -> bool:
        return api.call("GET", f"/session/{name}")[1].get("status") == "RUNNING"
    wait_until(running, "the enqueued session to start")
    status, body = api.call("DELETE", f"/session/{name}")
    assert status == 200 and "stats" in body
    assert containers_of(created["sessionId"]) == []


def test_session_logs_shows_the_container_log(bai, cleanup_sessions) -> None:
    name = unique_name()
    cleanup_sessions.append(name)
    bai("session", "create", "-t", name, "python")
    # PID 1's stdout is the container's log stream (the kernel runs as one uid, so it may write there).
    bai("run", "-t", name, "-c", "open('/proc/1/fd/1', 'w').write('hello-from-the-log\\n')")
    assert "hello-from-the-log" in bai("session", "logs", name).stdout
    assert "hello-from-the-log" in bai("--output", "json", "session", "logs", name).stdout
    missing = bai("session", "logs", f"{name}-none", check=False)
    assert missing.returncode != 0 and "No such session" in missing.stderr
