"""Host mounts: filesystems a superadmin mounts on a node (the manager's own, or an agent's)
through ``/folders/_/mounts`` (the original's ``admin vfolder mount-host|umount-host|list-mounts|
get-fstab-contents``). One module for both daemons: the manager runs it for its own node and each
agent for its node (RPC ``host_mounts``, ``mount_host``, ``umount_host``, ``read_fstab``).

Safer than the original, which ran ``sudo mount`` with whatever it was given:

* every mount lands at ``<mount-base>/<name>``, ``name`` being one plain path segment, and the
  base must be a root-owned directory nobody else may write (no symlink race under it);
* ``fs_type`` must be in the node's ``fs-types`` allow-list; ``fs_location`` and ``options`` are
  refused unless they are plain tokens (no whitespace, no NUL, no leading ``-``, options are
  ``key[=value]`` items without ``bind``/``remount``/``suid``/... ); ``nosuid,nodev`` are always
  added;
* ``mount``/``umount`` run from an argv list (no shell) with a deadline, their output bounded;
* the only fstab a node reads or edits is its configured ``fstab-path``; an edit appends or
  removes one line and replaces the file atomically;
* a failed step undoes the earlier ones (a mount whose fstab line cannot be written is unmounted,
  a directory made for a failed mount is removed).

Mounting is idempotent (the same source and type already there: success) and so is unmounting
(nothing there: success), so a manager and an agent sharing one host and one base agree.
Nothing here runs unless ``[host-mounts] enabled = true``; reading the fstab is always allowed.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import stat
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from bai.common.config import Section

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
FS_TYPE_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,31}$"
#: ``server:/export``, ``//server/share``, ``[fe80::1]:/x``, a tmpfs label: no whitespace (fstab
#: separates fields with it), no comma, no leading ``-`` (it would read as a mount(8) option).
FS_LOCATION_PATTERN = r"^[A-Za-z0-9_./:@+=%~\[\]][A-Za-z0-9_./:@+=%~\[\]-]{0,1023}$"
_OPTION = r"[A-Za-z0-9_.-]+(=[A-Za-z0-9_./:@+%~-]*)?"
OPTIONS_PATTERN = rf"^{_OPTION}(,{_OPTION}){{0,63}}$"
OPTIONS_MAX_LENGTH = 1024
#: Options that would mount something else than a new filesystem at the target (bind, move,
#: remount, loop devices, propagation), let a user mount it (fstab), or undo the forced ones.
DENIED_OPTIONS = frozenset({"bind", "rbind", "remount", "move", "loop", "suid", "dev", "user", "users", "owner",
                            "group", "helper"})
DENIED_OPTION_PREFIXES = ("make-", "x-mount.")
FORCED_OPTIONS = ("nosuid", "nodev")
FSTAB_MAX_BYTES = 2**20
_MOUNTINFO_MAX_BYTES = 16 * 2**20
_OUTPUT_KEPT = 4096
DISABLED = "host mounts are disabled on this node ([host-mounts] enabled = false)"


class HostMountsConfig(Section):
    """``[host-mounts]`` in manager.toml and agent.toml."""

    #: Off by default: mounting filesystems from an API is an operator's explicit choice.
    enabled: bool = False
    #: Every host mount of this node is ``<mount-base>/<name>`` (root-owned, not group/other-writable).
    mount_base: Path = Field(Path("/var/lib/bai/mounts"), alias="mount-base")
    #: The one fstab this node reads (``GET /folders/_/fstab``) and edits (``edit_fstab``).
    fstab_path: Path = Field(Path("/etc/fstab"), alias="fstab-path")
    #: Filesystem types ``fs_type`` may name.
    fs_types: frozenset[str] = Field(frozenset({"nfs", "nfs4", "cifs", "tmpfs"}), alias="fs-types")
    #: Seconds a ``mount``/``umount`` may run before it is killed (the agent RPC waits longer).
    command_timeout: float = Field(20.0, alias="command-timeout", gt=0, le=40)

    @field_validator("mount_base", "fstab_path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute() or value == Path("/"):
            raise ValueError(f"must be an absolute path other than /: {value}")
        return Path(os.path.normpath(value))

    @field_validator("fs_types")
    @classmethod
    def _types(cls, value: frozenset[str]) -> frozenset[str]:
        for fs_type in value:
            check_fs_type(fs_type)
        return value


class HostMountInputError(ValueError):
    """The request is malformed, or this node's configuration refuses it (nothing was done)."""


class HostMountFailure(RuntimeError):
    """The node could not do what was asked (``missing``: the fstab file does not exist)."""

    def __init__(self, msg: str, *, missing: bool = False) -> None:
        super().__init__(msg)
        self.missing = missing


# --- input checks (the manager's API models and the agent's RPC models use these) ---------------


def check_name(value: str) -> str:
    if not re.fullmatch(NAME_PATTERN, value) or value in (".", ".."):
        raise ValueError("name must be one path segment of letters, digits, '_', '.', '-' (at most 64, "
                         "not starting with '.' or '-')")
    return value


def check_fs_type(value: str) -> str:
    if not re.fullmatch(FS_TYPE_PATTERN, value):
        raise ValueError(f"not a filesystem type: {value!r}")
    return value


def check_fs_location(value: str) -> str:
    if not re.fullmatch(FS_LOCATION_PATTERN, value):
        raise ValueError("fs_location must be 1-1024 characters without whitespace, commas, quotes or "
                         "control characters, not starting with '-'")
    return value


def check_options(value: str) -> str:
    if len(value) > OPTIONS_MAX_LENGTH or not re.fullmatch(OPTIONS_PATTERN, value):
        raise ValueError("options must be comma-separated key or key=value items (letters, digits and "
                         "_.-/:@+%~ only)")
    for item in value.split(","):
        key = item.split("=", 1)[0].lower()
        if key in DENIED_OPTIONS or key.startswith(DENIED_OPTION_PREFIXES):
            raise ValueError(f"the mount option {key!r} is not allowed")
    return value


def check_fstab_path(value: str) -> str:
    if (not value.startswith("/") or len(value) > 4096 or "\x00" in value
            or any(seg in (".", "..") for seg in value.split("/"))):
        raise ValueError("fstab_path must be a clean absolute path")
    return value


@dataclass(frozen=True)
class MountSpec:
    name: str
    fs_location: str
    fs_type: str = "nfs"
    options: str | None = None

    def mount_options(self) -> str:
        given = [o for o in (self.options or "").split(",") if o and o not in FORCED_OPTIONS]
        return ",".join([*given, *FORCED_OPTIONS])


@dataclass(frozen=True)
class Mounted:
    path: str
    fs_type: str
    source: str
    options: str

    def as_json(self) -> dict[str, str]:
        return {"name": os.path.basename(self.path), "path": self.path, "fs_type": self.fs_type,
                "source": self.source, "options": self.options}


# --- the node's operations ----------------------------------------------------------------------

#: One lock per event loop and mount base: mounts and fstab edits of a node happen one at a time.
_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = weakref.WeakKeyDictionary()


def _lock(base: Path) -> asyncio.Lock:
    per_loop = _LOCKS.setdefault(asyncio.get_running_loop(), {})
    return per_loop.setdefault(str(base), asyncio.Lock())


class HostMounts:
    """The host mounts of the node this process runs on, as its ``[host-mounts]`` section allows."""

    def __init__(self, config: HostMountsConfig) -> None:
        self.config = config

    # checks that need the node's configuration; the manager runs them before touching any node
    def check_fs_type_allowed(self, fs_type: str) -> None:
        if fs_type not in self.config.fs_types:
            raise HostMountInputError(f"the filesystem type {fs_type!r} is not allowed here "
                                      f"(allowed: {', '.join(sorted(self.config.fs_types))})")

    def fstab(self, fstab_path: str | None) -> Path:
        """The configured fstab; naming any other file is refused."""
        configured = self.config.fstab_path
        if fstab_path is not None and os.path.normpath(fstab_path) != str(configured):
            raise HostMountInputError(f"fstab_path must be {configured} on this node")
        return configured

    def check_mount(self, spec: MountSpec, fstab_path: str | None) -> None:
        self.check_fs_type_allowed(spec.fs_type)
        self.fstab(fstab_path)

    async def list(self) -> dict[str, Any]:
        if not self.config.enabled:
            return {"success": False, "mounts": [], "entries": [], "message": DISABLED}
        base = _real(self.config.mount_base)
        found = sorted((await asyncio.to_thread(_mounts_under, base)).values(), key=lambda m: m.path)
        return {"success": True, "mounts": [m.path for m in found], "entries": [m.as_json() for m in found],
                "message": ""}

    async def read_fstab(self, fstab_path: str | None) -> str:
        path = self.fstab(fstab_path)
        return await asyncio.to_thread(_read_fstab, path)

    async def mount(self, spec: MountSpec, *, fstab_path: str | None = None, edit_fstab: bool = False) -> dict[str, Any]:
        self.check_mount(spec, fstab_path)
        if not self.config.enabled:
            return _result(False, DISABLED)
        base = _real(self.config.mount_base)
        target = base / spec.name
        fstab = _real(self.config.fstab_path)
        line = f"{spec.fs_location} {_fstab_escape(str(target))} {spec.fs_type} {spec.mount_options()} 0 0"
        async with _lock(base):
            try:
                await asyncio.to_thread(_prepare_base, base)
                present = (await asyncio.to_thread(_mounts_under, base)).get(str(target))
                if edit_fstab:
                    entry = await asyncio.to_thread(_fstab_entry, fstab, str(target))
                    if entry is not None and entry.split() != line.split():
                        return _result(False, f"{fstab} already has another entry for {target}: {entry}", target)
                if present is not None:
                    if (present.fs_type, present.source) != (spec.fs_type, spec.fs_location):
                        return _result(False, f"{present.source} ({present.fs_type}) is mounted at {target}", target)
                    if edit_fstab:
                        await asyncio.to_thread(_edit_fstab, fstab, lambda text: _with_line(text, line, str(target)))
                    return _result(True, f"already mounted at {target}", target)
                argv = [_tool("mount"), "-t", spec.fs_type, "-o", spec.mount_options(), "--", spec.fs_location,
                        str(target)]
                created = await asyncio.to_thread(_make_mountpoint, target)
                try:
                    rc, output = await _run(argv, self.config.command_timeout)
                except OSError as exc:
                    rc, output = 1, str(exc)
                if rc != 0:
                    if created:
                        await asyncio.to_thread(_remove_dir, target)
                    return _result(False, f"mount failed ({_status(rc)}): {output}".rstrip(": "), target)
                if edit_fstab:
                    try:
                        await asyncio.to_thread(_edit_fstab, fstab, lambda text: _with_line(text, line, str(target)))
                    except (OSError, HostMountFailure) as exc:
                        # no half-done mount: what cannot be made permanent is undone
                        await _run([_tool("umount"), "--", str(target)], self.config.command_timeout)
                        if created:
                            await asyncio.to_thread(_remove_dir, target)
                        return _result(False, f"could not edit {fstab} ({exc}); the mount was undone", target)
            except (OSError, HostMountFailure) as exc:
                return _result(False, str(exc), target)
        return _result(True, f"mounted {spec.fs_location} ({spec.fs_type}) at {target}"
                       + (f" and added it to {fstab}" if edit_fstab else ""), target)

    async def umount(self, name: str, *, fstab_path: str | None = None, edit_fstab: bool = False) -> dict[str, Any]:
        self.fstab(fstab_path)
        if not self.config.enabled:
            return _result(False, DISABLED)
        base = _real(self.config.mount_base)
        target = base / name
        fstab = _real(self.config.fstab_path)
        async with _lock(base):
            try:
                present = (await asyncio.to_thread(_mounts_under, base)).get(str(target))
                if present is not None:
                    rc, output = await _run([_tool("umount"), "--", str(target)], self.config.command_timeout)
                    if rc != 0:
                        return _result(False, f"umount failed ({_status(rc)}): {output}".rstrip(": "), target)
                if await asyncio.to_thread(os.path.isdir, target) and not await asyncio.to_thread(os.path.islink, target):
                    await asyncio.to_thread(_remove_dir, target)
                removed = False
                if edit_fstab:
                    removed = await asyncio.to_thread(_edit_fstab, fstab, lambda text: _without(text, str(target)))
            except (OSError, HostMountFailure) as exc:
                return _result(False, str(exc), target)
        if present is None and not removed:
            return _result(True, f"nothing is mounted at {target}", target)
        done = [f"unmounted {target}"] if present is not None else []
        if removed:
            done.append(f"removed its line from {fstab}")
        return _result(True, " and ".join(done), target)


def _result(success: bool, message: str, target: Path | None = None) -> dict[str, Any]:
    return {"success": success, "message": message, "path": str(target) if target is not None else ""}


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _status(rc: int) -> str:
    return "timed out" if rc == _TIMED_OUT else f"exit status {rc}"


def _tool(name: str) -> str:
    found = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise HostMountFailure(f"{name} is not installed on this node")
    return found


_TIMED_OUT = -1000


async def _run(argv: list[str], deadline: float) -> tuple[int, str]:
    """Run ``argv`` (no shell, a minimal environment); its exit status and the start of its
    output. Past ``deadline`` seconds it is killed and the status is ``_TIMED_OUT``."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})
    kept = bytearray()
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(deadline):
            while chunk := await proc.stdout.read(65536):
                if len(kept) < _OUTPUT_KEPT:  # read to the end, keep only the start
                    kept += chunk[: _OUTPUT_KEPT - len(kept)]
            rc = await proc.wait()
    except TimeoutError:
        proc.kill()
        try:
            async with asyncio.timeout(5):  # a process stuck in the kernel may not even die
                await proc.wait()
        except TimeoutError:
            pass
        rc = _TIMED_OUT
    return rc, kept.decode(errors="replace").strip()


def _prepare_base(base: Path) -> None:
    base.mkdir(mode=0o755, parents=True, exist_ok=True)
    st = os.lstat(base)
    if not stat.S_ISDIR(st.st_mode):
        raise HostMountFailure(f"the mount base {base} is not a directory")
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise HostMountFailure(f"the mount base {base} must be owned by this service's user and not writable "
                               "by group or others")


def _make_mountpoint(target: Path) -> bool:
    """Whether the directory was made now (so a failed mount removes it again)."""
    try:
        target.mkdir(mode=0o755)
        return True
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(target).st_mode):
            raise HostMountFailure(f"{target} exists and is not a directory") from None
        return False


def _remove_dir(target: Path) -> None:
    try:
        target.rmdir()
    except OSError:
        pass  # not empty (something else lives there): leave it


def _unescape(field: str) -> str:
    """fstab and mountinfo write space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _fstab_escape(path: str) -> str:
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)


def _mounts_under(base: Path) -> dict[str, Mounted]:
    """Mounts whose mount point is directly in ``base`` (the last one where mounts are stacked)."""
    with open("/proc/self/mountinfo", "rb") as f:
        text = f.read(_MOUNTINFO_MAX_BYTES).decode(errors="replace")
    found: dict[str, Mounted] = {}
    for line in text.splitlines():
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        if len(fields) < sep + 4:
            continue
        mount_point = _unescape(fields[4])
        if os.path.dirname(mount_point) != str(base):
            continue
        found[mount_point] = Mounted(mount_point, fields[sep + 1], _unescape(fields[sep + 2]),
                                     fields[5] + "," + fields[sep + 3])
    return found


def _read_fstab(path: Path, errors: str = "replace") -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(FSTAB_MAX_BYTES + 1)
    except FileNotFoundError:
        raise HostMountFailure(f"{path} does not exist", missing=True) from None
    except OSError as exc:
        raise HostMountFailure(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > FSTAB_MAX_BYTES:
        raise HostMountFailure(f"{path} is larger than {FSTAB_MAX_BYTES} bytes")
    return data.decode(errors=errors)  # "surrogateescape" when the text is written back


def _entry_target(line: str) -> str | None:
    fields = line.split()
    if len(fields) < 2 or fields[0].startswith("#"):
        return None
    return _unescape(fields[1])


def _fstab_entry(path: Path, target: str) -> str | None:
    for line in _read_fstab(path).splitlines():
        if _entry_target(line) == target:
            return line
    return None


def _with_line(text: str, line: str, target: str) -> str:
    if any(_entry_target(existing) == target for existing in text.splitlines()):
        return text
    return text + ("" if not text or text.endswith("\n") else "\n") + line + "\n"


def _without(text: str, target: str) -> str:
    kept = [line for line in text.splitlines(keepends=True) if _entry_target(line) != target]
    return "".join(kept)


def _edit_fstab(path: Path, change: Callable[[str], str]) -> bool:
    """Replace ``path`` atomically with ``change(text)`` (same owner and mode); whether it changed."""
    text = _read_fstab(path, "surrogateescape")
    new = change(text)
    if new == text:
        return False
    st = os.stat(path)
    tmp = path.with_name(f".{path.name}.bai-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, stat.S_IMODE(st.st_mode))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(new)
            f.flush()
            os.fchown(f.fileno(), st.st_uid, st.st_gid)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True
