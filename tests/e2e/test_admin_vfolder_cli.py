"""Our `backend.ai admin vfolder ...` against the installed node: the superadmin lists every
folder (a user's folder included), volume hosts, a host's performance figures, mounts and the
fstab; changes a shared folder's per-user permission and hands a folder to another user; a
plain user is refused the node-wide commands with one line and nothing changed."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import json_out, unique_name
from .test_vfolder_cli import Run, env, failed, folders, second_user, vf  # noqa: F401 - fixtures


def test_admin_lists_hosts_metrics_mounts_and_every_folder(vf: Run, folders: list[str],  # noqa: F811
                                                          second_user: tuple[str, Run, object]) -> None:  # noqa: F811
    email, other, _ = second_user
    mine = unique_name("e2e-adm")
    folders.append(mine)
    vf("vfolder", "create", mine)
    theirs = unique_name("e2e-adm-u")
    other("vfolder", "create", theirs)
    try:
        listed = json_out(vf("--output", "json", "admin", "vfolder", "list", "--filter",
                             f'name in ["{mine}", "{theirs}"]'))
        assert {i["name"] for i in listed["items"]} == {mine, theirs}
        assert listed["total_count"] == 2
        console = vf("admin", "vfolder", "list", "--filter", f'name == "{theirs}"').stdout
        assert theirs in console and "Ownership Type" in console

        hosts = vf("admin", "vfolder", "list-hosts").stdout.splitlines()
        assert hosts[0] == "Default vfolder host: local:volume1"
        assert "local:volume1" in hosts[1]
        assert json_out(vf("--output", "json", "admin", "vfolder", "list-hosts"))["default"] == "local:volume1"

        metric = vf("admin", "vfolder", "perf-metric", "local:volume1").stdout
        assert metric.splitlines()[0].split() == ["Key", "Value"]
        mounts = vf("admin", "vfolder", "list-mounts").stdout
        assert mounts.startswith("manager\n") and "\nagents\n" in mounts
        fstab = json.loads(vf("--output", "json", "admin", "vfolder", "get-fstab-contents").stdout)
        assert isinstance(fstab, dict) and "content" in fstab
    finally:
        other("vfolder", "delete", theirs, check=False)
        other("vfolder", "delete-trash", theirs, check=False)
        other("vfolder", "purge", theirs, check=False)


def test_admin_changes_shared_permissions_and_ownership(vf: Run, folders: list[str],  # noqa: F811
                                                        second_user: tuple[str, Run, object]) -> None:  # noqa: F811
    email, other, _ = second_user
    name = unique_name("e2e-adm-sh")
    folders.append(name)
    vf("vfolder", "create", name)
    folder_id = json_out(vf("--output", "json", "vfolder", "info", name))["id"]
    vf("vfolder", "invite", "-p", "ro", name, email)
    (inv,) = [i for i in json_out(other("--output", "json", "vfolder", "invitations"))["invitations"]
              if i["vfolder_name"] == name]
    other("vfolder", "accept-invitation", inv["id"])
    user_id = json_out(vf("--output", "json", "admin", "user", "info", "--email", email))["items"][0]["uuid"]

    info = vf("admin", "vfolder", "shared-vfolder-info", folder_id).stdout
    assert f'Virtual folder "{name}"' in info and "- Permission: ro" in info
    assert name in vf("admin", "vfolder", "list-shared-vfolders").stdout

    vf("admin", "vfolder", "update-shared-vf-permission", folder_id, user_id, "-p", "rw")
    assert json_out(other("--output", "json", "vfolder", "info", name))["permission"] == "rw"
    vf("admin", "vfolder", "remove-shared-vf-permission", folder_id, user_id)
    assert failed(other("vfolder", "info", name, check=False)).startswith("\u2717 vfolder info failed:")

    out = vf("admin", "vfolder", "change-vfolder-ownership", folder_id, email).stdout
    assert out.strip() == f"Now ownership of VFolder:{folder_id} goes to User:{email}"
    assert json_out(other("--output", "json", "vfolder", "info", name))["is_owner"] is True
    other("vfolder", "delete", name, check=False)
    other("vfolder", "delete-trash", name, check=False)
    other("vfolder", "purge", name, check=False)


def test_a_plain_user_is_refused_with_one_line(second_user: tuple[str, Run, object], tmp_path: Path  # noqa: F811
                                               ) -> None:
    _, other, _ = second_user
    for args in (("list-hosts",), ("perf-metric", "local:volume1"), ("list-mounts",),
                 ("mount-host", "tmpfs", "x")):
        line = failed(other("admin", "vfolder", *args, check=False))
        assert line.startswith(f"\u2717 vfolder {args[0]} failed:") and "HTTP 5" not in line, line
