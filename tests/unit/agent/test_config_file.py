"""bai.agent.config_file: one key of agent.toml rewritten in place (comments, other keys, mode and
owner kept; atomic), and the update_scaling_group RPC's all-or-nothing switch."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from bai.agent import config as config_mod
from bai.agent.config import AgentConfig
from bai.agent.config_file import ConfigFileError, set_agent_value, update_scaling_group, with_value
from bai.common.agent_rpc import AgentFailure, UpdateScalingGroupRequest
from roles.agent import agent_config
from roles.bai import toml_text
from roles.settings import Settings

HAND_WRITTEN = textwrap.dedent('''\
    # written by hand: keep this
    [etcd]
    namespace = "local"   # the node's
    addr = "127.0.0.1:2379"

    [agent]
    id = "i-hand"
    # where sessions of the gpu group go
    scaling-group = "default"  # moved by the manager
    'rpc-listen-addr' = "127.0.0.1:6001"

    [dummy]
    slots = {cpu = 8, mem = "16g"}
    ''')


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_only_the_value_changes() -> None:
    new = with_value(HAND_WRITTEN, "agent", "scaling-group", "gpu")
    assert new == HAND_WRITTEN.replace('scaling-group = "default"', 'scaling-group = "gpu"')
    assert with_value(new, "agent", "scaling-group", "gpu") == new  # already so: the same text


@pytest.mark.parametrize(("text", "expected"), [
    # a dotted key and an inline table are changed where they are
    ('agent.scaling-group = "a"  # here\nagent.id = "x"\n', 'agent.scaling-group = "b"  # here\nagent.id = "x"\n'),
    ('agent = {scaling-group = "a", id = "x"}\n', 'agent = {scaling-group = "b", id = "x"}\n'),
    # no key yet: added to the table; no table yet: appended
    ('[agent]\nid = "x" # keep\n\n[etcd]\n', '[agent]\nid = "x" # keep\nscaling-group = "b"\n\n[etcd]\n'),
    ('# top\n[etcd]\naddr = "1"\n', '# top\n[etcd]\naddr = "1"\n\n[agent]\nscaling-group = "b"\n'),
])
def test_other_spellings(text: str, expected: str) -> None:
    assert with_value(text, "agent", "scaling-group", "b") == expected


def test_not_toml_or_not_a_table() -> None:
    with pytest.raises(ConfigFileError, match="not valid TOML"):
        with_value("[agent\n", "agent", "scaling-group", "b")
    with pytest.raises(ConfigFileError, match=r"\[agent\] is not a table"):
        with_value('agent = "x"\n', "agent", "scaling-group", "b")


@pytest.mark.parametrize("group", ["gpu", "그룹 A", 'q"uo\\te', "default"])
def test_the_installers_file_comes_back_byte_for_byte(group: str) -> None:
    """bai-install's agent role puts agent.toml with files.put (compared by checksum): a file the
    agent rewrote must read exactly as the role renders it for the same value, so a value equal to
    the inventory's makes the role see nothing to do (and a later run restores the inventory's)."""
    settings = Settings()
    accel = {"agent": {"allow-compute-plugins": ["cuda"]}, "plugins": {"cuda": {"visible-devices": [0, 1]}}}
    rendered = toml_text(agent_config(settings, accel))
    moved_config = agent_config(settings, accel)
    moved_config["agent"] = {**moved_config["agent"], "scaling-group": group}
    moved = with_value(rendered, "agent", "scaling-group", group)
    assert moved == toml_text(moved_config)
    assert with_value(moved, "agent", "scaling-group", settings.agent.scaling_group) == rendered


def test_file_rewritten_atomically_keeping_mode_and_owner(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(HAND_WRITTEN)
    path.chmod(0o640)
    if os.geteuid() == 0:
        os.chown(path, 1000, 1000)  # someone else's file, as root may write it
    before = path.stat()
    assert set_agent_value(path, "scaling-group", "gpu") is True
    after = path.stat()
    assert path.read_text() == HAND_WRITTEN.replace('"default"', '"gpu"')
    assert stat.S_IMODE(after.st_mode) == 0o640 and (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    assert after.st_ino != before.st_ino  # a new file renamed over the old one, not rewritten in place
    assert _files(tmp_path) == ["agent.toml"]  # no temporary file left
    # the same value again: nothing written at all
    assert set_agent_value(path, "scaling-group", "gpu") is False
    assert path.stat().st_ino == after.st_ino


def test_through_a_symlink_the_target_changes(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "agent.toml"
    target.write_text(HAND_WRITTEN)
    link = tmp_path / "agent.toml"
    link.symlink_to(target)
    assert set_agent_value(link, "scaling-group", "gpu") is True
    assert link.is_symlink() and 'scaling-group = "gpu"' in target.read_text()


def test_a_file_the_agent_would_refuse_is_not_written(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[agent]\nscaling-group = "default"\nno-such-key = 1\n')
    with pytest.raises(ConfigFileError, match="would not be a valid agent.toml"):
        set_agent_value(path, "scaling-group", "gpu")
    assert 'scaling-group = "default"' in path.read_text() and _files(tmp_path) == ["agent.toml"]


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    """The disk refuses the new file (here: a file size limit, EFBIG, in a child process): the old
    file is untouched and no temporary file is left."""
    path = tmp_path / "agent.toml"
    path.write_text(HAND_WRITTEN)
    code = textwrap.dedent(f'''\
        import resource, signal, sys
        from pathlib import Path
        from bai.agent.config_file import ConfigFileError, set_agent_value
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16, 16))
        try:
            set_agent_value(Path({str(path)!r}), "scaling-group", "gpu")
        except ConfigFileError as exc:
            print("refused:", exc)
            sys.exit(3)
        ''')
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 3 and "cannot replace" in done.stdout, (done.stdout, done.stderr)
    assert path.read_text() == HAND_WRITTEN and _files(tmp_path) == ["agent.toml"]


@dataclass
class _Holder:
    """What update_scaling_group needs of an agent: its running config."""

    config: AgentConfig


async def test_rpc_switches_only_once_the_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(HAND_WRITTEN)
    agent = _Holder(config_mod.load(path))
    assert agent.config.source_path == path.absolute()
    reply = await update_scaling_group(agent, UpdateScalingGroupRequest(scaling_group="gpu"))
    assert reply == {"scaling_group": "gpu", "previous": "default", "config_changed": True}
    assert agent.config.agent.scaling_group == "gpu" and agent.config.agent.id == "i-hand"
    assert config_mod.load(path).agent.scaling_group == "gpu"  # what a restart reads
    assert agent.config.source_path == path.absolute()  # a later move still knows the file

    # the file cannot be written (here: it became a directory): the RPC fails, nothing switched
    path.unlink()
    path.mkdir()
    with pytest.raises(AgentFailure, match="not a regular file"):
        await update_scaling_group(agent, UpdateScalingGroupRequest(scaling_group="cpu"))
    assert agent.config.agent.scaling_group == "gpu"

    # a config built in code (no file) cannot keep a group: refused, nothing switched
    in_code = _Holder(AgentConfig.model_validate({"agent": {"id": "i-x"}}))
    with pytest.raises(AgentFailure, match="not read from a file"):
        await update_scaling_group(in_code, UpdateScalingGroupRequest(scaling_group="gpu"))
    assert in_code.config.agent.scaling_group == "default"


async def test_moves_at_once_leave_memory_and_file_agreeing(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(HAND_WRITTEN)
    agent = _Holder(config_mod.load(path))
    await asyncio.gather(*(update_scaling_group(agent, UpdateScalingGroupRequest(scaling_group=f"g{i}"))
                           for i in range(5)))
    assert agent.config.agent.scaling_group == config_mod.load(path).agent.scaling_group
    assert _files(tmp_path) == ["agent.toml"]


@pytest.mark.parametrize("name", ["", " gpu", "gpu ", "g\npu", "x" * 65])
def test_names_the_manager_would_refuse_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="scaling_group"):
        UpdateScalingGroupRequest(scaling_group=name)
