"""Virtual folder mounts in the kernel creation config: how the agent binds them (ro read-only,
rw/wd writable), and what it refuses before Docker sees it (unclean or system paths, sources that
are missing, not directories or symlinks)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from bai.agent.docker import Confinement, check_mount_sources, container_config, host_ulimits
from bai.common.agent_rpc import KernelCreationConfig


def _config(mounts: list[dict[str, str]]) -> KernelCreationConfig:
    return KernelCreationConfig.model_validate({"image": {"canonical": "img:1"}, "mounts": mounts})


def _binds(config: KernelCreationConfig) -> list[str]:
    body = container_config(
        kernel_id="k1", session_id="s1", owner="i-a", config=config, slots={"cpu": Decimal(1)},
        image_labels={}, runner_dir=Path("/src/bai/kernel"), ipc_dir=Path("/var/lib/bai/ipc/k1"),
        ulimits=host_ulimits(), confinement=Confinement(uid=1000, gid=1000),
    )
    binds: list[str] = body["HostConfig"]["Binds"]
    return binds


def test_ro_folders_bind_read_only_and_rw_wd_writable() -> None:
    config = _config([
        {"host_path": "/vol/a/b", "kernel_path": "/home/work/data", "permission": "ro"},
        {"host_path": "/vol/c", "kernel_path": "/home/work/out", "permission": "rw"},
        {"host_path": "/vol/d", "kernel_path": "/data/d", "permission": "wd"},
    ])
    assert _binds(config) == [
        "/src/bai/kernel:/opt/bai/kernel/bai_kernel:ro", "/var/lib/bai/ipc/k1:/opt/bai/ipc:ro",
        "/vol/a/b:/home/work/data:ro", "/vol/c:/home/work/out:rw", "/vol/d:/data/d:rw",
    ]


def test_no_mounts_binds_only_the_runner() -> None:
    assert len(_binds(_config([]))) == 2


@pytest.mark.parametrize("mount", [
    {"host_path": "relative/x", "kernel_path": "/home/work/x"},
    {"host_path": "/vol/../etc", "kernel_path": "/home/work/x"},
    {"host_path": "/vol//x", "kernel_path": "/home/work/x"},
    {"host_path": "/vol/x", "kernel_path": "/home/work/../../etc"},
    {"host_path": "/vol/x", "kernel_path": "home/work/x"},
    {"host_path": "/vol/x", "kernel_path": "/opt/bai/ipc"},   # would hide the runner's socket
    {"host_path": "/vol/x", "kernel_path": "/opt"},           # covers it
    {"host_path": "/vol/x", "kernel_path": "/etc/cron.d"},
    {"host_path": "/vol/x", "kernel_path": "/"},
    {"host_path": "/vol/x", "kernel_path": "/home/work/x", "permission": "rwx"},
    {"host_path": "/vol/x:/etc", "kernel_path": "/home/work/x"},
])
def test_unsafe_mounts_are_refused(mount: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        _config([mount])


def test_mount_sources_must_be_real_directories(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    check_mount_sources(_config([{"host_path": str(folder), "kernel_path": "/home/work/f"}]))
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(folder)
    for bad in ("missing", "file", "link"):
        with pytest.raises(ValueError, match="not a real directory"):
            check_mount_sources(_config([{"host_path": str(tmp_path / bad), "kernel_path": "/home/work/f"}]))
    assert not (tmp_path / "missing").exists()
