"""``session rename``, ``session status-history`` and ``session abuse-history`` with the official
client (backend.ai-client 24.3.11, unchanged) against the installed node, on a real session."""

from __future__ import annotations

import ast
import re
import subprocess
from datetime import datetime

from .conftest import Api, unique_name


def _run(exe, env, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=180)
    if check:
        assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_official_rename_status_history_abuse_history(official_client, node_env, api: Api) -> None:
    name, new = unique_name("xtra"), unique_name("xtra-renamed")
    live = name
    try:
        _run(official_client, node_env, "session", "create", "-t", name, "python")
        proc = _run(official_client, node_env, "session", "rename", name, new)
        assert f"Session renamed to {new}." in proc.stdout + proc.stderr
        live = new
        assert api.call("GET", f"/session/{new}")[0] == 200
        assert api.call("GET", f"/session/{name}")[0] == 404
        # An invalid name: the client reports the 400 and exits non-zero; nothing changes.
        proc = _run(official_client, node_env, "session", "rename", new, "x", check=False)
        assert proc.returncode != 0 and "400" in proc.stdout + proc.stderr, (proc.stdout, proc.stderr)
        assert api.call("GET", f"/session/{new}")[0] == 200

        proc = _run(official_client, node_env, "session", "status-history", new)
        out = proc.stdout + proc.stderr
        match = re.search(r"status_history: (\{.*\})", out)
        assert match, out
        history = ast.literal_eval(match.group(1))
        assert {"PENDING", "SCHEDULED", "RUNNING"} <= history.keys(), history
        times = [datetime.fromisoformat(history[s]) for s in ("PENDING", "SCHEDULED", "RUNNING")]
        assert times == sorted(times)
        assert "Actual Resource Allocation Time" in out

        proc = _run(official_client, node_env, "session", "abuse-history", new)
        assert proc.stdout.strip() == "{}", proc.stdout
    finally:
        subprocess.run([str(official_client), "session", "destroy", live], env=node_env, capture_output=True,
                       timeout=120)
