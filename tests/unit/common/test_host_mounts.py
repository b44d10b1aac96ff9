"""Host-mount rules that need no mount: input checks, the fstab path confinement, the node's
fs-types allow-list, a node with host mounts off (the default) doing nothing, and fstab edits
that add and remove exactly one line, atomically, keeping the file's mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from bai.common import host_mounts as hm
from bai.common.agent_rpc import MountHostRequest


@pytest.mark.parametrize("name", ["scratch", "nfs-home", "A1_b.c", "x" * 64])
def test_good_names(name: str) -> None:
    assert hm.check_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", ".hidden", "-x", "x" * 65, "a b", "a\x00", "é"])
def test_bad_names(name: str) -> None:
    with pytest.raises(ValueError):
        hm.check_name(name)


@pytest.mark.parametrize("options", ["size=1m", "vers=4.1,rsize=1048576,hard,timeo=600", "ro", "uid=1000,gid=1000",
                                     "credentials=/etc/bai/cifs.cred", "x-systemd.automount"])
def test_good_options(options: str) -> None:
    assert hm.check_options(options) == options


@pytest.mark.parametrize("options", ["bind", "size=1m,rbind", "remount", "ro,Remount", "move", "loop", "suid",
                                     "dev", "user", "users", "owner", "helper=x", "make-shared", "x-mount.mkdir",
                                     "a,,b", ",a", "a b", "a\nb", "a\x00", "mode='1'", "a;b", "a=$(id)", "",
                                     "a," * 64 + "a", "k=" + "v" * 1024])
def test_bad_options(options: str) -> None:
    with pytest.raises(ValueError):
        hm.check_options(options)


@pytest.mark.parametrize("location", ["server:/export/home", "//fs/share", "[fe80::1]:/x", "tmpfs", "10.0.0.1:/a"])
def test_good_locations(location: str) -> None:
    assert hm.check_fs_location(location) == location


@pytest.mark.parametrize("location", ["", "-oremount", "a b", "a\tb", "a\nb", "a,b", "#x", "a\x00", "x" * 1025, "'a'"])
def test_bad_locations(location: str) -> None:
    with pytest.raises(ValueError):
        hm.check_fs_location(location)


def test_rpc_model_uses_the_same_checks() -> None:
    with pytest.raises(ValidationError):
        MountHostRequest.model_validate({"name": "../x", "fs_location": "t"})
    with pytest.raises(ValidationError):
        MountHostRequest.model_validate({"name": "x", "fs_location": "t", "options": "bind"})
    with pytest.raises(ValidationError):
        MountHostRequest.model_validate({"name": "x", "fs_location": "t", "fstab_path": "/a/../etc/shadow"})
    assert MountHostRequest.model_validate({"name": "x", "fs_location": "t"}).fs_type == "nfs"


def test_forced_options_come_last_and_once() -> None:
    assert hm.MountSpec("x", "t", "tmpfs", "size=1m,nosuid").mount_options() == "size=1m,nosuid,nodev"
    assert hm.MountSpec("x", "t", "tmpfs").mount_options() == "nosuid,nodev"


def test_config_refuses_relative_paths_and_bad_types() -> None:
    with pytest.raises(ValidationError):
        hm.HostMountsConfig.model_validate({"mount-base": "relative"})
    with pytest.raises(ValidationError):
        hm.HostMountsConfig.model_validate({"fstab-path": "/"})
    with pytest.raises(ValidationError):
        hm.HostMountsConfig.model_validate({"fs-types": ["tmpfs", "Bad Type"]})
    assert hm.HostMountsConfig().enabled is False


def test_only_the_configured_fstab_and_types(tmp_path: Path) -> None:
    node = hm.HostMounts(hm.HostMountsConfig.model_validate({"fstab-path": str(tmp_path / "fstab")}))
    assert node.fstab(None) == tmp_path / "fstab"
    assert node.fstab(str(tmp_path / "fstab")) == tmp_path / "fstab"
    for other in ("/etc/passwd", str(tmp_path / "other"), str(tmp_path)):
        with pytest.raises(hm.HostMountInputError):
            node.fstab(other)
    with pytest.raises(hm.HostMountInputError):
        node.check_fs_type_allowed("ext4")
    node.check_fs_type_allowed("nfs")


async def test_a_disabled_node_does_nothing(tmp_path: Path) -> None:
    base = tmp_path / "mounts"
    node = hm.HostMounts(hm.HostMountsConfig.model_validate({"mount-base": str(base),
                                                             "fstab-path": str(tmp_path / "fstab")}))
    (tmp_path / "fstab").write_text("")
    mounted = await node.mount(hm.MountSpec("x", "t", "tmpfs"), edit_fstab=True)
    assert mounted["success"] is False and "disabled" in mounted["message"]
    assert (await node.umount("x", edit_fstab=True))["success"] is False
    assert (await node.list()) == {"success": False, "mounts": [], "entries": [], "message": hm.DISABLED}
    assert not base.exists() and (tmp_path / "fstab").read_text() == ""
    with pytest.raises(hm.HostMountInputError):  # input is checked first, enabled or not
        await node.mount(hm.MountSpec("x", "t", "ext4"))
    assert await node.read_fstab(None) == ""  # reading the configured fstab stays possible


def test_fstab_edits_add_and_remove_one_line_atomically(tmp_path: Path) -> None:
    fstab = tmp_path / "fstab"
    original = "# keep me\nUUID=1 / ext4 defaults 0 1\n/dev/sdb1 /srv/my\\040data xfs defaults 0 0"
    fstab.write_text(original)
    fstab.chmod(0o640)
    line = "srv:/x /base/data nfs nosuid,nodev 0 0"
    assert hm._edit_fstab(fstab, lambda text: hm._with_line(text, line, "/base/data")) is True
    assert fstab.read_text() == original + "\n" + line + "\n"
    assert stat.S_IMODE(os.stat(fstab).st_mode) == 0o640
    assert hm._edit_fstab(fstab, lambda text: hm._with_line(text, line, "/base/data")) is False  # once only
    assert hm._fstab_entry(fstab, "/srv/my data") == "/dev/sdb1 /srv/my\\040data xfs defaults 0 0"
    assert hm._edit_fstab(fstab, lambda text: hm._without(text, "/base/data")) is True
    assert fstab.read_text() == original + "\n"
    assert sorted(os.listdir(tmp_path)) == ["fstab"]  # no temporary file left
    assert hm._fstab_escape("/a b\\c") == "/a\\040b\\134c"


def test_a_missing_or_huge_fstab_is_a_failure(tmp_path: Path) -> None:
    with pytest.raises(hm.HostMountFailure) as missing:
        hm._read_fstab(tmp_path / "none")
    assert missing.value.missing
    (tmp_path / "big").write_bytes(b"#" * (hm.FSTAB_MAX_BYTES + 1))
    with pytest.raises(hm.HostMountFailure) as big:
        hm._read_fstab(tmp_path / "big")
    assert not big.value.missing
