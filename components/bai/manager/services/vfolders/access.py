"""Who reaches which virtual folder, and with which permission: the one place these rules live
(the /folders API, sharing, invitations and session mounts all ask here).

A requester reaches (the original's ``query_accessible_vfolders``):

* the user folders they own: shown with the folder's own ``permission``, but the owner may do
  everything (effective ``wd``);
* the project folders of their projects, with the folder's ``permission``, overridden per user by
  a ``vfolder_permissions`` row; a domain admin reaches every project folder of their domain and a
  superadmin every project folder, both as owners;
* user folders shared with them (a ``vfolder_permissions`` row: an accepted invitation), with
  that row's permission.

Anything else is invisible: a folder outside the reach is "not found", never "forbidden", so
nothing about other users' folders leaks. Only the ownership types enabled in etcd
(``volumes/_types``) are reached. Volume-host permissions are the union of the domain's, the
projects' and the keypair policy's ``allowed_vfolder_hosts``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from bai.manager import errors
from bai.manager.services.context import ManagerContext
from bai.manager.store import vfolders as store
from bai.manager.store.keypairs import Requester

from . import proxies

PERMISSIONS = ("ro", "rw", "wd")
_RANK = {p: i for i, p in enumerate(PERMISSIONS)}
LIVE_STATUSES = store.LIVE_STATUSES
DEAD_STATUSES = store.DEAD_STATUSES
TRASH_STATUS = store.TRASH_STATUS

#: Volume-host permission names (``allowed_vfolder_hosts`` values).
HOST_PERMISSIONS = ("create-vfolder", "modify-vfolder", "delete-vfolder", "mount-in-session", "upload-file",
                    "download-file", "invite-others", "set-user-specific-permission")


def permits(have: str, need: str) -> bool:
    """``have`` (ro/rw/wd) is at least ``need``."""
    return _RANK.get(have, -1) >= _RANK[need]


@dataclass(frozen=True)
class Folder:
    """A folder as one requester reaches it."""

    id: uuid.UUID
    name: str
    host: str
    quota_scope_id: str
    usage_mode: str
    #: What the requester is shown: the folder's own permission for its owner, the override or
    #: share permission otherwise.
    permission: str
    #: What the requester may do (checks use this one): ``wd`` for owners.
    effective: str
    is_owner: bool
    #: owner | project | shared | admin
    via: str
    ownership_type: str
    user: uuid.UUID | None
    group: uuid.UUID | None
    creator: str | None
    cloneable: bool
    status: str
    created_at: datetime
    last_used: datetime | None
    unmanaged_path: str | None
    max_files: int
    max_size: int
    num_files: int
    cur_size: int
    user_email: str | None
    group_name: str | None
    #: The folder's own permission column (the project default for project folders).
    folder_permission: str
    status_changed: datetime | None = None

    @property
    def proxy(self) -> str:
        return proxies.split_host(self.host)[0]

    @property
    def volume(self) -> str:
        return proxies.split_host(self.host)[1]

    @property
    def vfid(self) -> str:
        """The folder's ID on the wire to the storage proxy: ``<quota scope>/<hex>``."""
        return f"{self.quota_scope_id}/{self.id.hex}" if self.quota_scope_id else self.id.hex

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_STATUSES

    def can(self, need: str) -> bool:
        return permits(self.effective, need)


@dataclass(frozen=True)
class Reach:
    """Whose folders a requester reaches: their user, their role and the projects they see."""

    user_uuid: uuid.UUID
    role: str
    domain_name: str
    #: None: every project (superadmins)
    project_ids: tuple[uuid.UUID, ...] | None
    #: The requester administers these projects' folders (domain admin / superadmin).
    admin: bool


async def reach_of(conn: AsyncConnection, req: Requester) -> Reach:
    return await reach_of_user(conn, req.user_uuid, req.role, req.domain_name)


async def reach_of_user(conn: AsyncConnection, user_uuid: uuid.UUID, role: str, domain_name: str) -> Reach:
    if role == "superadmin":
        return Reach(user_uuid, role, domain_name, None, True)
    member = await store.member_project_ids(conn, user_uuid)
    if role == "admin":
        domain = await store.domain_project_ids(conn, domain_name)
        return Reach(user_uuid, role, domain_name, tuple(dict.fromkeys([*domain, *member])), True)
    return Reach(user_uuid, role, domain_name, tuple(member), False)


def folder_of(row: Any, reach: Reach, *, admin_view: bool = False) -> Folder:
    """One store row (reach_query columns) as ``reach`` sees it."""
    own_perm = row.permission
    shared = row.shared_permission
    if row.user is not None and row.user == reach.user_uuid:
        shown, effective, is_owner, via = own_perm, "wd", True, "owner"
    elif row.group is not None and reach.admin and (
            reach.project_ids is None or row.group in reach.project_ids):
        shown, effective, is_owner, via = shared or own_perm, "wd", True, "admin"
    elif row.group is not None:
        perm = shared or own_perm
        shown, effective, is_owner, via = perm, perm, False, "project"
    elif shared is not None:
        shown, effective, is_owner, via = shared, shared, False, "shared"
    elif admin_view:  # an admin acting on a user folder of their domain by ID (trash, purge)
        shown, effective, is_owner, via = own_perm, "wd", False, "admin"
    else:  # not reached: reach_query never returns such a row
        shown, effective, is_owner, via = "ro", "ro", False, "none"
    return Folder(
        id=row.id, name=row.name, host=row.host, quota_scope_id=row.quota_scope_id, usage_mode=row.usage_mode,
        permission=shown, effective=effective, is_owner=is_owner, via=via, ownership_type=row.ownership_type,
        user=row.user, group=row.group, creator=row.creator, cloneable=row.cloneable, status=row.status,
        created_at=row.created_at, last_used=row.last_used, unmanaged_path=row.unmanaged_path,
        max_files=row.max_files, max_size=row.max_size, num_files=row.num_files, cur_size=row.cur_size,
        user_email=row.user_email, group_name=row.group_name, folder_permission=own_perm,
        status_changed=row.status_changed,
    )


async def allowed_types(ctx: ManagerContext) -> tuple[str, ...]:
    """Ownership types enabled in etcd (``volumes/_types``)."""
    return (await proxies.volume_config(ctx)).types


async def reachable(ctx: ManagerContext, req: Requester, *, statuses: Collection[str] | None = LIVE_STATUSES,
                    name: str | None = None, folder_id: uuid.UUID | None = None,
                    owner_user: uuid.UUID | None = None, group_id: uuid.UUID | None = None,
                    conn: AsyncConnection | None = None) -> list[Folder]:
    """Every folder ``req`` reaches (live ones by default), narrowed by name, id, owner or project."""
    types = await allowed_types(ctx)
    if conn is not None:
        return await _reachable(conn, req, types, statuses, name, folder_id, owner_user, group_id)
    async with ctx.db.connect() as own:
        return await _reachable(own, req, types, statuses, name, folder_id, owner_user, group_id)


async def _reachable(conn: AsyncConnection, req: Requester, types: Sequence[str],
                     statuses: Collection[str] | None, name: str | None, folder_id: uuid.UUID | None,
                     owner_user: uuid.UUID | None, group_id: uuid.UUID | None) -> list[Folder]:
    reach = await reach_of(conn, req)
    return await reachable_by(conn, reach, types, statuses=statuses, name=name, folder_id=folder_id,
                              owner_user=owner_user, group_id=group_id)


async def reachable_by(conn: AsyncConnection, reach: Reach, types: Sequence[str], *,
                       statuses: Collection[str] | None = LIVE_STATUSES, name: str | None = None,
                       folder_id: uuid.UUID | None = None, owner_user: uuid.UUID | None = None,
                       group_id: uuid.UUID | None = None) -> list[Folder]:
    """What ``reach`` (any user's, e.g. an admin listing another user's folders) reaches."""
    rows = await store.reachable(conn, reach.user_uuid, reach.project_ids, types=types, statuses=statuses,
                                 name=name, folder_id=folder_id, owner_user=owner_user, group_id=group_id)
    return [folder_of(row, reach) for row in rows]


async def resolve(ctx: ManagerContext, req: Requester, name: str, *, need: str = "ro",
                  statuses: Collection[str] | None = LIVE_STATUSES, owner_only: bool = False,
                  conn: AsyncConnection | None = None) -> Folder:
    """The one folder named ``name`` that ``req`` reaches: 404 vfolder-not-found when none,
    404 too-many-vfolders when several; 403 vfolder-permission-error when its permission is
    below ``need`` (or ``owner_only`` and the requester does not own it)."""
    found = await reachable(ctx, req, statuses=statuses, name=name, conn=conn)
    if not found:
        raise errors.VFolderNotFound(f"no virtual folder named {name!r}")
    if len(found) > 1:
        raise errors.TooManyVFoldersFound(
            f"{len(found)} virtual folders named {name!r} are reachable: use their IDs",
            {"vfolder_ids": [f.id.hex for f in found]})
    return require(found[0], need=need, owner_only=owner_only)


def require(folder: Folder, *, need: str = "ro", owner_only: bool = False) -> Folder:
    if owner_only and not folder.is_owner:
        raise errors.VFolderPermissionError("only the folder's owner may do this")
    if not folder.can(need):
        raise errors.VFolderPermissionError(
            f"the folder permits {folder.effective!r}; this operation needs {need!r}")
    return folder


async def by_id(ctx: ManagerContext, req: Requester, folder_id: uuid.UUID, *,
                statuses: Collection[str] | None = None, admin_reach: bool = False,
                conn: AsyncConnection | None = None) -> Folder:
    """The folder with this ID if ``req`` reaches it; with ``admin_reach`` also any folder of a
    domain admin's domain (any folder for a superadmin). 404 otherwise."""
    found = await reachable(ctx, req, statuses=statuses, folder_id=folder_id, conn=conn)
    if found:
        return found[0]
    if admin_reach and req.role in ("admin", "superadmin"):
        domain = None if req.role == "superadmin" else req.domain_name
        if conn is not None:
            rows = await store.any_folder(conn, req.user_uuid, folder_id=folder_id, statuses=statuses,
                                          domain_name=domain)
            reach = await reach_of(conn, req)
        else:
            async with ctx.db.connect() as own:
                rows = await store.any_folder(own, req.user_uuid, folder_id=folder_id, statuses=statuses,
                                              domain_name=domain)
                reach = await reach_of(own, req)
        if rows:
            return folder_of(rows[0], reach, admin_view=True)
    raise errors.VFolderNotFound(f"no virtual folder with ID {folder_id.hex}")


# ------------------------------------------------------------------ volume-host permissions

async def allowed_hosts(ctx: ManagerContext, req: Requester, group_id: uuid.UUID | None = None,
                        conn: AsyncConnection | None = None) -> dict[str, set[str]]:
    """``{host: {permission, ...}}``: the union of the domain's, the projects' (``group_id``'s,
    else every project of the user) and the keypair policy's ``allowed_vfolder_hosts``."""
    if conn is not None:
        return await store.host_permissions(conn, domain_name=req.domain_name, user_uuid=req.user_uuid,
                                            access_key=req.access_key, group_id=group_id)
    async with ctx.db.connect() as own:
        return await store.host_permissions(own, domain_name=req.domain_name, user_uuid=req.user_uuid,
                                            access_key=req.access_key, group_id=group_id)


async def require_host_permission(ctx: ManagerContext, req: Requester, host: str, permission: str,
                                  group_id: uuid.UUID | None = None, conn: AsyncConnection | None = None) -> None:
    """403 unless ``permission`` is granted on ``host`` (superadmins are not exempt, as in the
    original: the volume-host grants are the operator's switch for a volume)."""
    hosts = await allowed_hosts(ctx, req, group_id, conn)
    if permission not in hosts.get(host, set()):
        raise errors.VFolderHostNotAllowed(f"{permission!r} is not allowed on storage host {host!r}")


#: How long the upload / download token paths reuse a requester's volume-host grants, in
#: seconds: a revoked ``upload-file`` / ``download-file`` refuses new tokens within this time (a
#: new grant works within it too). Every other check reads the database each time.
TRANSFER_GRANTS_TTL = 2.0
_GRANTS_KEY = "vfolder_transfer_grants"
_GRANTS_MAX_ENTRIES = 10_000
_GrantKey = tuple[str, uuid.UUID, str, uuid.UUID | None]


class TransferGrants:
    """``allowed_hosts`` answers kept for ``ttl`` seconds per (domain, user, access key, project),
    so a client sending thousands of files pays the lookup once every ``ttl``, not per file."""

    def __init__(self, ttl: float = TRANSFER_GRANTS_TTL, max_entries: int = _GRANTS_MAX_ENTRIES) -> None:
        self.ttl = ttl
        self._max = max_entries
        self._entries: dict[_GrantKey, tuple[float, dict[str, set[str]]]] = {}

    async def get(self, ctx: ManagerContext, req: Requester, group_id: uuid.UUID | None,
                  conn: AsyncConnection) -> dict[str, set[str]]:
        key = (req.domain_name, req.user_uuid, req.access_key, group_id)
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        found = await allowed_hosts(ctx, req, group_id, conn)
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[key] = (now, found)
        return found

    def invalidate(self) -> None:
        self._entries.clear()


def transfer_grants(ctx: ManagerContext) -> TransferGrants:
    """This manager's cache of volume-host grants for the token paths (made on first use)."""
    found = ctx.extra.get(_GRANTS_KEY)
    if not isinstance(found, TransferGrants):
        found = ctx.extra[_GRANTS_KEY] = TransferGrants()
    return found


async def require_transfer_permission(ctx: ManagerContext, req: Requester, host: str, permission: str,
                                      group_id: uuid.UUID | None, conn: AsyncConnection) -> None:
    """require_host_permission for ``upload-file`` / ``download-file`` on the per-file token
    paths, from grants at most TRANSFER_GRANTS_TTL seconds old."""
    hosts = await transfer_grants(ctx).get(ctx, req, group_id, conn)
    if permission not in hosts.get(host, set()):
        raise errors.VFolderHostNotAllowed(f"{permission!r} is not allowed on storage host {host!r}")
