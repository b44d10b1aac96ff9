"""``backend.ai vfolder ...`` and ``-m/--mount``: argument parsing, the requests each command sends
(methods, paths and bodies of the official SDK 24.03, against the peer of
``test_vfolder_transfer``), console and JSON output, and local path rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from bai.client import vfolder as sdk
from bai.client.cli.main import cli
from bai.client.cli.params import parse_mounts
from bai.client.exceptions import BackendClientError

from .fake_manager import FakeManager
from .test_vfolder_transfer import FOLDER, Peer, peer, peer_server  # noqa: F401 (fixtures)
from .wire_bodies import create_body

VF_ID = "e2aef5a18f32427b8575adf8598a97ec"


@pytest.fixture
def vf(peer: Peer) -> Peer:  # noqa: F811 (the imported fixture)
    """The manager/proxy peer of ``test_vfolder_transfer``, reset, with the client env on it."""
    return peer


def invoke(args: list[str], input: str | None = None) -> Result:
    return CliRunner().invoke(cli, args, input=input, catch_exceptions=False)


# -- mount expressions and session create ----------------------------------------------------


@pytest.mark.parametrize(("exprs", "expected"), [
    (["vf1"], (["vf1"], {}, {"vf1": {"type": "bind", "permission": None}})),
    (["vf1:/data", "vf2=rel/dir"], (["vf1", "vf2"], {"vf1": "/data", "vf2": "rel/dir"},
                                    {"vf1": {"type": "bind", "permission": None},
                                     "vf2": {"type": "bind", "permission": None}})),
    (["vf1/sub/dir:/x"], (["vf1/sub/dir"], {"vf1/sub/dir": "/x"}, {"vf1/sub/dir": {"type": "bind", "permission": None}})),
    (["type=bind,source=vf1,target=/mnt/a,perm=ro"],
     (["vf1"], {"vf1": "/mnt/a"}, {"vf1": {"type": "bind", "permission": "ro"}})),
    (["source=vf1,permission=rw"], (["vf1"], {}, {"vf1": {"type": "bind", "permission": "rw"}})),
    ([r"vf\:1:/a\,b"], (["vf:1"], {"vf:1": "/a,b"}, {"vf:1": {"type": "bind", "permission": None}})),
    (["vf1", "vf1"], (["vf1"], {}, {"vf1": {"type": "bind", "permission": None}})),
])
def test_mount_expressions(exprs: list[str], expected: tuple[Any, Any, Any]) -> None:
    got = parse_mounts(exprs)
    assert (got["mounts"], got["mount_map"], got["mount_options"]) == expected


@pytest.mark.parametrize("expr", ["", "source=vf1,perm=xx", "target=/x", "vf1,vf2", "type=bind,bogus=1"])
def test_bad_mount_expressions(expr: str) -> None:
    with pytest.raises(ValueError):
        parse_mounts([expr])


def test_session_create_with_a_mount_sends_the_wire_body(fake: FakeManager) -> None:
    """wire/33: ``session create -m anchor-vf1`` as the official client sends it."""
    r = invoke(["session", "create", "-t", "anchor-m1", "-m", "anchor-vf1", "--arch", "x86_64", "python"])
    assert r.exit_code == 0, r.output
    expected = create_body("anchor-m1")
    expected["config"]["mounts"] = ["anchor-vf1"]
    expected["config"]["mount_options"] = {"anchor-vf1": {"type": "bind", "permission": None}}
    assert fake.recorded("POST", "/session")[0].body == json.dumps(expected).encode()


def test_run_and_create_take_mount_maps_and_reject_bad_ones(fake: FakeManager) -> None:
    r = invoke(["session", "create", "-t", "anchor-m2", "--mount", "data:/mnt/data",
                "-v", "type=bind,source=models,target=models,perm=ro", "python"])
    assert r.exit_code == 0, r.output
    config = fake.recorded("POST", "/session")[0].json()["config"]
    assert config["mounts"] == ["data", "models"]
    assert config["mount_map"] == {"data": "/mnt/data", "models": "models"}
    assert config["mount_options"]["models"] == {"type": "bind", "permission": "ro"}
    bad = invoke(["session", "create", "-t", "anchor-m3", "-m", "source=x,perm=all", "python"])
    assert bad.exit_code == 2 and "'-m' / '--mount'" in bad.stderr
    assert len(fake.recorded("POST", "/session")) == 1


# -- local paths --------------------------------------------------------------------------------


def test_remote_paths_follow_the_base_dir(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f.txt").write_text("x")
    assert sdk.remote_path_of(Path("a/b/f.txt"), tmp_path) == "a/b/f.txt"
    assert sdk.remote_path_of(tmp_path / "a" / "b" / "f.txt", tmp_path / "a") == "b/f.txt"
    assert sdk.remote_path_of(Path("b/../b/f.txt"), tmp_path / "a") == "b/f.txt"
    for outside in (Path("../x"), Path("/etc/passwd"), Path(".")):
        with pytest.raises(BackendClientError):
            sdk.remote_path_of(outside, tmp_path)


def test_a_relative_base_dir_is_joined_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "src" / "d").mkdir(parents=True)
    (tmp_path / "src" / "d" / "f").write_text("1")
    (tmp_path / "src" / "top").write_text("2")
    monkeypatch.chdir(tmp_path)
    dirs, files = sdk.walk_sources([Path("d"), Path("top")], Path("src"), recursive=True)
    assert dirs == ["d"] and [f.remote for f in files] == ["d/f", "top"]
    assert files[0].local == tmp_path / "src" / "d" / "f"


def test_walk_sources_skips_symlinked_dirs(tmp_path: Path) -> None:
    (tmp_path / "d" / "s").mkdir(parents=True)
    (tmp_path / "d" / "s" / "f").write_text("1")
    (tmp_path / "d" / "g").write_text("22")
    (tmp_path / "d" / "loop").symlink_to(tmp_path / "d")
    (tmp_path / "d" / "link-to-g").symlink_to(tmp_path / "d" / "g")
    dirs, files = sdk.walk_sources([Path("d")], tmp_path, recursive=True)
    assert dirs == ["d", "d/s"]
    assert [(f.remote, f.size) for f in files] == [("d/g", 2), ("d/link-to-g", 2), ("d/s/f", 1)]


def test_download_destinations_stay_under_the_base(tmp_path: Path) -> None:
    assert sdk.local_dest_of("a/b.txt", tmp_path) == tmp_path / "a" / "b.txt"
    assert sdk.local_dest_of(".", tmp_path) == tmp_path
    for bad in ("../x", "a/../../x", "/etc/passwd"):
        with pytest.raises(BackendClientError):
            sdk.local_dest_of(bad, tmp_path)


@pytest.mark.parametrize("name", ["", "a/b", "..", ".", "x\ny"])
def test_folder_names_that_change_the_url_are_refused(name: str) -> None:
    with pytest.raises(BackendClientError, match="Invalid virtual folder name"):
        sdk.folder_path(name)


# -- what each command sends ------------------------------------------------------------------


def test_create_sends_the_wire_body(vf: Peer) -> None:
    """wire/11: ``vfolder create anchor-vf1 local:volume1``."""
    reply = {"id": VF_ID, "name": "anchor-vf1", "host": "local:volume1", "status": "ready"}
    vf.canned[("POST", "/folders")] = (201, reply)
    r = invoke(["vfolder", "create", "anchor-vf1", "local:volume1"])
    assert r.exit_code == 0, r.output
    assert r.stdout == 'Virtual folder "anchor-vf1" is created.\n'
    assert vf.recorded == [("POST", "/folders", {
        "name": "anchor-vf1", "host": "local:volume1", "unmanaged_path": None, "group": None,
        "usage_mode": "general", "permission": "rw", "cloneable": False})]
    r = invoke(["--output", "json", "vfolder", "create", "p1", "-g", "proj", "-m", "data", "-p", "ro", "--cloneable"])
    assert json.loads(r.stdout) == reply
    assert vf.recorded[-1][2] == {"name": "p1", "host": None, "unmanaged_path": None, "group": "proj",
                                    "usage_mode": "data", "permission": "ro", "cloneable": True}


@pytest.mark.parametrize(("args", "calls", "console"), [
    (["delete", FOLDER], [("DELETE", f"/folders/{FOLDER}", None)], "Deleted."),
    (["restore", FOLDER], [("GET", "/folders/_/id", {"name": FOLDER}),
                           ("POST", "/folders/restore-from-trash-bin", {"id": VF_ID})], "Restored."),
    (["recover", FOLDER], [("GET", "/folders/_/id", {"name": FOLDER}),
                           ("POST", "/folders/restore-from-trash-bin", {"id": VF_ID})], "Restored."),
    (["delete-trash", FOLDER], [("GET", "/folders/_/id", {"name": FOLDER}),
                                ("POST", "/folders/delete-from-trash-bin", {"id": VF_ID})], "Delete completed."),
    (["purge", FOLDER], [("GET", "/folders/_/id", {"name": FOLDER}),
                         ("POST", "/folders/purge", {"id": VF_ID})], "Purged."),
    (["purge", VF_ID], [("POST", "/folders/purge", {"id": VF_ID})], "Purged."),
    (["delete-trash", "e2aef5a1-8f32-427b-8575-adf8598a97ec"],
     [("POST", "/folders/delete-from-trash-bin", {"id": VF_ID})], "Delete completed."),
    (["rename", FOLDER, "vf2"], [("POST", f"/folders/{FOLDER}/rename", {"new_name": "vf2"})], "Renamed."),
    (["rename-file", FOLDER, "a/b.txt", "c.txt"],
     [("POST", f"/folders/{FOLDER}/rename-file", {"target_path": "a/b.txt", "new_name": "c.txt"})], "Renamed."),
    (["mv", FOLDER, "a", "b/"], [("POST", f"/folders/{FOLDER}/move-file", {"src": "a", "dst": "b/"})], "Moved."),
    (["rm", "-y", "-r", FOLDER, "a", "b"],
     [("DELETE", f"/folders/{FOLDER}/delete-files", {"files": ["a", "b"], "recursive": True})], "Done."),
    (["delete-file", "-y", FOLDER, "a"],
     [("DELETE", f"/folders/{FOLDER}/delete-files", {"files": ["a"], "recursive": False})], "Done."),
    (["mkdir", "-p", FOLDER, "x/y"],
     [("POST", f"/folders/{FOLDER}/mkdir", {"path": "x/y", "parents": True, "exist_ok": False})], "Created: x/y"),
    (["mkdir", "-e", FOLDER, "x", "y"],
     [("POST", f"/folders/{FOLDER}/mkdir", {"path": ["x", "y"], "parents": False, "exist_ok": True})],
     "Created: x, y"),
    (["accept-invitation", "inv-1"], [("POST", "/folders/invitations/accept", {"inv_id": "inv-1"})],
     "Invitation accepted."),
    (["reject", "inv-1"], [("DELETE", "/folders/invitations/delete", {"inv_id": "inv-1"})], "Invitation rejected."),
])
def test_action_commands(vf: Peer, args: list[str], calls: list[Any], console: str) -> None:
    vf.canned[("GET", "/folders/_/id")] = (200, {"id": VF_ID, "name": FOLDER})
    r = invoke(["vfolder", *args])
    assert r.exit_code == 0, r.output
    assert vf.recorded == calls
    assert console in r.stderr
    vf.recorded.clear()
    r = invoke(["--output", "json", "vfolder", *args])
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"] is True


def test_rm_asks_first(vf: Peer) -> None:
    r = invoke(["vfolder", "rm", FOLDER, "a"], input="n\n")
    assert r.exit_code == 1 and "Cancelled." in r.stderr and vf.recorded == []


def test_sharing_commands(vf: Peer) -> None:
    vf.canned[("POST", f"/folders/{FOLDER}/invite")] = (201, {"invited_ids": ["b@x.com"]})
    r = invoke(["vfolder", "invite", "-p", "ro", FOLDER, "b@x.com"])
    assert r.exit_code == 0 and r.stdout == "Invitation sent to:\n\t- b@x.com\n"
    assert vf.recorded[-1] == ("POST", f"/folders/{FOLDER}/invite", {"perm": "ro", "user_ids": ["b@x.com"]})
    bad = invoke(["vfolder", "invite", "-p", "all", FOLDER, "b@x.com"])
    assert bad.exit_code == 2
    inv = {"id": "inv-1", "inviter": "a@x.com", "invitee": "b@x.com", "perm": "ro", "state": "pending",
           "vfolder_id": VF_ID, "vfolder_name": FOLDER}
    vf.canned[("GET", "/folders/invitations/list")] = (200, {"invitations": [inv]})
    r = invoke(["vfolder", "invitations"])
    assert r.exit_code == 0
    assert f"[1] a@x.com, b@x.com, {FOLDER} ({VF_ID}), read-only, inv-1" in r.stdout
    r = invoke(["--output", "json", "vfolder", "invitations"])
    assert json.loads(r.stdout) == {"invitations": [inv]}
    invoke(["vfolder", "invitations", "--sent"])
    assert vf.recorded[-1][:2] == ("GET", "/folders/invitations/list-sent")
    vf.canned[("POST", f"/folders/{FOLDER}/share")] = (201, {"shared_emails": ["c@x.com"]})
    r = invoke(["vfolder", "share", "-p", "wd", FOLDER, "c@x.com"])
    assert r.stdout == "Shared with wd permission to:\n\t- c@x.com\n"
    assert vf.recorded[-1][2] == {"permission": "wd", "emails": ["c@x.com"]}
    vf.canned[("DELETE", f"/folders/{FOLDER}/unshare")] = (200, {"unshared_emails": ["c@x.com"]})
    r = invoke(["vfolder", "unshare", FOLDER, "c@x.com"])
    assert r.stdout == "Unshared from:\n\t- c@x.com\n" and vf.recorded[-1][0] == "DELETE"


def test_leave_and_update_options_check_ownership_first(vf: Peer) -> None:
    vf.canned[("GET", f"/folders/{FOLDER}")] = (200, {"name": FOLDER, "type": "user", "is_owner": True})
    r = invoke(["vfolder", "leave", FOLDER])
    assert r.exit_code == 1 and "You cannot leave a virtual folder you own" in r.stderr
    r = invoke(["vfolder", "update-options", FOLDER, "-p", "ro", "--set-cloneable", "yes"])
    assert r.exit_code == 0, r.output
    assert vf.recorded[-1] == ("POST", f"/folders/{FOLDER}/update-options", {"cloneable": True, "permission": "ro"})
    vf.canned[("GET", f"/folders/{FOLDER}")] = (200, {"name": FOLDER, "type": "user", "is_owner": False})
    vf.canned[("POST", f"/folders/{FOLDER}/leave")] = (200, {"msg": "left the shared vfolder"})
    r = invoke(["vfolder", "leave", FOLDER])
    assert r.exit_code == 0 and r.stdout == f'Left the shared virtual folder "{FOLDER}".\n'
    assert vf.recorded[-1] == ("POST", f"/folders/{FOLDER}/leave", {"shared_user_uuid": None})
    r = invoke(["vfolder", "update-options", FOLDER, "-p", "ro"])
    assert r.exit_code == 1 and "do not own" in r.stderr


def test_clone_follows_the_background_task(vf: Peer) -> None:
    vf.canned[("GET", f"/folders/{FOLDER}")] = (200, {"name": FOLDER, "cloneable": True, "is_owner": False})
    vf.canned[("POST", f"/folders/{FOLDER}/clone")] = (201, {"id": VF_ID, "name": "copy", "bgtask_id": "t-1"})
    vf.bgtask_script[:] = [("bgtask_updated", {"current_progress": 1, "total_progress": 2, "message": "half"}),
                             ("bgtask_done", {"message": "done"})]
    r = invoke(["vfolder", "clone", FOLDER, "copy", "local:volume1"])
    assert r.exit_code == 0, r.output
    assert "[1/2] half" in r.stderr and "Cloning the vfolder is complete." in r.stderr
    assert ("POST", f"/folders/{FOLDER}/clone", {"target_name": "copy", "target_host": "local:volume1",
                                                  "usage_mode": "general", "permission": "rw"}) in vf.recorded
    assert vf.recorded[-1][:2] == ("GET", "/events/background-task?task_id=t-1")
    vf.bgtask_script[:] = [("bgtask_failed", {"message": "disk full"})]
    r = invoke(["vfolder", "clone", FOLDER, "copy"])
    assert r.exit_code == 1 and r.stderr.strip().endswith("Error during the operation: disk full")


def test_list_hosts_types_info_and_list(vf: Peer) -> None:
    hosts = {"default": "local:volume1", "allowed": ["local:volume1", "local:volume2"], "volume_info": {}}
    vf.canned[("GET", "/folders/_/hosts")] = (200, hosts)
    r = invoke(["vfolder", "list-hosts"])
    assert r.stdout == "Default vfolder host: local:volume1\nUsable hosts: local:volume1, local:volume2\n"
    assert json.loads(invoke(["--output", "json", "vfolder", "list-hosts"]).stdout) == hosts
    vf.canned[("GET", "/folders/_/allowed_types")] = (200, ["user", "group"])
    assert invoke(["vfolder", "list-allowed-types"]).stdout == "['user', 'group']\n"
    info = {"name": FOLDER, "id": VF_ID, "host": "local:volume1", "is_owner": True, "permission": "rw",
            "status": "ready", "num_files": 3, "used_bytes": 10, "type": "user", "usage_mode": "general",
            "group": None, "user": "u1", "cloneable": False}
    vf.canned[("GET", f"/folders/{FOLDER}")] = (200, info)
    r = invoke(["vfolder", "info", FOLDER])
    assert r.stdout.startswith(f'Virtual folder "{FOLDER}" (ID: {VF_ID})\n') and "- Number of files: 3" in r.stdout
    item = {"host": "local:volume1", "name": FOLDER, "status": "ready", "created_at": "2026-11-26T17:33:32+00:00",
            "creator": "a@x.com", "group": None, "permission": "rw", "ownership_type": "user"}
    vf.canned[("POST", "/admin/gql")] = (200, {"data": {"vfolder_list": {"items": [item], "total_count": 1}}})
    r = invoke(["--output", "json", "vfolder", "list"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["count"] == 1 and out["items"][0]["group_id"] is None and out["items"][0]["name"] == FOLDER
    gql = vf.recorded[-1][2]
    assert "vfolder_list(limit:$limit, offset:$offset, group_id:$group_id" in gql["query"]
    assert gql["variables"] == {"group_id": None, "filter": None, "order": None, "limit": 20, "offset": 0}
    r = invoke(["vfolder", "list"])
    assert r.stdout.splitlines()[0].split()[:3] == ["Host", "Name", "Status"]


def test_api_errors_are_one_line(vf: Peer) -> None:
    vf.canned[("GET", f"/folders/{FOLDER}")] = (404, {"type": "https://api.backend.ai/probs/vfolder-not-found",
                                                         "title": "Virtual folder not found."})
    r = invoke(["vfolder", "info", FOLDER])
    assert r.exit_code == 1
    assert r.stderr == "\u2717 vfolder info failed: Virtual folder not found (HTTP 404)\n"


def test_mkdir_failures_in_either_result_shape() -> None:
    from bai.client.cli.vfolder import _failed_items

    assert _failed_items([{"relpath": "a", "status": "success", "msg": None},
                          {"relpath": "b", "status": "failed", "msg": "exists"}]) == ["b: exists"]
    assert _failed_items({"success": [{"item": "a"}], "failed": [{"item": "b", "msg": "exists"}]}) == ["b: exists"]
    assert _failed_items({"results": "?"}) == [] and _failed_items(None) == []
