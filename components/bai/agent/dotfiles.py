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

A kernel of a cluster session also gets the session's own keypair (``cluster_info.ssh_keypair``,
:class:`~bai.common.agent_rpc.CreateKernelsRequest.cluster_ssh_keypair`): its public key joins
``authorized_keys``, its private key is ``.ssh/id_cluster``, and ``.ssh/config`` makes ``ssh
sub1`` (any of the session's hostnames, ``BACKENDAI_CLUSTER_HOSTS``) use the intrinsic sshd's
port, that key, and no host-key question (the kernels' host keys are made at their start: there
is nothing to check them against). A dotfile ``.ssh/config`` is kept after the session's block,
which ends in ``Host *`` so that the dotfile's leading options still apply to every host.

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
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from bai.common.agent_rpc import AgentError, DotfileSpec, KernelCreationConfig, SSHKeypairSpec
from bai.common.bootstrap_script import script_text
from bai.common.service_ports import INTRINSIC_SERVICES

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
#: The cluster session's private key and the ssh client's config for its hostnames.
ID_CLUSTER = ".ssh/id_cluster"
SSH_CONFIG = ".ssh/config"
_HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$")


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


def _merged_paths(config: KernelCreationConfig, cluster: SSHKeypairSpec | None) -> tuple[str, ...]:
    """The dotfile paths :func:`write_ssh_keys` writes instead (merged or replaced)."""
    owner = (AUTHORIZED_KEYS, ID_CONTAINER) if config.ssh_keypair is not None else ()
    return owner + ((AUTHORIZED_KEYS, ID_CLUSTER, SSH_CONFIG) if cluster is not None else ())


async def write_dotfiles(files: RunnerFiles, config: KernelCreationConfig, kernel_id: str,
                         cluster: SSHKeypairSpec | None = None) -> list[str]:
    """Write ``config.dotfiles`` into the kernel's home; the paths written, in order."""
    if not config.dotfiles:
        return []
    mounts = _mounted(config)
    merged = _merged_paths(config, cluster)
    written: list[str] = []
    for dotfile in config.dotfiles:
        path = home_path(dotfile.path)
        if path in merged:
            continue  # merged into (or replaced by) the session's keys: write_ssh_keys
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


def _dotfile(config: KernelCreationConfig, path: str) -> str | None:
    """The text of the dotfile at ``path``, if one is sent and not blank."""
    return next((d.data.rstrip("\n") + "\n" for d in config.dotfiles
                 if home_path(d.path) == path and d.data.strip()), None)


def authorized_keys(config: KernelCreationConfig, cluster: SSHKeypairSpec | None = None) -> str:
    """What ``.ssh/authorized_keys`` holds: a dotfile's lines, if one is sent, then the keypair's
    public key, then the cluster session's."""
    pairs = [p for p in (config.ssh_keypair, cluster) if p is not None]
    assert pairs
    return (_dotfile(config, AUTHORIZED_KEYS) or "") + "".join(p.public_key.rstrip("\n") + "\n" for p in pairs)


def cluster_hosts(config: KernelCreationConfig) -> list[str]:
    """The session's hostnames (``BACKENDAI_CLUSTER_HOSTS``; this kernel's own at least), only
    those that are plain hostnames: they go into an ssh config."""
    named = (config.environ.get("BACKENDAI_CLUSTER_HOSTS") or "").split(",")
    hosts = dict.fromkeys(h.strip() for h in [*named, config.cluster_hostname])
    return [h for h in hosts if _HOSTNAME.fullmatch(h)]


def ssh_config(config: KernelCreationConfig) -> str:
    """``.ssh/config``: the session's hostnames through the intrinsic sshd with the cluster key,
    no host-key question (a kernel's host key is made at its start: nothing to check it
    against), and no ``User`` (the kernel user on both ends, whatever its uid is named); then
    a dotfile ``.ssh/config`` if one is sent, under ``Host *`` (ssh takes an option's first
    value: the session's block wins for its hosts)."""
    port = INTRINSIC_SERVICES["sshd"][1]
    block = (f"# this cluster session's kernels (bai)\nHost {' '.join(cluster_hosts(config))}\n"
             f"    Port {port}\n    IdentityFile {HOME}/{ID_CLUSTER}\n    IdentitiesOnly yes\n"
             "    StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n    LogLevel ERROR\n"
             "Host *\n")
    return block + (_dotfile(config, SSH_CONFIG) or "")


def _private_key(config: KernelCreationConfig) -> str:
    assert config.ssh_keypair is not None
    return config.ssh_keypair.private_key.rstrip("\n") + "\n"


def ssh_key_mounts(config: KernelCreationConfig, ipc_dir: Path, uid: int, gid: int,
                   cluster: SSHKeypairSpec | None = None) -> dict[str, Any]:
    """The create-container fragment (``HostConfig`` ``Tmpfs`` and ``Binds``) that keeps the
    keypair's (and the cluster session's) keys out of the container's layer; writes the private
    key's host file first. Empty without either keypair. A folder mounted at ``~/.ssh`` or
    ``~/id_container`` takes its place (its keys are skipped, :func:`write_ssh_keys`)."""
    if config.ssh_keypair is None and cluster is None:
        return {}
    mounts = _mounted(config)
    host: dict[str, Any] = {}
    if not _in_mount(SSH_DIR, mounts):
        host["Tmpfs"] = {f"{HOME}/{SSH_DIR}": SSH_TMPFS_OPTIONS.format(uid=int(uid), gid=int(gid))}
    if config.ssh_keypair is not None and not _in_mount(ID_CONTAINER, mounts):
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
                         id_container_bound: bool = False, cluster: SSHKeypairSpec | None = None) -> list[str]:
    """Write the keypair's and the cluster session's SSH keys (and the latter's ssh config) into
    the kernel's home; the paths written. ``id_container_bound``: ``~/id_container`` is already
    there, bound by :func:`ssh_key_mounts`."""
    if config.ssh_keypair is None and cluster is None:
        return []
    mounts = _mounted(config)
    written: list[str] = []
    entries: list[tuple[str, str, int | None]] = [(AUTHORIZED_KEYS, authorized_keys(config, cluster), 0o700)]
    if config.ssh_keypair is not None and not id_container_bound:
        entries.append((ID_CONTAINER, _private_key(config), None))
    if cluster is not None:
        entries += [(ID_CLUSTER, cluster.private_key.rstrip("\n") + "\n", 0o700),
                    (SSH_CONFIG, ssh_config(config), 0o700)]
    for path, text, dir_mode in entries:
        if _in_mount(path, mounts):  # never the cluster's private key into the user's storage
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
                       id_container_bound: bool = False, cluster: SSHKeypairSpec | None = None) -> None:
    """The keypair's (and cluster session's) SSH keys, the dotfiles, then the bootstrap script."""
    await write_ssh_keys(runner.files, config, kernel_id, id_container_bound=id_container_bound, cluster=cluster)
    await write_dotfiles(runner.files, config, kernel_id, cluster)
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
