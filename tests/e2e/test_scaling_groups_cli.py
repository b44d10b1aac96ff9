"""GET /scaling-groups through the official client (24.3.11): ``admin scaling-group get-available``
(``ScalingGroup.list_available``) lists the resource groups the caller may use for a project."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def official(client: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(client), *args], env=env, capture_output=True, text=True, timeout=120)


def test_get_available_lists_the_groups_of_a_project(official_client: Path, node_env: dict[str, str]) -> None:
    proc = official(official_client, node_env, "--output", "json", "admin", "scaling-group", "get-available", "default")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    # the client prints the raw answer first, then the list document
    document = json.loads(proc.stdout[proc.stdout.index("{\n"):])
    names = [item["name"] for item in document["items"]]
    assert "default" in names and document["count"] == len(names)


def test_get_available_for_an_unknown_project_fails_cleanly(official_client: Path, node_env: dict[str, str]) -> None:
    proc = official(official_client, node_env, "admin", "scaling-group", "get-available", "no-such-project")
    assert proc.returncode == 1
    assert "400" in proc.stderr + proc.stdout and "Unknown project" in proc.stderr + proc.stdout
