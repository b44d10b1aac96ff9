"""Changing one value of the agent's own agent.toml while it runs (``update_scaling_group``).

The file is rewritten with tomlkit, which keeps everything it was not asked to change byte for
byte (comments, other keys, their order and spelling), so a value set back to what bai-install
rendered gives back exactly the file it rendered (the role then sees nothing to do). The new
text must still be a valid agent.toml, and it replaces the old one atomically: written to a
temporary file in the same directory with the old file's mode and owner, flushed to disk, then
renamed over it. Any failure leaves the old file as it was and raises :class:`ConfigFileError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import tempfile
import tomllib
import weakref
from pathlib import Path
from typing import Any, Protocol

import tomlkit
from pydantic import ValidationError
from tomlkit.exceptions import TOMLKitError

from bai.common.agent_rpc import AgentFailure, UpdateScalingGroupRequest

from .config import AgentConfig

log = logging.getLogger(__name__)

#: The largest agent.toml this rewrites (the installer's is ~1 KiB).
MAX_CONFIG_SIZE = 1 << 20


class ConfigFileError(Exception):
    """The file could not be read, changed or replaced; it is as it was."""


def with_value(text: str, table: str, key: str, value: str) -> str:
    """``text`` (a TOML document) with ``[table] key = value``, everything else kept as written.
    A missing table is appended; a key given as a dotted key (``agent.scaling-group = ...``) or
    in an inline table is changed where it is."""
    try:
        doc = tomlkit.parse(text)
    except TOMLKitError as exc:
        raise ConfigFileError(f"not valid TOML: {exc}") from exc
    section = doc.get(table)
    if section is None:
        new = tomlkit.table()
        new.add(key, value)
        doc.add(table, new)
    elif isinstance(section, dict):
        if section.get(key) == value:
            return text
        section[key] = value
    else:
        raise ConfigFileError(f"[{table}] is not a table")
    return tomlkit.dumps(doc)


def set_agent_value(path: Path, key: str, value: str) -> bool:
    """Set ``[agent] key = value`` in the agent.toml at ``path`` (a symlink: its target).
    Returns whether the file changed (False: it already said so). Blocking: run it in a thread."""
    path = path.resolve()
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigFileError(f"{path} is not a regular file")
        if info.st_size > MAX_CONFIG_SIZE:
            raise ConfigFileError(f"{path} is larger than {MAX_CONFIG_SIZE} bytes")
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"cannot read {path}: {exc}") from exc
    new = with_value(text, "agent", key, value)
    if new == text:
        return False
    _check_valid(path, new)
    _replace(path, new, info)
    return True


def _check_valid(path: Path, text: str) -> None:
    # What the agent's next start will read: never leave it a file it would refuse.
    try:
        AgentConfig.model_validate(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigFileError(f"{path} would not be a valid agent.toml: {exc}") from exc


def _replace(path: Path, text: str, info: os.stat_result) -> None:
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigFileError(f"cannot write in {path.parent}: {exc}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w") as out:
            # Mode and owner first: the new file is never readable by more than the old one.
            os.fchmod(out.fileno(), stat.S_IMODE(info.st_mode))
            if (info.st_uid, info.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(out.fileno(), info.st_uid, info.st_gid)
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ConfigFileError(f"cannot replace {path}: {exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    # The rename itself survives a crash only once the directory is on disk too.
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class _Configured(Protocol):
    config: AgentConfig


#: One change of the file at a time (two moves at once: the last one wins, in memory and on disk);
#: a lock per event loop, as a lock is bound to the loop it first waited in.
_CHANGING: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


async def update_scaling_group(agent: _Configured, req: UpdateScalingGroupRequest) -> dict[str, Any]:
    """The RPC: keep the new group in the agent.toml first, then switch the running config (the
    next heartbeat carries it); when the file cannot be written, nothing changes."""
    async with _CHANGING.setdefault(asyncio.get_running_loop(), asyncio.Lock()):
        config = agent.config
        previous = config.agent.scaling_group
        path = config.source_path
        if path is None:
            raise AgentFailure("this agent's configuration was not read from a file, so it cannot keep "
                               "another resource group", title="Cannot keep the resource group")
        try:
            changed = await asyncio.to_thread(set_agent_value, path, "scaling-group", req.scaling_group)
        except ConfigFileError as exc:
            raise AgentFailure(str(exc), title="Cannot keep the resource group") from exc
        agent.config = config.model_copy(update={
            "agent": config.agent.model_copy(update={"scaling_group": req.scaling_group})})
    if previous != req.scaling_group:
        log.info("moved from resource group %r to %r (kept in %s)", previous, req.scaling_group, path)
    return {"scaling_group": req.scaling_group, "previous": previous, "config_changed": changed}
