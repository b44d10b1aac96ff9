"""The official Backend.AI client (backend.ai-client 24.3.11, API v8.20240315), unchanged."""

from __future__ import annotations

import subprocess

from .conftest import containers_of, unique_name


def _run(exe, env, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_official_run_rm(official_client, node_env) -> None:
    proc = _run(official_client, node_env, "run", "--rm", "-c", "print(6*7)", "python")
    assert "42" in proc.stdout.splitlines()


def test_official_create_run_existing_destroy(official_client, node_env, api) -> None:
    name = unique_name("official")
    try:
        _run(official_client, node_env, "session", "create", "-t", name, "python")
        status, info = api.call("GET", f"/session/{name}")
        assert status == 200 and info["status"] == "RUNNING"
        proc = _run(official_client, node_env, "run", "-t", name, "-c", "x = 6*7; print(x + 0)", "python")
        assert "42" in proc.stdout.splitlines()
        _run(official_client, node_env, "session", "destroy", name)
        assert api.call("GET", f"/session/{name}")[0] == 404
    finally:
        subprocess.run([str(official_client), "session", "destroy", name], env=node_env, capture_output=True)
    sid = info["containerId"]
    assert sid  # the container existed while it ran ...
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"id={sid}"], capture_output=True, text=True)
    assert out.stdout.strip() == ""  # ... and is gone after destroy
    assert containers_of("nonexistent") == []
