"""Grants on folders beyond ownership (``vfolder_permissions``): leaving a shared folder, the
owner's (or an admin's) view and changes of who a folder is shared with (``/folders/_/shared``,
``/folders/_/sharing``), and admins' per-user overrides on project folders (``share`` /
``unshare``). One transaction per call; a refused call writes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from bai.manager import errors
from bai.manager.services.context import ManagerContext
from bai.manager.services.manager_admin import ensure_not_frozen
from bai.manager.store import vfolder_sharing as store
from bai.manager.store.keypairs import Requester

from . import access
from .access import Folder
from .invitations import check_permission

MAX_USERS = 100


def _emails(emails: Sequence[str]) -> list[str]:
    wanted = list(dict.fromkeys(e.strip() for e in emails if e and e.strip()))
    if not wanted:
        raise errors.InvalidAPIParameters("Give at least one email.")
    if len(wanted) > MAX_USERS:
        raise errors.InvalidAPIParameters(f"At most {MAX_USERS} users at once.")
    return wanted


async def leave(ctx: ManagerContext, req: Requester, name: str, shared_user_uuid: uuid.UUID | None) -> None:
    """``POST /folders/{name}/leave``: drop the caller's grant on a user folder shared with them
    (a superadmin may drop another user's with ``shared_user_uuid``)."""
    ensure_not_frozen(ctx)
    async with ctx.db.begin() as conn:
        folder = await access.resolve(ctx, req, name, conn=conn)
        if folder.ownership_type == "group":
            raise errors.InvalidAPIParameters("Cannot leave a group vfolder.")
        if folder.via == "owner":
            raise errors.InvalidAPIParameters("Cannot leave a vfolder owned by the requesting user.")
        user = req.user_uuid
        if shared_user_uuid is not None and shared_user_uuid != req.user_uuid:
            if req.role != "superadmin":
                raise errors.InsufficientPrivilege("Only superadmins may remove another user from a vfolder.")
            user = shared_user_uuid
        if not await store.revoke(conn, folder.id, [user]):
            raise errors.ObjectNotFound("The vfolder is not shared with that user.")


async def _managed_folder(ctx: ManagerContext, req: Requester, folder_id: uuid.UUID, conn: Any) -> Folder:
    """A live folder whose grants the caller may change: its owner for a user folder; a
    superadmin, or a domain admin of the folder's domain, for any."""
    folder = await access.by_id(ctx, req, folder_id, statuses=access.LIVE_STATUSES, admin_reach=True, conn=conn)
    if folder.ownership_type == "user" and folder.via == "owner":
        return folder
    if folder.via == "admin":
        return folder
    raise errors.VFolderPermissionError("Only the vfolder's owner or an admin can change who it is shared with.")


async def list_shared(ctx: ManagerContext, req: Requester, folder_id: uuid.UUID | None) -> list[dict[str, Any]]:
    """``GET /folders/_/shared``: grants on the caller's user folders (a superadmin: on anyone's;
    a domain admin: on those of their domain)."""
    async with ctx.db.connect() as conn:
        if req.role == "superadmin":
            rows = await store.shares(conn, owner=None, domain_name=None, folder_id=folder_id)
        elif req.role == "admin":
            rows = await store.shares(conn, owner=None, domain_name=req.domain_name, folder_id=folder_id)
        else:
            rows = await store.shares(conn, owner=req.user_uuid, domain_name=None, folder_id=folder_id)
    return [{
        "vfolder_id": str(r.id), "vfolder_name": r.name, "status": r.status,
        "owner": str(r.group or r.owner), "type": "project" if r.group else "user",
        "shared_to": {"uuid": str(r.user), "email": r.email}, "perm": r.permission,
    } for r in rows]


async def update_shared(ctx: ManagerContext, req: Requester, folder_id: uuid.UUID, user: uuid.UUID,
                        perm: str | None) -> None:
    """``POST /folders/_/shared``: change one user's permission (None: remove the grant)."""
    await update_sharing(ctx, req, folder_id, {user: perm})


async def update_sharing(ctx: ManagerContext, req: Requester, folder_id: uuid.UUID,
                         changes: Mapping[uuid.UUID, str | None]) -> None:
    """``POST /folders/_/sharing``: change (perm) or remove (None) existing grants, all or none."""
    ensure_not_frozen(ctx)
    for perm in changes.values():
        if perm is not None:
            check_permission(perm)
    if len(changes) > MAX_USERS:
        raise errors.InvalidAPIParameters(f"At most {MAX_USERS} users at once.")
    async with ctx.db.begin() as conn:
        folder = await _managed_folder(ctx, req, folder_id, conn)
        await store.folder(conn, folder.id, lock=True)
        granted = await store.granted_users(conn, folder.id, list(changes))
        missing = [str(u) for u in changes if u not in granted]
        if missing:
            raise errors.ObjectNotFound(f"The vfolder is not shared with: {', '.join(missing)}")
        await store.revoke(conn, folder.id, [u for u, p in changes.items() if p is None])
        for user, perm in changes.items():
            if perm is not None:
                await store.change_grant(conn, folder.id, user, perm)


async def _project_folder(ctx: ManagerContext, req: Requester, name: str, conn: Any) -> Any:
    if req.role not in ("admin", "superadmin"):
        raise errors.GenericForbidden("admin privilege required")
    domain = None if req.role == "superadmin" else req.domain_name
    found = await store.live_project_folders_named(conn, name, domain)
    if not found:
        raise errors.VFolderNotFound("Only project folders are directly sharable.")
    if len(found) > 1:
        raise errors.TooManyVFoldersFound(f"{len(found)} project folders are named {name!r}.")
    return found[0]


async def share(ctx: ManagerContext, req: Requester, name: str, perm: str, emails: Sequence[str]) -> list[str]:
    """``POST /folders/{name}/share`` (admins): per-user permissions on a project folder, for
    members of its project."""
    ensure_not_frozen(ctx)
    check_permission(perm)
    wanted = _emails(emails)
    async with ctx.db.begin() as conn:
        folder = await _project_folder(ctx, req, name, conn)
        await store.folder(conn, folder.id, lock=True)
        members = await store.project_members_by_email(conn, wanted, folder.group)
        outside = sorted(set(wanted) - {m.email for m in members})
        if outside:
            raise errors.ObjectNotFound("Some user does not belong to folder's group: " + ",".join(outside))
        for member in members:
            await store.grant(conn, folder.id, member.uuid, perm)
    return [m.email for m in members]


async def unshare(ctx: ManagerContext, req: Requester, name: str, emails: Sequence[str]) -> list[str]:
    """``DELETE /folders/{name}/unshare`` (admins): drop per-user permissions on a project folder."""
    ensure_not_frozen(ctx)
    wanted = _emails(emails)
    async with ctx.db.begin() as conn:
        folder = await _project_folder(ctx, req, name, conn)
        users = await store.users_by_email(conn, wanted)
        if not users:
            raise errors.ObjectNotFound("No such user(s).")
        await store.revoke(conn, folder.id, [u.uuid for u in users])
    return wanted
