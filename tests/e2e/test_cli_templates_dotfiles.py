"""Our `backend.ai` against the installed node: session templates (`sesstpl create -f` a YAML file,
list, get as YAML, `session create-from-template` with overrides, code runs in it, delete) and
dotfiles (create, list, get, update, delete; a bad path refused with one line and exit 1)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import yaml

from .conftest import json_out, unique_name

Bai = Callable[..., subprocess.CompletedProcess[str]]


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_session_template_round_trip(bai: Bai, tmp_path: Path) -> None:
    tpl_name, session = unique_name("ourtpl"), unique_name("ourtpl")
    document = {"api_version": "6", "kind": "taskTemplate", "metadata": {"name": tpl_name, "tag": "e2e-ours"},
                "spec": {"session_type": "interactive",
                         "kernel": {"image": "python", "environ": {"FROM_TEMPLATE": "yes", "KEPT": "k"}},
                         "resources": {"cpu": "1", "mem": "256m"}}}
    path = tmp_path / "template.yaml"
    path.write_text(yaml.safe_dump(document))

    template_id = bai("sesstpl", "create", "-f", str(path)).stdout.strip()
    assert len(template_id) == 32, template_id
    try:
        listed = json_out(bai("--output", "json", "session-template", "list"))
        mine = [t for t in listed["items"] if t["id"] == template_id]
        assert len(mine) == 1 and mine[0]["name"] == tpl_name and mine[0]["is_owner"] is True, listed
        fetched = yaml.safe_load(bai("sesstpl", "get", template_id).stdout)
        assert fetched["metadata"]["name"] == tpl_name and fetched["spec"]["kernel"]["image"] == "python"

        # -e replaces the template's environ (the manager's rule: a given field wins as a whole)
        created = json_out(bai("--output", "json", "session", "create-from-template", "-t", session,
                               "-e", "FROM_TEMPLATE=overridden", template_id))
        try:
            assert created["status"] == "RUNNING" and created["sessionName"] == session, created
            info = json_out(bai("--output", "json", "session", "info", session))
            assert info["tag"] == "e2e-ours" and info["environ"].get("FROM_TEMPLATE") == "overridden", info
            ran = bai("run", "-t", session, "-c", "import os; print(1, os.environ['FROM_TEMPLATE'])", "python")
            assert "1 overridden" in ran.stdout.splitlines(), ran.stdout
        finally:
            bai("session", "destroy", session, check=False)
        missing = bai("session", "create-from-template", "-t", unique_name("ourtpl"),
                      "0" * 32, check=False)
        assert "404" in _one_line_error(missing)
    finally:
        bai("sesstpl", "delete", "-f", template_id, check=False)
    gone = bai("session-template", "get", template_id, check=False)
    assert "404" in _one_line_error(gone)


def test_create_from_template_no_mount(bai: Bai, tmp_path: Path) -> None:
    """The template's folders are mounted unless --no-mount is given (then none, or only -m's)."""
    folder, tpl_name = unique_name("ourtpl-vf"), unique_name("ourtpl")
    document = {"api_version": "6", "kind": "taskTemplate", "metadata": {"name": tpl_name},
                "spec": {"kernel": {"image": "python"}, "mounts": {folder: None},
                         "resources": {"cpu": "1", "mem": "256m"}}}
    path = tmp_path / "template.yaml"
    path.write_text(yaml.safe_dump(document))
    bai("vfolder", "create", folder)
    template_id = ""
    try:
        template_id = bai("sesstpl", "create", "-f", str(path)).stdout.strip()
        for flags, expected in (((), [folder]), (("--no-mount",), [])):
            session = unique_name("ourtpl")
            try:
                created = json_out(bai("--output", "json", "session", "create-from-template", "-t", session,
                                       *flags, template_id))
                assert created["status"] == "RUNNING", created
                info = json_out(bai("--output", "json", "session", "info", session))
                assert info["mounts"] == expected, (flags, info["mounts"])
            finally:
                bai("session", "destroy", session, check=False)
    finally:
        if template_id:
            bai("sesstpl", "delete", "-f", template_id, check=False)
        for step in ("delete", "delete-trash", "purge"):
            bai("vfolder", step, folder, check=False)


def test_dotfiles_round_trip(bai: Bai, tmp_path: Path) -> None:
    path = f".e2e-ours-{unique_name('dot')}"
    content = tmp_path / "bashrc"
    content.write_text("alias ll='ls -l'\n")
    try:
        bai("dotfile", "create", path, "-f", str(content), "-p", "644")
        listed = json_out(bai("--output", "json", "dotfile", "list"))
        assert {"path": path, "permission": "644", "data": "alias ll='ls -l'\n"} in listed["items"], listed
        assert bai("dotfile", "get", path).stdout == "alias ll='ls -l'\n"

        bai("dotfile", "update", path, "--data", "export E2E=1\n")  # no -p: the permission is kept
        got = json_out(bai("--output", "json", "dotfile", "get", path))
        assert got == {"path": path, "permission": "644", "data": "export E2E=1\n"}, got

        refused = bai("dotfile", "create", "../escape", "--data", "x", check=False)
        assert "'..'" in _one_line_error(refused)
        bad_perm = bai("dotfile", "create", ".e2e-perm", "--data", "x", "-p", "99", check=False)
        assert "octal" in _one_line_error(bad_perm)
        paths = [d["path"] for d in json_out(bai("--output", "json", "dotfile", "list"))["items"]]
        assert "../escape" not in paths and ".e2e-perm" not in paths, paths
    finally:
        bai("dotfile", "delete", "-f", path, check=False)
    paths = [d["path"] for d in json_out(bai("--output", "json", "dotfile", "list"))["items"]]
    assert path not in paths
    assert "404" in _one_line_error(bai("dotfile", "get", path, check=False))
