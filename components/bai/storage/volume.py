"""One volume on a plain filesystem: folders, quota scopes and the file operations on them.

Blocking filesystem work runs in threads; every caller-named path is parsed by
:mod:`bai.storage.paths` first and confined to its folder when used.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from . import quota
from .config import VolumeConfig
from .errors import (
    Conflict,
    ExecutionError,
    FileNotFound,
    InvalidParams,
    InvalidPath,
    VFolderNotFound,
    VolumeNotFound,
)
from .paths import UPLOAD_DIR, check_name, confined, open_dir
from .vfid import QuotaScopeID, VFolderID

#: Folder metadata lives outside the folders, so users never see or overwrite it.
METADATA_DIR = ".bai-metadata"
MAX_METADATA_BYTES = 64 * 1024
CAPABILITIES = ["vfolder", "quota"]
LIMIT_CACHE_TTL = 5.0


@dataclass(frozen=True)
class DirEntry:
    name: str
    type: str  # FILE | DIRECTORY | SYMLINK
    mode: int
    size: int
    created: datetime
    modified: datetime
    symlink_target: str | None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type,
                "stat": {"mode": self.mode, "size": self.size, "created": self.created.isoformat(),
                         "modified": self.modified.isoformat()},
                "symlink_target": self.symlink_target}


def _entry(path: Path) -> DirEntry:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        kind, target = "SYMLINK", os.readlink(path)
    else:
        kind, target = ("DIRECTORY" if stat.S_ISDIR(st.st_mode) else "FILE"), None
    return DirEntry(path.name, kind, st.st_mode, st.st_size, datetime.fromtimestamp(st.st_ctime, UTC),
                    datetime.fromtimestamp(st.st_mtime, UTC), target)


class Volume:
    def __init__(self, name: str, config: VolumeConfig, usage_cache_ttl: float,
                 owner: tuple[int, int] | None = None) -> None:
        self.name = name
        #: Who owns folders and what the proxy writes in them (None: the proxy's own uid).
        self.owner = owner
        self.config = config
        self.root = Path(os.path.realpath(config.path))
        self.usage = quota.UsageCache(usage_cache_ttl)
        self._limits: dict[Path, tuple[int | None, float]] = {}

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "backend": self.config.backend, "path": str(self.config.path),
                "fsprefix": self.config.fsprefix, "capabilities": list(CAPABILITIES)}

    # --- folders -------------------------------------------------------------------------------

    def folder_path(self, vfid: VFolderID) -> Path:
        return vfid.path(self.root)

    def existing_folder(self, vfid: VFolderID) -> Path:
        path = self.folder_path(vfid)
        try:
            st = os.lstat(path)
        except OSError:
            raise VFolderNotFound() from None
        if not stat.S_ISDIR(st.st_mode):
            raise VFolderNotFound()
        return path

    def scope_dir(self, vfid: VFolderID) -> Path | None:
        return vfid.quota_scope.path(self.root) if vfid.quota_scope else None

    async def create_folder(self, vfid: VFolderID, initial_limit: int | None) -> None:
        def create() -> None:
            if vfid.quota_scope is not None:
                scope = vfid.quota_scope.path(self.root)
                try:
                    scope.mkdir(mode=0o755)
                    if initial_limit:
                        self._set_limit(scope, initial_limit)
                except FileExistsError:
                    pass
            path = self.folder_path(vfid)
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            try:
                path.mkdir(mode=0o755)
            except FileExistsError:
                raise Conflict("the folder already exists") from None
            if self.owner is not None:
                os.chown(path, *self.owner, follow_symlinks=False)
        await asyncio.to_thread(create)

    async def delete_folder(self, vfid: VFolderID) -> None:
        """Idempotent: a folder already gone is deleted."""
        def delete() -> None:
            path = self.folder_path(vfid)
            shutil.rmtree(path, onerror=_ignore_missing)
            for parent in (path.parent, path.parent.parent):  # the empty fan-out directories
                try:
                    parent.rmdir()
                except OSError:
                    break
            (self.root / METADATA_DIR / vfid.folder.hex).unlink(missing_ok=True)
        await asyncio.to_thread(delete)
        if (scope := self.scope_dir(vfid)) is not None:
            self.usage.forget(scope)

    async def clone_folder(self, src: VFolderID, dst_volume: Volume, dst: VFolderID) -> None:
        src_path = self.existing_folder(src)
        dst_path = dst_volume.folder_path(dst)

        def clone() -> None:
            if dst.quota_scope is not None:
                dst.quota_scope.path(dst_volume.root).mkdir(mode=0o755, exist_ok=True)
            dst_path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            if dst_path.exists():
                raise Conflict("the target folder already exists")
            # Symlinks are copied as links (never followed), so a link pointing outside the
            # source folder does not pull outside bytes into the clone.
            # Unfinished uploads of the source stay behind.
            shutil.copytree(src_path, dst_path, symlinks=True, ignore=_skip_upload_dir(src_path))
            if dst_volume.owner is not None:
                _chown_tree(dst_path, dst_volume.owner)
        await asyncio.to_thread(clone)
        if (scope := dst_volume.scope_dir(dst)) is not None:
            dst_volume.usage.forget(scope)

    def mount_path(self, vfid: VFolderID, subpath: PurePosixPath) -> Path:
        try:
            root = self.existing_folder(vfid)
        except VFolderNotFound:
            raise VFolderNotFound("VFolder not found") from None
        try:
            target = confined(root, subpath)
        except InvalidPath:
            raise InvalidParams("Invalid vfolder subpath") from None
        if not target.is_dir():
            raise InvalidParams("Invalid vfolder subpath")
        return target

    async def folder_usage(self, vfid: VFolderID) -> quota.Usage:
        return await asyncio.to_thread(quota.walk_usage, self.existing_folder(vfid))

    def fs_usage(self) -> dict[str, int]:
        usage = shutil.disk_usage(self.root)
        return {"capacity_bytes": usage.total, "used_bytes": usage.used}

    def get_metadata(self, vfid: VFolderID) -> Any:
        self.existing_folder(vfid)
        try:
            return json.loads((self.root / METADATA_DIR / vfid.folder.hex).read_bytes())
        except FileNotFoundError:
            return None

    def set_metadata(self, vfid: VFolderID, payload: Any) -> None:
        self.existing_folder(vfid)
        data = json.dumps(payload).encode()
        if len(data) > MAX_METADATA_BYTES:
            raise InvalidParams(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
        meta_dir = self.root / METADATA_DIR
        meta_dir.mkdir(mode=0o700, exist_ok=True)
        tmp = meta_dir / f"{vfid.folder.hex}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, meta_dir / vfid.folder.hex)

    # --- quota scopes --------------------------------------------------------------------------

    async def create_quota_scope(self, qsid: QuotaScopeID, limit_bytes: int | None) -> None:
        scope = qsid.path(self.root)
        try:
            scope.mkdir(mode=0o755)
        except FileExistsError:
            raise Conflict("the quota scope already exists") from None
        self._set_limit(scope, limit_bytes)

    async def update_quota_scope(self, qsid: QuotaScopeID, limit_bytes: int | None) -> None:
        scope = qsid.path(self.root)
        scope.mkdir(mode=0o755, exist_ok=True)
        self._set_limit(scope, limit_bytes)

    async def describe_quota_scope(self, qsid: QuotaScopeID) -> dict[str, int | None]:
        scope = qsid.path(self.root)
        if not scope.is_dir():
            return {"used_bytes": None, "limit_bytes": None}
        used = await asyncio.to_thread(quota.walk_usage, scope)
        return {"used_bytes": used.used_bytes, "limit_bytes": quota.read_limit(scope)}

    async def unset_quota(self, qsid: QuotaScopeID) -> None:
        scope = qsid.path(self.root)
        if scope.is_dir():
            self._set_limit(scope, None)

    async def room_left(self, vfid: VFolderID) -> int | None:
        """Bytes the folder's quota scope may still take (None: no limit)."""
        scope = self.scope_dir(vfid)
        if scope is None:
            return None
        limit = self.limit_of(scope)
        if limit is None:
            return None
        return limit - await self.usage.used_bytes(scope)

    def limit_of(self, scope: Path) -> int | None:
        """The scope's limit, re-read from its file at most every few seconds (a tiny read, but
        every upload call asks)."""
        cached = self._limits.get(scope)
        now = time.monotonic()
        if cached is not None and now - cached[1] < LIMIT_CACHE_TTL:
            return cached[0]
        limit = quota.read_limit(scope)
        if len(self._limits) > 10_000:
            self._limits.clear()
        self._limits[scope] = (limit, now)
        return limit

    def _set_limit(self, scope: Path, limit_bytes: int | None) -> None:
        quota.write_limit(scope, limit_bytes)
        self._limits.pop(scope, None)

    # --- files ---------------------------------------------------------------------------------

    async def mkdir(self, vfid: VFolderID, relpath: PurePosixPath, parents: bool, exist_ok: bool) -> None:
        root = self.existing_folder(vfid)
        if relpath == PurePosixPath("."):
            raise InvalidPath("mkdir needs a path inside the folder")

        def make() -> None:
            with open_dir(root, relpath.parent, create=parents, owner=self.owner) as fd:
                try:
                    os.mkdir(relpath.name, 0o755, dir_fd=fd)
                    if self.owner is not None:
                        os.chown(relpath.name, *self.owner, dir_fd=fd, follow_symlinks=False)
                except FileExistsError:
                    st = os.stat(relpath.name, dir_fd=fd, follow_symlinks=False)
                    if not (exist_ok and stat.S_ISDIR(st.st_mode)):
                        raise Conflict(f"'{relpath}' already exists") from None
        try:
            await asyncio.to_thread(make)
        except FileNotFoundError:
            raise FileNotFound(f"the parent of '{relpath}' does not exist (pass parents=true)") from None

    async def list_files(self, vfid: VFolderID, relpath: PurePosixPath, limit: int) -> list[DirEntry]:
        root = self.existing_folder(vfid)
        target = confined(root, relpath)

        def scan() -> list[DirEntry]:
            items: list[DirEntry] = []
            with os.scandir(target) as entries:
                for entry in entries:
                    if target == root and entry.name == UPLOAD_DIR:
                        continue
                    try:
                        items.append(_entry(Path(entry.path)))
                    except OSError:
                        continue
                    if len(items) >= limit:
                        break
            return items
        try:
            return await asyncio.to_thread(scan)
        except FileNotFoundError:
            raise FileNotFound(f"'{relpath}' does not exist") from None
        except NotADirectoryError:
            raise InvalidParams(f"'{relpath}' is not a directory") from None

    def _entry_path(self, root: Path, relpath: PurePosixPath) -> Path:
        """The entry itself (not what a symlink there points to), in a confined parent."""
        if relpath == PurePosixPath("."):
            raise InvalidPath("the path must name an entry inside the folder")
        return confined(root, relpath.parent) / relpath.name

    async def move(self, vfid: VFolderID, src: PurePosixPath, dst: PurePosixPath, *, into_dir: bool = True) -> None:
        """``mv``: an existing directory at ``dst`` receives ``src`` (unless not ``into_dir``);
        an existing entry is never replaced."""
        root = self.existing_folder(vfid)
        src_path = self._entry_path(root, src)
        dst_path = self._entry_path(root, dst)

        def move() -> None:
            if not os.path.lexists(src_path):
                raise FileNotFound(f"'{src}' does not exist")
            target = dst_path
            if into_dir and target.is_dir() and not target.is_symlink():
                target = confined(root, dst) / src_path.name
            if os.path.lexists(target):
                raise Conflict(f"'{dst}' already exists")
            if not target.parent.is_dir():
                raise FileNotFound(f"the parent of '{dst}' does not exist")
            if src_path.is_dir() and not src_path.is_symlink() and src_path in target.parents:
                raise InvalidParams("cannot move a directory into itself")
            os.rename(src_path, target)
        await asyncio.to_thread(move)

    async def rename(self, vfid: VFolderID, relpath: PurePosixPath, new_name: str) -> None:
        check_name(new_name, "new_name")
        if relpath.parent == PurePosixPath(".") and new_name == UPLOAD_DIR:
            raise InvalidPath(f"{UPLOAD_DIR} is reserved for upload sessions")
        await self.move(vfid, relpath, relpath.parent / new_name, into_dir=False)

    async def delete_files(self, vfid: VFolderID, relpaths: list[PurePosixPath], recursive: bool) -> None:
        root = self.existing_folder(vfid)
        paths = [self._entry_path(root, rel) for rel in relpaths]

        def delete() -> None:
            for rel, path in zip(relpaths, paths, strict=True):  # check all before removing any
                if not os.path.lexists(path):
                    raise FileNotFound(f"'{rel}' does not exist")
                if path.is_dir() and not path.is_symlink() and not recursive:
                    raise InvalidParams(f"'{rel}' is a directory (pass recursive=true)")
            for path in paths:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, onerror=_ignore_missing)
                else:
                    path.unlink(missing_ok=True)
        await asyncio.to_thread(delete)
        if (scope := self.scope_dir(vfid)) is not None:
            self.usage.forget(scope)

    def readable_file(self, root: Path, relpath: PurePosixPath) -> Path:
        target = confined(root, relpath)
        if not target.exists():
            raise FileNotFound()
        return target


def _skip_upload_dir(src_root: Path) -> Any:
    """copytree's filter: the source's unfinished uploads (its top-level upload dir) stay behind."""
    def ignore(directory: str, names: list[str]) -> list[str]:
        return [UPLOAD_DIR] if Path(directory) == src_root and UPLOAD_DIR in names else []
    return ignore


def _chown_tree(root: Path, owner: tuple[int, int]) -> None:
    os.chown(root, *owner, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), *owner, follow_symlinks=False)


def _ignore_missing(func: Any, path: str, exc_info: Any) -> None:
    """rmtree's error hook: an entry already gone is fine (a concurrent delete), anything else not."""
    exc = exc_info[1]
    if isinstance(exc, OSError) and exc.errno == errno.ENOENT:
        return
    raise ExecutionError("could not remove every file") from exc


class VolumePool:
    def __init__(self, configs: dict[str, VolumeConfig], usage_cache_ttl: float,
                 owner: tuple[int, int] | None = None) -> None:
        self.volumes = {name: Volume(name, cfg, usage_cache_ttl, owner) for name, cfg in configs.items()}

    def get(self, name: str) -> Volume:
        try:
            return self.volumes[name]
        except KeyError:
            raise VolumeNotFound(f"no volume named {name!r} on this proxy") from None
