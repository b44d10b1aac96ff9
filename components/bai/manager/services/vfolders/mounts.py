"""Virtual folders mounted into a new session (the original's ``prepare_vfolder_mounts``).

At creation, before anything is enqueued, the requested ``mounts`` (names or ids, each with an
optional ``/sub/path``), ``mount_map`` (target paths; relative ones under /home/work) and
``mount_options`` (per-mount permission) are checked against what the session's owner may
reach, and every folder is resolved through its storage proxy (``GET /folder/mount``) to the
host path the agent binds. The owner's dot-prefixed folders are added on their own. The result
is what ``sessions.vfolder_mounts`` stores: ``[{"name", "vfid", "vfsubpath", "host_path",
"kernel_path", "mount_perm", "usage_mode"}]``, the original's VFolderMount documents.
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from bai.common.agent_rpc import check_kernel_path
from bai.manager import errors
from bai.manager.store import vfolders as vf_store
from bai.manager.store.keypairs import Requester

from ..context import ManagerContext
from . import access, proxies

__all__ = ["MountRequest", "prepare"]

WORK_DIR = "/home/work"
#: Dot-folders the original mounts somewhere else than /home/work/<name>.
SPECIAL_TARGETS = {".linuxbrew": "/home/linuxbrew/.linuxbrew"}
#: Folder statuses a session may mount (not in the trash, not failed).
MOUNTABLE_STATUSES = frozenset({"ready", "performing", "cloning", "mounted"})
MAX_MOUNTS = 64



@dataclass(frozen=True)
class MountRequest:
    mounts: Sequence[str]
    mount_map: Mapping[str, str]
    mount_options: Mapping[str, Any]


class MountPermissionError(errors.VFolderPermissionError):
    """A mount asks for more than the user holds: the original answers 400 for it."""

    status = 400


def _bad(msg: str) -> errors.InvalidAPIParameters:
    return errors.InvalidAPIParameters(msg)


def _split_reference(ref: str) -> tuple[str, str]:
    """``name/sub/dir`` -> (name, normalised subpath); the subpath must stay inside the folder."""
    if not isinstance(ref, str) or not ref.strip() or any(ord(c) < 32 for c in ref):
        raise _bad(f"Invalid mount reference: {ref!r}")
    name, _, sub = ref.strip("/").partition("/")
    if not name:
        raise _bad(f"Invalid mount reference: {ref!r}")
    subpath = posixpath.normpath(sub) if sub else "."
    if subpath.startswith("/") or subpath == ".." or subpath.startswith("../"):
        raise _bad(f"The subpath '{sub}' should designate a subdirectory of the vfolder '{name}'.")
    return name, subpath


def _target(raw: str | None, name: str) -> str:
    """The kernel path of a mount: ``mount_map``'s (relative -> under /home/work) or the default."""
    if raw is None:
        path = SPECIAL_TARGETS.get(name, f"{WORK_DIR}/{name}")
    else:
        if not raw.strip() or any(ord(c) < 32 for c in raw):
            raise _bad("Alias name cannot be empty.")
        path = posixpath.normpath(raw if raw.startswith("/") else f"{WORK_DIR}/{raw}")
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
    try:
        if path == WORK_DIR:
            raise ValueError(path)
        return check_kernel_path(path)
    except ValueError:
        raise _bad(f"{raw or name} is reserved for internal path.") from None


def _validate_mount_map(mount_map: Mapping[str, str]) -> None:
    aliases = list(mount_map.values())
    if len(aliases) != len(set(aliases)):
        raise _bad("Duplicate alias folder name exists.")
    for alias in aliases:
        if not isinstance(alias, str):
            raise _bad("Alias names must be strings.")
        short = alias.removeprefix(WORK_DIR + "/")
        if short == "":
            raise _bad("Alias name cannot be empty.")
        if short in mount_map:
            raise _bad(f"Alias name cannot be set to an existing folder name: {short}")


def _requested_permission(options: Mapping[str, Any], ref: str, name: str) -> str | None:
    opts = options.get(ref) or options.get(name) or {}
    if not isinstance(opts, Mapping):
        raise _bad(f"mount_options.{ref} must be an object")
    perm = opts.get("permission", opts.get("perm"))
    if perm is None:
        return None
    if perm not in access.PERMISSIONS:
        raise _bad(f"mount_options.{ref}.permission must be one of ro, rw, wd")
    return str(perm)


async def prepare(ctx: ManagerContext, conn: AsyncConnection, owner: Requester, group_id: uuid.UUID,
                  req: MountRequest) -> list[dict[str, Any]]:
    """The session's vfolder_mounts, or 4xx (nothing is written here either way)."""
    mount_map = dict(req.mount_map or {})
    _validate_mount_map(mount_map)
    references = list(dict.fromkeys([*(req.mounts or []), *mount_map]))
    if len(references) > MAX_MOUNTS:
        raise _bad(f"At most {MAX_MOUNTS} folders can be mounted.")
    split = {ref: _split_reference(ref) for ref in references}
    ids = {}
    for name, _ in split.values():
        try:
            ids[name] = uuid.UUID(name)
        except ValueError:
            pass

    # Project folders of other projects are found (so naming one is not a 404) but skipped below.
    reach = await access.reach_of(conn, owner)
    rows = await vf_store.reachable(conn, owner.user_uuid, reach.project_ids, statuses=MOUNTABLE_STATUSES)
    folders = [access.folder_of(row, reach) for row in rows]
    if not references and not any(f.name.startswith(".") for f in folders):
        return []  # the hot path: nothing asked for, no dot-folder
    by_name: dict[str, list[access.Folder]] = {}
    by_id: dict[uuid.UUID, access.Folder] = {}
    for f in folders:
        by_name.setdefault(f.name, []).append(f)
        by_id[f.id] = f
    allowed_hosts = await vf_store.host_permissions(conn, domain_name=owner.domain_name, user_uuid=owner.user_uuid,
                                                    access_key=owner.access_key, group_id=group_id)

    chosen: list[tuple[str, access.Folder, str, bool]] = []  # (reference, folder, subpath, auto-mounted)
    for ref, (name, subpath) in split.items():
        candidates = [by_id[ids[name]]] if name in ids and ids[name] in by_id else by_name.get(name, [])
        if len(candidates) > 1:  # the session's own project's folder wins over others of that name
            candidates = [f for f in candidates if f.group in (None, group_id)] or candidates
        if not candidates:
            raise errors.VFolderNotFound(f"VFolder {name} is not found or accessible.")
        if len(candidates) > 1:
            raise errors.TooManyVFoldersFound(f"There are two or more folders named {name}; mount it by its id.")
        chosen.append((ref, candidates[0], subpath, False))
    # Dot-folders come on their own: the user's before the project's (a user's .local wins over
    # the project's), none twice under one name, none where the host forbids mounting.
    taken = {f.id for _, f, _, _ in chosen}
    names = {f.name for _, f, _, _ in chosen}
    for f in sorted(folders, key=lambda f: f.group is not None):
        if (f.name.startswith(".") and f.id not in taken and f.name not in names and f.group in (None, group_id)
                and "mount-in-session" in allowed_hosts.get(f.host, ())):
            # a project's .local holds one directory per user, mounted as that user's .local
            sub = owner.user_uuid.hex if f.name == ".local" and f.group is not None else "."
            chosen.append((f.name, f, sub, True))
            names.add(f.name)

    # Overlapping sources: one folder mounted twice where one subpath contains the other.
    for i, (ref1, f1, sub1, _) in enumerate(chosen):
        for ref2, f2, sub2, _ in chosen[i + 1:]:
            if f1.id == f2.id and _contains(sub1, sub2):
                raise _bad(f"VFolder source path '{ref1}' overlaps with '{ref2}'")

    planned: list[tuple[access.Folder, str, str, str]] = []  # (folder, subpath, kernel path, permission)
    for ref, f, subpath, auto in chosen:
        if f.group is not None and f.group != group_id:
            continue  # a project folder of another project than the session's
        if "mount-in-session" not in allowed_hosts.get(f.host, ()):
            raise errors.VFolderHostNotAllowed(
                f"Mounting folders in sessions is not allowed on the storage host {f.host}.")
        held = f.effective
        wanted = None if auto else _requested_permission(req.mount_options or {}, ref, f.name)
        if wanted is None:
            perm = held
        elif wanted == "ro" or access.permits(held, wanted):
            perm = wanted
        else:
            raise MountPermissionError(
                f"VFolder {f.name} is allowed to be accessed in '{held}' mode, "
                f"but attempted with '{wanted}' mode.")
        planned.append((f, subpath, _target(mount_map.get(ref, mount_map.get(f.name)), f.name), perm))
    for i, (_, _, k1, _) in enumerate(planned):
        for _, _, k2, _ in planned[i + 1:]:
            if _contains(k1, k2):
                raise _bad(f"VFolder mount path {k1} overlaps with {k2}")
    mounts: list[dict[str, Any]] = []
    for f, subpath, kernel_path, perm in planned:
        if f.name == ".local" and f.group is not None and subpath == owner.user_uuid.hex:
            await proxies.call(ctx, f.proxy, "POST", "/folder/file/mkdir", {
                "volume": f.volume, "vfid": f.vfid, "relpath": subpath, "parents": True, "exist_ok": True})
        host_path = await _mount_path(ctx, f, subpath)
        mounts.append({
            "name": f.name, "vfid": f.vfid, "vfsubpath": subpath, "host_path": host_path,
            "kernel_path": kernel_path, "mount_perm": perm, "usage_mode": f.usage_mode,
        })
    return mounts


async def _mount_path(ctx: ManagerContext, folder: access.Folder, subpath: str) -> str:
    """The host path of the folder (or its subpath) from its storage proxy, which confines the
    subpath to the folder (a symlink out of it is refused)."""
    reply = await proxies.call(ctx, folder.proxy, "GET", "/folder/mount",
                               {"volume": folder.volume, "vfid": folder.vfid, "subpath": subpath},
                               not_found=errors.VFolderNotFound)
    path = reply.get("path") if isinstance(reply, dict) else None
    if not isinstance(path, str) or not path.startswith("/"):
        raise errors.StorageProxyFailed(f"The storage proxy of {folder.host} answered no mount path.")
    return path


def _contains(a: str, b: str) -> bool:
    """One of two normalised paths is the other or inside it."""
    if a == b or a == "." or b == ".":
        return True
    return b.startswith(a.rstrip("/") + "/") or a.startswith(b.rstrip("/") + "/")

