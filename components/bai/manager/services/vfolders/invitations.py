"""Invitations to a user folder (the original's ``/folders/{name}/invite`` and
``/folders/invitations/*``): the owner invites people of their domain with a permission; an
invitee accepts (a ``vfolder_permissions`` row: the folder is then theirs to reach with that
permission) or rejects; the inviter changes the permission or cancels while it is pending.

Every call is one transaction and checks who is asking before it looks at anything: an
invitation that is not the caller's (as inviter or invitee) does not exist for them, and a
refused call writes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from bai.manager import errors
from bai.manager.services.context import ManagerContext
from bai.manager.services.manager_admin import ensure_not_frozen
from bai.manager.store import vfolder_sharing as store
from bai.manager.store.keypairs import Requester

from . import access

MAX_INVITEES = 100


def check_permission(perm: str) -> str:
    if perm not in access.PERMISSIONS:
        raise errors.InvalidAPIParameters(f"permission must be one of {', '.join(access.PERMISSIONS)}")
    return perm


def _no_such_invitation() -> errors.ObjectNotFound:
    return errors.ObjectNotFound("No such vfolder invitation.")


async def invite(ctx: ManagerContext, req: Requester, name: str, perm: str, emails: Sequence[str]) -> list[str]:
    """``POST /folders/{name}/invite``: the emails invited now (those with a pending invitation
    from the caller already are left out, as the original does)."""
    ensure_not_frozen(ctx)
    check_permission(perm)
    wanted = list(dict.fromkeys(e.strip() for e in emails if e and e.strip()))
    if not wanted:
        raise errors.InvalidAPIParameters("Give at least one invitee email.")
    if len(wanted) > MAX_INVITEES:
        raise errors.InvalidAPIParameters(f"At most {MAX_INVITEES} people can be invited at once.")
    if req.email in wanted:
        raise errors.InvalidAPIParameters("You cannot invite yourself.")
    async with ctx.db.begin() as conn:
        folder = await access.resolve(ctx, req, name, conn=conn)
        if folder.via != "owner" or folder.ownership_type != "user":
            raise errors.VFolderPermissionError("Only the owner of a user folder can invite others to it.")
        if folder.name.startswith("."):
            raise errors.InvalidAPIParameters("Cannot share private dot-prefixed vfolders.")
        await access.require_host_permission(ctx, req, folder.host, "invite-others", conn=conn)
        await store.folder(conn, folder.id, lock=True)  # concurrent invites of this folder queue here
        invitees = await store.active_users_by_email(conn, wanted, req.domain_name)
        missing = sorted(set(wanted) - {u.email for u in invitees})
        if missing:
            raise errors.ObjectNotFound(f"No such user in your domain: {', '.join(missing)}")
        for user in invitees:
            if await store.user_reaches_name(conn, user.uuid, folder.name):
                raise errors.VFolderAlreadyExists(
                    f"{user.email} already has access to a vfolder named {folder.name!r}.")
        pending = await store.pending_invitees(conn, folder.id, req.email)
        invited = []
        for email in wanted:
            if email in pending:
                continue
            await store.insert_invitation(conn, folder_id=folder.id, inviter=req.email, invitee=email,
                                          permission=perm)
            invited.append(email)
    return invited


def _entry(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id), "inviter": row.inviter, "invitee": row.invitee, "perm": row.permission,
        "state": row.state, "created_at": str(row.created_at), "modified_at": str(row.modified_at),
        "vfolder_id": str(row.vfolder), "vfolder_name": row.vfolder_name,
    }


async def received(ctx: ManagerContext, req: Requester) -> list[dict[str, Any]]:
    async with ctx.db.connect() as conn:
        return [_entry(r) for r in await store.invitations(conn, invitee=req.email)]


async def sent(ctx: ManagerContext, req: Requester) -> list[dict[str, Any]]:
    async with ctx.db.connect() as conn:
        return [_entry(r) for r in await store.invitations(conn, inviter=req.email)]


async def update(ctx: ManagerContext, req: Requester, inv_id: uuid.UUID, perm: str) -> None:
    """The inviter changes the permission a pending invitation offers."""
    ensure_not_frozen(ctx)
    check_permission(perm)
    async with ctx.db.begin() as conn:
        inv = await store.pending_invitation(conn, inv_id)
        if inv is None or inv.inviter != req.email:
            raise _no_such_invitation()
        await store.set_invitation(conn, inv_id, {"permission": perm})


async def accept(ctx: ManagerContext, req: Requester, inv_id: uuid.UUID) -> None:
    """The invitee accepts: granted the invitation's permission on the folder."""
    ensure_not_frozen(ctx)
    async with ctx.db.begin() as conn:
        inv = await store.pending_invitation(conn, inv_id)
        if inv is None or inv.invitee != req.email:
            raise _no_such_invitation()
        folder = await store.folder(conn, inv.vfolder, lock=True)
        if folder is None or folder.status not in access.LIVE_STATUSES:
            raise errors.VFolderNotFound("The invited vfolder no longer exists.")
        if folder.user == req.user_uuid:
            raise errors.InvalidAPIParameters("You own this vfolder already.")
        if await store.user_reaches_name(conn, req.user_uuid, folder.name):
            raise errors.VFolderAlreadyExists(
                f"You already have a vfolder named {folder.name!r}: rename it before accepting.")
        await store.grant(conn, folder.id, req.user_uuid, inv.permission)
        await store.set_invitation(conn, inv_id, {"state": "accepted"})


async def delete(ctx: ManagerContext, req: Requester, inv_id: uuid.UUID) -> None:
    """The invitee rejects, or the inviter cancels, a pending invitation."""
    ensure_not_frozen(ctx)
    async with ctx.db.begin() as conn:
        inv = await store.pending_invitation(conn, inv_id)
        if inv is None:
            raise _no_such_invitation()
        if inv.invitee == req.email:
            state = "rejected"
        elif inv.inviter == req.email:
            state = "canceled"
        else:
            raise _no_such_invitation()
        await store.set_invitation(conn, inv_id, {"state": state})
