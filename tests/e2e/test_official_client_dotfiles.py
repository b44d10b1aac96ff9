"""Dotfiles with the official client (backend.ai-client 24.3.11, unchanged) against the installed
node: `dotfile create/list/get/update/delete`, a bad path refused, and a new session finding the
file in its home with the permission asked for."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path


def _run(exe: Path, env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=180)
    if check:
        assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_official_dotfiles_reach_a_new_session(official_client: Path, node_env: dict[str, str],
                                               tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    # a file of its own (not .bashrc): sessions other tests start meanwhile get it too, harmlessly
    path = f".config/bai-e2e-{tag}.toml"
    first, second = tmp_path / "first.toml", tmp_path / "second.toml"
    first.write_text(f"first = '{tag}'\n")
    second.write_text(f"second = '{tag}'\n")
    name = f"dotfile-{tag}"
    stored = False
    try:
        _run(official_client, node_env, "dotfile", "create", path, "-f", str(first), "--perm", "640")
        stored = True
        listed = _run(official_client, node_env, "dotfile", "list").stdout
        assert path in listed and f"first = '{tag}'" in listed and "640" in listed, listed
        _run(official_client, node_env, "dotfile", "update", path, "-f", str(second), "--perm", "600")
        assert _run(official_client, node_env, "dotfile", "get", path).stdout == f"second = '{tag}'\n\n"
        refused = _run(official_client, node_env, "dotfile", "create", "../escape", "-f", str(first), check=False)
        assert refused.returncode != 0 and "must not contain '..'" in refused.stdout + refused.stderr, refused

        _run(official_client, node_env, "session", "create", "-t", name, "python")
        proc = _run(official_client, node_env, "run", "-t", name, "-c",
                    f"import subprocess; print(subprocess.run(['sh', '-c', 'cat ~/{path}; stat -c %a ~/{path}'], "
                    "capture_output=True, text=True).stdout)", "python")
        assert f"second = '{tag}'" in proc.stdout.splitlines() and "600" in proc.stdout.splitlines(), proc.stdout

        _run(official_client, node_env, "dotfile", "delete", path, "-f")
        stored = False
        gone = _run(official_client, node_env, "dotfile", "get", path, check=False)
        assert gone.returncode != 0 and "No such dotfile." in gone.stdout + gone.stderr, gone
    finally:
        subprocess.run([str(official_client), "session", "destroy", name], env=node_env, capture_output=True,
                       timeout=120)
        if stored:
            subprocess.run([str(official_client), "dotfile", "delete", path, "-f"], env=node_env,
                           capture_output=True, timeout=60)
