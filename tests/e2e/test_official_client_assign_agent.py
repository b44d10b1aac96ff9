"""Manual agent assignment with the official client 24.3.11, unchanged: ``session create
--assign-agent`` sends ``config.agentList``; the installed node places the session on that agent,
and refuses an unknown agent naming it (nothing created)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

from .conftest import unique_name


def _agent_id() -> str:
    return str(tomllib.loads(Path("/etc/backend.ai/agent.toml").read_text())["agent"]["id"])


def _run(exe: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=180)


def test_official_session_create_assign_agent(official_client, node_env, api) -> None:
    agent = _agent_id()
    name = unique_name("assigned")
    try:
        proc = _run(official_client, node_env, "session", "create", "-t", name, "--assign-agent", agent, "python")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        match = re.search(r"Session ID ([0-9a-f-]{36})", proc.stdout + proc.stderr)
        assert match, proc.stdout + proc.stderr
        status, body = api.call("POST", "/admin/gql", {
            "query": "query($id: UUID!) { compute_session(id: $id) { status agent_ids } }",
            "variables": {"id": match.group(1)}})
        assert status == 200 and body["data"]["compute_session"] == {"status": "RUNNING", "agent_ids": [agent]}, body
    finally:
        _run(official_client, node_env, "session", "destroy", name)

    bad = unique_name("assigned")
    proc = _run(official_client, node_env, "session", "create", "-t", bad, "--assign-agent", "i-no-such-agent",
                "python")
    assert "i-no-such-agent" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert api.call("GET", f"/session/{bad}")[0] == 404

