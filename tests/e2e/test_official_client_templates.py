"""Session templates with the official client (backend.ai-client 24.3.11, unchanged) against the
installed node: sesstpl create -> list -> get -> session create-from-template -> run code in the
session -> destroy it -> sesstpl delete."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from .conftest import Api, unique_name


def _run(exe: Path, env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=180)
    if check:
        assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_official_session_templates_round_trip(official_client: Path, node_env: dict[str, str], api: Api,
                                               tmp_path: Path) -> None:
    tpl_name, session = unique_name("tpl"), unique_name("fromtpl")
    document = {"api_version": "6", "kind": "taskTemplate", "metadata": {"name": tpl_name, "tag": "e2e"},
                "spec": {"session_type": "interactive",
                         "kernel": {"image": "python", "environ": {"FROM_TEMPLATE": "yes"}},
                         "resources": {"cpu": "1", "mem": "512m"}}}
    path = tmp_path / "template.yaml"
    path.write_text(yaml.safe_dump(document))

    out = _run(official_client, node_env, "sesstpl", "create", "-f", str(path))
    match = re.search(r"Task template ([0-9a-f]{32}) created", out.stdout + out.stderr)
    assert match, (out.stdout, out.stderr)
    template_id = match.group(1)
    try:
        listed = _run(official_client, node_env, "sesstpl", "list").stdout
        row = next(line for line in listed.splitlines() if template_id in line)
        assert tpl_name in row and "True" in row and "task" in row
        fetched = yaml.safe_load(_run(official_client, node_env, "sesstpl", "get", template_id).stdout)
        assert fetched["metadata"]["name"] == tpl_name and fetched["spec"]["kernel"]["image"] == "python"

        try:  # destroyed even when the create answer is not the expected one (a timeout under load)
            out = _run(official_client, node_env, "session", "create-from-template", "-t", session, template_id,
                       check=False)
            assert f"Session ID {session} is created and ready" in out.stdout + out.stderr, (out.stdout, out.stderr)
            status, info = api.call("GET", f"/session/{session}")
            assert status == 200 and info["status"] == "RUNNING" and info["tag"] == "e2e"
            assert info["environ"].get("FROM_TEMPLATE") == "yes"
            ran = _run(official_client, node_env, "run", "-t", session, "-c",
                       "import os; print(1, os.environ['FROM_TEMPLATE'])", "python")
            assert "1 yes" in ran.stdout.splitlines(), ran.stdout
        finally:
            _run(official_client, node_env, "session", "destroy", session, check=False)
    finally:
        _run(official_client, node_env, "sesstpl", "delete", "-f", template_id)
    gone = _run(official_client, node_env, "sesstpl", "get", template_id, check=False)
    assert gone.returncode != 0 and "404" in gone.stdout + gone.stderr
