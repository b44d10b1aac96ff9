"""A new kernel's home, prepared before it counts as started: its dotfiles, then its bootstrap
script (:func:`prepare_home`, the one call kernel creation makes).

The manager sends the merged list (domain, project, keypair; later wins) in
``KernelCreationConfig.dotfiles``. The agent never opens a container path itself: each file goes
through the runner's upload (``bai.kernel.files``), which writes as the kernel user inside
``/home/work``, walks every directory without following a symlink, writes a temporary file and
renames it into place (a symlink planted at the target is replaced, never followed) with the
dotfile's permission. Paths are checked again here (the manager's rules are not trusted blindly);
a dotfile that would land in a mounted folder (the user's persistent storage) is skipped, and one
the runner refuses (e.g. a symlink on the way) is logged and skipped: a dotfile never fails a
session.

The owner's keypair SSH keypair (``KernelCreationConfig.ssh_keypair``) is written first, the same
way: the public key into ``.ssh/authorized_keys`` and the private key into ``id_container`` (what
``backend.ai session ssh`` downloads to log in), both 0600, with ``.ssh`` made 0700 (the
intrinsic sshd refuses keys others could change). A dotfile ``.ssh/authorized_keys`` (the
manager refuses it; an older one may send it) is not lost: the keypair's key is appended to it,
as the original does; a dotfile ``id_container`` gives way to the keypair's key. Mounted folders
are skipped here too.

Neither key is ever part of the container's filesystem layer, so a session saved as an image
(``docker commit``, ``docker save``) never carries them to whoever can pull that image
(:func:`ssh_key_mounts`, applied when the container is created): ``~/.ssh`` is a small tmpfs of
the container's own (0700, the kernel user's, ``noexec``), where the runner writes
``authorized_keys`` (and dotfiles ``.ssh/...`` land) as before, and ``~/id_container`` is a
read-only bind of a host file the agent writes before the container exists (0600, the kernel
user's, in ``<ipc dir>/ssh``, a root-only 0700 directory removed with the kernel's IPC
directory). Docker never commits a mount's content; mounts live as long as the container, so an
agent that restarts and adopts the kernel keeps them.

The bootstrap script (the create request's, or else the keypair's stored one: the manager
decides) runs once, through ``/bin/sh -c`` in ``/home/work`` as the kernel user, as a batch run of
the user-code process, so nothing else runs before it ends. It is bounded by
:data:`BOOTSTRAP_TIMEOUT` (then interrupted); its exit code and the end of its output go to the
agent's log, and a failing script does not fail the session (the user can see what it left).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from bai.common.agent_rpc import AgentError, DotfileSpec, KernelCreationConfig
from bai.common.bootstrap_script import script_text

from .files import RunnerFiles
from .kernel import KernelRunner, RunnerUnavailable

log = logging.getLogger(__name__)

HOME = "/home/work"
#: Seconds a bootstrap script may run before it is interrupted (the session starts anyway).
BOOTSTRAP_TIMEOUT = 120.0
#: Characters of its output kept for the agent's log.
LOG_TAIL = 2000
#: Where the keypair's SSH keys go (home-relative); the files are 0600, ``.ssh`` 0700.
AUTHORIZED_KEYS = ".ssh/authorized_keys"
ID_CONTAINER = "id_container"
SSH_DIR = ".ssh"
#: The tmpfs ``~/.ssh`` is: room for keys, ``known_hosts`` and a config, bounded in bytes and
#: inodes (its pages count against the kernel's memory limit).
SSH_TMPFS_OPTIONS = "rw,nosuid,nodev,noexec,size=1m,nr_inodes=1024,mode=0700,uid={uid},gid={gid}"
#: The host directory (in the kernel's IPC directory, root's only) of the private key's file.
HOST_KEY_DIR = "ssh"


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
        if config.ssh_keypair is not None and path in (AUTHORIZED_KEYS, ID_CONTAINER):
            continue  # merged into (or replaced by) the keypair's keys: write_ssh_keys
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


def authorized_keys(config: KernelCreationConfig) -> str:
    """What ``.ssh/authorized_keys`` holds: a dotfile's lines, if one is sent, then the keypair's
    public key."""
    assert config.ssh_keypair is not None
    key = config.ssh_keypair.public_key.rstrip("\n") + "\n"
    for dotfile in config.dotfiles:
        if home_path(dotfile.path) == AUTHORIZED_KEYS and dotfile.data.strip():
            return dotfile.data.rstrip("\n") + "\n" + key
    return key


def _private_key(config: KernelCreationConfig) -> str:
    assert config.ssh_keypair is not None
    return config.ssh_keypair.private_key.rstrip("\n") + "\n"


def ssh_key_mounts(config: KernelCreationConfig, ipc_dir: Path, uid: int, gid: int) -> dict[str, Any]:
    """The create-container fragment (``HostConfig`` ``Tmpfs`` and ``Binds``) that keeps the
    keypair's keys out of the container's layer; writes the private key's host file first.
    Empty without a keypair. A folder mounted at ``~/.ssh`` or ``~/id_container`` takes its place
    (its keys are skipped, :func:`write_ssh_keys`)."""
    if config.ssh_keypair is None:
        return {}
    mounts = _mounted(config)
    host: dict[str, Any] = {}
    if not _in_mount(SSH_DIR, mounts):
        host["Tmpfs"] = {f"{HOME}/{SSH_DIR}": SSH_TMPFS_OPTIONS.format(uid=int(uid), gid=int(gid))}
    if not _in_mount(ID_CONTAINER, mounts):
        key_file = _write_host_key(ipc_dir / HOST_KEY_DIR, _private_key(config), uid, gid)
        host["Binds"] = [f"{key_file}:{HOME}/{ID_CONTAINER}:ro"]
    return {"HostConfig": host}


def _write_host_key(directory: Path, text: str, uid: int, gid: int) -> Path:
    """``<directory>/id_container``: 0600 and the kernel user's (who reads it through the bind),
    in a directory only root may enter (the container sees the IPC directory, not into this)."""
    directory.mkdir(mode=0o700)
    directory.chmod(0o700)  # whatever the umask
    path = directory / ID_CONTAINER
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, 0o600)
        data = text.encode("utf-8", "surrogatepass")
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)
    return path


async def write_ssh_keys(files: RunnerFiles, config: KernelCreationConfig, kernel_id: str, *,
                         id_container_bound: bool = False) -> list[str]:
    """Write the keypair's SSH keys into the kernel's home; the paths written.
    ``id_container_bound``: ``~/id_container`` is already there, bound by :func:`ssh_key_mounts`."""
    if config.ssh_keypair is None:
        return []
    mounts = _mounted(config)
    written: list[str] = []
    for path, text, dir_mode in (
            (AUTHORIZED_KEYS, authorized_keys(config), 0o700),
            (ID_CONTAINER, _private_key(config), None)):
        if path == ID_CONTAINER and id_container_bound:
            continue
        if _in_mount(path, mounts):
            log.warning("kernel %s: %s not written (inside a mounted folder)", kernel_id, path)
            continue
        try:
            await files.upload(path, _once(text.encode("utf-8", "surrogatepass")), mode=0o600, dir_mode=dir_mode)
        except AgentError as exc:  # e.g. a symlink on the way: no SSH login, the session still starts
            log.warning("kernel %s: %s not written: %s", kernel_id, path, exc)
            continue
        written.append(path)
    return written


async def prepare_home(runner: KernelRunner, config: KernelCreationConfig, kernel_id: str, *,
                       id_container_bound: bool = False) -> None:
    """The keypair's SSH keys, the dotfiles, then the bootstrap script."""
    await write_ssh_keys(runner.files, config, kernel_id, id_container_bound=id_container_bound)
    await write_dotfiles(runner.files, config, kernel_id)
    await run_bootstrap(runner, config, kernel_id)


async def run_bootstrap(runner: KernelRunner, config: KernelCreationConfig, kernel_id: str,
                        within: float = BOOTSTRAP_TIMEOUT) -> int | None:
    """Run the bootstrap script to its end; its exit code (None: none to run, or it did not end)."""
    script = script_text(config.bootstrap_script or "")
    if not script.strip():
        return None
    output: list[str] = []
    try:
        async with asyncio.timeout(within):
            result = await runner.execute(None, "batch", "", 5.0, {"exec": script})
            while True:
                output.extend(str(item[1]) for item in result.get("console") or ()
                              if isinstance(item, list) and len(item) == 2 and item[0] in ("stdout", "stderr"))
                del output[:-200]
                if result.get("status") == "finished":
                    break
                if result.get("status") == "waiting-input":  # nobody can answer it
                    raise TimeoutError
                result = await runner.execute(str(result["runId"]), "continue", "", 5.0)
    except (TimeoutError, RunnerUnavailable, AgentError) as exc:
        log.warning("kernel %s: the bootstrap script did not finish (%s); the session starts anyway",
                    kernel_id, type(exc).__name__)
        try:
            await runner.interrupt()
        except (OSError, RunnerUnavailable):
            pass
        return None
    code = result.get("exitCode")
    tail = "".join(output)[-LOG_TAIL:]
    if code == 0:
        log.info("kernel %s: the bootstrap script ended (exit code 0)", kernel_id)
    else:
        log.warning("kernel %s: the bootstrap script failed (exit code %s): %s", kernel_id, code, tail)
    return code if isinstance(code, int) else None
