"""SQL for sharing virtual folders: invitations (``vfolder_invitations``, people named by email
as the original stores them), grants (``vfolder_permissions``) and who may receive them.

The rules (who may invite, accept, share ...) are in services/vfolders/{sharing,invitations}.py;
every function here runs inside the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t

_vf = t.vfolders
_vp = t.vfolder_permissions
_inv = t.vfolder_invitations
_users = t.users
_members = t.association_groups_users

#: Folder statuses that are gone for their users (trash and deletion).
DEAD_STATUSES = ("delete-pending", "delete-ongoing", "delete-complete", "delete-error")


# ------------------------------------------------------------------ people

async def active_users_by_email(conn: AsyncConnection, emails: Collection[str], domain_name: str) -> list[Any]:
    """Active users of ``domain_name`` among ``emails`` (uuid, email)."""
    if not emails:
        return []
    q = sa.select(_users.c.uuid, _users.c.email).where(
        _users.c.email.in_(list(emails)), _users.c.domain_name == domain_name, _users.c.status == "active")
    return list((await conn.execute(q)).all())


async def active_users_by_uuid(conn: AsyncConnection, uuids: Collection[uuid.UUID], domain_name: str | None,
                               ) -> list[Any]:
    if not uuids:
        return []
    q = sa.select(_users.c.uuid, _users.c.email, _users.c.domain_name).where(
        _users.c.uuid.in_(list(uuids)), _users.c.status == "active")
    if domain_name is not None:
        q = q.where(_users.c.domain_name == domain_name)
    return list((await conn.execute(q)).all())


async def project_members_by_email(conn: AsyncConnection, emails: Collection[str], group_id: uuid.UUID,
                                   ) -> list[Any]:
    """Users among ``emails`` who belong to the project (uuid, email)."""
    if not emails:
        return []
    q = (sa.select(_users.c.uuid, _users.c.email)
         .select_from(_users.join(_members, _members.c.user_id == _users.c.uuid))
         .where(_users.c.email.in_(list(emails)), _members.c.group_id == group_id))
    return list((await conn.execute(q)).all())


async def users_by_email(conn: AsyncConnection, emails: Collection[str]) -> list[Any]:
    if not emails:
        return []
    q = sa.select(_users.c.uuid, _users.c.email).where(_users.c.email.in_(list(emails)))
    return list((await conn.execute(q)).all())


# ------------------------------------------------------------------ folders

async def folder(conn: AsyncConnection, folder_id: uuid.UUID, *, lock: bool = False) -> sa.Row[Any] | None:
    q = sa.select(_vf).where(_vf.c.id == folder_id)
    if lock:
        q = q.with_for_update()
    return (await conn.execute(q)).first()


async def live_project_folders_named(conn: AsyncConnection, name: str, domain_name: str | None) -> list[Any]:
    """Live project folders called ``name`` (of projects of ``domain_name`` when given)."""
    q = (sa.select(_vf).select_from(_vf.join(t.groups, t.groups.c.id == _vf.c.group))
         .where(_vf.c.ownership_type == "group", _vf.c.name == name, _vf.c.status.not_in(DEAD_STATUSES)))
    if domain_name is not None:
        q = q.where(t.groups.c.domain_name == domain_name)
    return list((await conn.execute(q)).all())


async def user_reaches_name(conn: AsyncConnection, user_uuid: uuid.UUID, name: str) -> bool:
    """The user owns, or has been granted, a live folder called ``name`` (an accepted invitation
    of that name would make ``/folders/{name}`` ambiguous for them)."""
    owned = sa.select(_vf.c.id).where(_vf.c.user == user_uuid, _vf.c.name == name,
                                      _vf.c.status.not_in(DEAD_STATUSES))
    shared = (sa.select(_vf.c.id).select_from(_vf.join(_vp, _vp.c.vfolder == _vf.c.id))
              .where(_vp.c.user == user_uuid, _vf.c.name == name, _vf.c.status.not_in(DEAD_STATUSES)))
    q = sa.select(sa.exists(owned.union_all(shared).subquery().select()))
    return bool((await conn.execute(q)).scalar())


# ------------------------------------------------------------------ grants

async def grant(conn: AsyncConnection, folder_id: uuid.UUID, user_uuid: uuid.UUID, permission: str) -> None:
    """Give (or change) a user's permission on the folder."""
    q = pg_insert(_vp).values(vfolder=folder_id, user=user_uuid, permission=permission)
    await conn.execute(q.on_conflict_do_update(constraint="pk_vfolder_permissions",
                                               set_={"permission": permission}))


async def change_grant(conn: AsyncConnection, folder_id: uuid.UUID, user_uuid: uuid.UUID, permission: str) -> bool:
    """Change an existing grant; False when the user has none."""
    q = sa.update(_vp).where(_vp.c.vfolder == folder_id, _vp.c.user == user_uuid).values(permission=permission)
    return bool((await conn.execute(q)).rowcount)


async def revoke(conn: AsyncConnection, folder_id: uuid.UUID, user_uuids: Collection[uuid.UUID]) -> int:
    if not user_uuids:
        return 0
    q = sa.delete(_vp).where(_vp.c.vfolder == folder_id, _vp.c.user.in_(list(user_uuids)))
    return int((await conn.execute(q)).rowcount)


async def granted_users(conn: AsyncConnection, folder_id: uuid.UUID, user_uuids: Collection[uuid.UUID],
                        ) -> set[uuid.UUID]:
    if not user_uuids:
        return set()
    q = sa.select(_vp.c.user).where(_vp.c.vfolder == folder_id, _vp.c.user.in_(list(user_uuids)))
    return set((await conn.execute(q)).scalars())


async def shares(conn: AsyncConnection, *, owner: uuid.UUID | None, domain_name: str | None,
                 folder_id: uuid.UUID | None) -> list[Any]:
    """Grants on user-owned folders: of ``owner``'s folders (None: anyone's, within
    ``domain_name`` when given), of one folder when ``folder_id`` is given; with the folder's
    id, name, status, owner and the grantee's email."""
    grantee = _users.alias("grantee")
    owner_user = _users.alias("owner_user")
    q = (sa.select(_vp.c.user, _vp.c.permission, _vf.c.id, _vf.c.name, _vf.c.status, _vf.c.user.label("owner"),
                   _vf.c.group, grantee.c.email)
         .select_from(_vp.join(_vf, _vf.c.id == _vp.c.vfolder).join(grantee, grantee.c.uuid == _vp.c.user)
                      .join(owner_user, owner_user.c.uuid == _vf.c.user))
         .where(_vf.c.ownership_type == "user"))
    if owner is not None:
        q = q.where(_vf.c.user == owner)
    if domain_name is not None:
        q = q.where(owner_user.c.domain_name == domain_name)
    if folder_id is not None:
        q = q.where(_vf.c.id == folder_id)
    return list((await conn.execute(q.order_by(_vf.c.name, grantee.c.email))).all())


# ------------------------------------------------------------------ invitations

_INV_COLUMNS = (*_inv.c, _vf.c.name.label("vfolder_name"))


async def pending_invitees(conn: AsyncConnection, folder_id: uuid.UUID, inviter: str) -> set[str]:
    q = sa.select(_inv.c.invitee).where(_inv.c.vfolder == folder_id, _inv.c.inviter == inviter,
                                        _inv.c.state == "pending")
    return set((await conn.execute(q)).scalars())


async def insert_invitation(conn: AsyncConnection, *, folder_id: uuid.UUID, inviter: str, invitee: str,
                            permission: str) -> uuid.UUID:
    inv_id = uuid.uuid4()
    await conn.execute(sa.insert(_inv).values(id=inv_id, vfolder=folder_id, inviter=inviter, invitee=invitee,
                                              permission=permission, state="pending"))
    return inv_id


async def invitations(conn: AsyncConnection, *, invitee: str | None = None, inviter: str | None = None,
                      ) -> list[Any]:
    """Pending invitations to (or from) an email, on folders still alive, oldest first."""
    q = (sa.select(*_INV_COLUMNS).select_from(_inv.join(_vf, _vf.c.id == _inv.c.vfolder))
         .where(_inv.c.state == "pending", _vf.c.status.not_in(DEAD_STATUSES)))
    if invitee is not None:
        q = q.where(_inv.c.invitee == invitee)
    if inviter is not None:
        q = q.where(_inv.c.inviter == inviter)
    return list((await conn.execute(q.order_by(_inv.c.created_at, _inv.c.id))).all())


async def pending_invitation(conn: AsyncConnection, inv_id: uuid.UUID) -> sa.Row[Any] | None:
    """A pending invitation, locked until the transaction ends (two accepts cannot both pass)."""
    q = (sa.select(*_INV_COLUMNS).select_from(_inv.join(_vf, _vf.c.id == _inv.c.vfolder))
         .where(_inv.c.id == inv_id, _inv.c.state == "pending").with_for_update(of=_inv))
    return (await conn.execute(q)).first()


async def set_invitation(conn: AsyncConnection, inv_id: uuid.UUID, values: Mapping[str, Any]) -> None:
    await conn.execute(sa.update(_inv).where(_inv.c.id == inv_id).values(**values, modified_at=sa.func.now()))


async def cancel_pending_to(conn: AsyncConnection, folder_id: uuid.UUID, invitees: Collection[str]) -> None:
    """Pending invitations of the folder to these emails end (the grant they offered changed)."""
    if invitees:
        await conn.execute(sa.update(_inv).where(
            _inv.c.vfolder == folder_id, _inv.c.invitee.in_(list(invitees)), _inv.c.state == "pending",
        ).values(state="canceled", modified_at=sa.func.now()))
