"""Dotfiles into a new kernel's home directory, before it counts as started.

The manager sends the merged list (domain, project, keypair; later wins) in
``KernelCreationConfig.dotfiles``. The agent never opens a container path itself: each file goes
through the runner's upload (``bai.kernel.files``), which writes as the kernel user inside
``/home/work``, walks every directory without following a symlink, writes a temporary file and
renames it into place (a symlink planted at the target is replaced, never followed) with the
dotfile's permission. Paths are checked again here (the manager's rules are not trusted blindly);
a dotfile that would land in a mounted folder (the user's persistent storage) is skipped, and one
the runner refuses (e.g. a symlink on the way) is logged and skipped: a dotfile never fails a
session.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

from bai.common.agent_rpc import AgentError, DotfileSpec, KernelCreationConfig

from .files import RunnerFiles

log = logging.getLogger(__name__)

HOME = "/home/work"


def home_path(path: str) -> str | None:
    """``path`` relative to the home directory and normalised, or None when it may not be written:
    absolute, leaving the home (``..``), or naming nothing."""
    if not path or path.startswith(("/", "~")) or "\x00" in path:
        return None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _mounted(config: KernelCreationConfig) -> list[str]:
    """Home-relative paths of the folders mounted inside the home."""
    prefix = HOME + "/"
    return [m.kernel_path[len(prefix):].strip("/") for m in config.mounts if m.kernel_path.startswith(prefix)]


def _in_mount(path: str, mounts: Sequence[str]) -> bool:
    return any(path == m or path.startswith(m + "/") for m in mounts)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def write_dotfiles(files: RunnerFiles, config: KernelCreationConfig, kernel_id: str) -> list[str]:
    """Write ``config.dotfiles`` into the kernel's home; the paths written, in order."""
    if not config.dotfiles:
        return []
    mounts = _mounted(config)
    written: list[str] = []
    for dotfile in config.dotfiles:
        path = home_path(dotfile.path)
        if path is None or _in_mount(path, mounts):
            log.warning("kernel %s: dotfile %r skipped (outside the home or inside a mounted folder)",
                        kernel_id, dotfile.path)
            continue
        try:
            await files.upload(path, _once(dotfile.data.encode("utf-8", "surrogatepass")), mode=_mode(dotfile))
        except AgentError as exc:
            log.warning("kernel %s: dotfile %r not written: %s", kernel_id, path, exc)
            continue
        written.append(path)
    return written


def _mode(dotfile: DotfileSpec) -> int:
    return int(dotfile.perm, 8)
