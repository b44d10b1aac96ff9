"""SQL for virtual folders: who reaches which folder (owned, project, shared), the rows the
/folders API and GraphQL read and write, volume-host permissions and the resource-policy limits
of quota scopes. The access RULES (what each reach allows) live in services/vfolders/access.py;
this module only answers the questions it asks."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from . import filters as qf
from . import tables as t

_vf = t.vfolders
_vp = t.vfolder_permissions
_members = t.association_groups_users

#: Statuses of folders in use; the delete-* ones are dead (trash, being deleted, deleted).
LIVE_STATUSES = frozenset({"ready", "performing", "cloning", "mounted", "error"})
TRASH_STATUS = "delete-pending"
DEAD_STATUSES = frozenset({"delete-pending", "delete-ongoing", "delete-complete", "delete-error"})
ALL_STATUSES = LIVE_STATUSES | DEAD_STATUSES
#: What a folder may be purged (its row removed) from.
PURGABLE_STATUSES = frozenset({"delete-complete", "delete-error"})


def _reach_columns(user_uuid: uuid.UUID) -> list[Any]:
    return [
        *_vf.c,
        _vp.c.permission.label("shared_permission"),
        t.users.c.email.label("user_email"),
        t.users.c.domain_name.label("user_domain"),
        t.groups.c.name.label("group_name"),
        t.groups.c.domain_name.label("group_domain"),
    ]


def _reach_from(user_uuid: uuid.UUID) -> Any:
    return (
        _vf.outerjoin(_vp, sa.and_(_vp.c.vfolder == _vf.c.id, _vp.c.user == user_uuid))
        .outerjoin(t.users, t.users.c.uuid == _vf.c.user)
        .outerjoin(t.groups, t.groups.c.id == _vf.c.group)
    )


def reach_query(user_uuid: uuid.UUID, project_ids: Sequence[uuid.UUID] | None, *,
                types: Collection[str] = ("user", "group")) -> sa.Select[Any]:
    """Folders ``user_uuid`` reaches: their own, those of ``project_ids`` (None: every project)
    and user folders shared to them (a vfolder_permissions row). Each row carries the folder's
    columns plus ``shared_permission`` (the user's vfolder_permissions row, if any), the owner's
    ``user_email``/``user_domain`` and the project's ``group_name``/``group_domain``."""
    conds: list[sa.ColumnElement[bool]] = []
    if "user" in types:
        conds.append(_vf.c.user == user_uuid)
        conds.append(sa.and_(_vf.c.user.is_not(None), _vp.c.user.is_not(None)))
    if "group" in types:
        if project_ids is None:
            conds.append(_vf.c.group.is_not(None))
        elif project_ids:
            conds.append(_vf.c.group.in_(list(project_ids)))
    if not conds:
        conds.append(sa.false())
    return sa.select(*_reach_columns(user_uuid)).select_from(_reach_from(user_uuid)).where(sa.or_(*conds))


def any_folder_query(user_uuid: uuid.UUID) -> sa.Select[Any]:
    """Every folder (for admins' ID-based operations), with the same columns as reach_query."""
    return sa.select(*_reach_columns(user_uuid)).select_from(_reach_from(user_uuid))


async def reachable(conn: AsyncConnection, user_uuid: uuid.UUID, project_ids: Sequence[uuid.UUID] | None, *,
                    types: Collection[str] = ("user", "group"), statuses: Collection[str] | None = None,
                    name: str | None = None, folder_id: uuid.UUID | None = None,
                    owner_user: uuid.UUID | None = None, group_id: uuid.UUID | None = None,
                    ) -> list[sa.Row[Any]]:
    """reach_query narrowed by status, name, id, owning user or project; oldest first."""
    q = reach_query(user_uuid, project_ids, types=types)
    q = _narrow(q, statuses=statuses, name=name, folder_id=folder_id, owner_user=owner_user, group_id=group_id)
    return list((await conn.execute(q.order_by(_vf.c.created_at, _vf.c.id))).all())


async def any_folder(conn: AsyncConnection, user_uuid: uuid.UUID, *, folder_id: uuid.UUID | None = None,
                     name: str | None = None, statuses: Collection[str] | None = None,
                     domain_name: str | None = None) -> list[sa.Row[Any]]:
    """Folders regardless of reach (admins): by id or name, within ``domain_name`` when given
    (the owning user's or project's domain)."""
    q = _narrow(any_folder_query(user_uuid), statuses=statuses, name=name, folder_id=folder_id)
    if domain_name is not None:
        q = q.where(sa.or_(t.users.c.domain_name == domain_name, t.groups.c.domain_name == domain_name))
    return list((await conn.execute(q.order_by(_vf.c.created_at, _vf.c.id))).all())


def _narrow(q: sa.Select[Any], *, statuses: Collection[str] | None = None, name: str | None = None,
            folder_id: uuid.UUID | None = None, owner_user: uuid.UUID | None = None,
            group_id: uuid.UUID | None = None) -> sa.Select[Any]:
    if statuses is not None:
        q = q.where(_vf.c.status.in_(list(statuses)))
    if name is not None:
        q = q.where(_vf.c.name == name)
    if folder_id is not None:
        q = q.where(_vf.c.id == folder_id)
    if owner_user is not None:
        q = q.where(_vf.c.user == owner_user)
    if group_id is not None:
        q = q.where(_vf.c.group == group_id)
    return q


# ------------------------------------------------------------------ who the requester is

async def member_project_ids(conn: AsyncConnection, user_uuid: uuid.UUID) -> list[uuid.UUID]:
    q = (sa.select(_members.c.group_id).select_from(_members.join(t.groups, t.groups.c.id == _members.c.group_id))
         .where(_members.c.user_id == user_uuid))
    return list((await conn.execute(q)).scalars())


async def domain_project_ids(conn: AsyncConnection, domain_name: str) -> list[uuid.UUID]:
    return list((await conn.execute(sa.select(t.groups.c.id).where(t.groups.c.domain_name == domain_name))).scalars())


async def project_in_domain(conn: AsyncConnection, domain_name: str, name_or_id: str) -> sa.Row[Any] | None:
    """The project of ``domain_name`` named ``name_or_id``, or with that UUID."""
    try:
        as_id: uuid.UUID | None = uuid.UUID(name_or_id)
    except ValueError:
        as_id = None
    cond = t.groups.c.name == name_or_id if as_id is None else sa.or_(t.groups.c.id == as_id,
                                                                      t.groups.c.name == name_or_id)
    q = sa.select(t.groups).where(t.groups.c.domain_name == domain_name, cond)
    return (await conn.execute(q)).first()


async def user_by_email(conn: AsyncConnection, email: str) -> Any:
    q = sa.select(t.users.c.uuid, t.users.c.email, t.users.c.domain_name, t.users.c.role).where(
        t.users.c.email == email)
    return (await conn.execute(q)).first()


async def keypair_policy_name(conn: AsyncConnection, access_key: str) -> str | None:
    q = sa.select(t.keypairs.c.resource_policy).where(t.keypairs.c.access_key == access_key)
    return (await conn.execute(q)).scalar()


# ------------------------------------------------------------------ volume-host permissions

def _merge(into: dict[str, set[str]], hosts: Mapping[str, Any] | None) -> None:
    for host, perms in (hosts or {}).items():
        if isinstance(perms, list):
            into.setdefault(host, set()).update(str(p) for p in perms)


async def host_permissions(conn: AsyncConnection, *, domain_name: str, user_uuid: uuid.UUID,
                           access_key: str, group_id: uuid.UUID | None = None) -> dict[str, set[str]]:
    """The union of the domain's, the projects' (``group_id``'s, else every project the user
    belongs to) and the keypair policy's ``allowed_vfolder_hosts`` (the original's rule)."""
    # One round trip: the three grants as one UNION ALL (this runs for every file a client
    # uploads or downloads).
    domain_q = sa.select(t.domains.c.allowed_vfolder_hosts.label("hosts")).where(
        t.domains.c.name == domain_name, t.domains.c.is_active.is_(True))
    if group_id is not None:
        group_q = sa.select(t.groups.c.allowed_vfolder_hosts.label("hosts")).where(
            t.groups.c.domain_name == domain_name, t.groups.c.id == group_id)
    else:
        group_q = (sa.select(t.groups.c.allowed_vfolder_hosts.label("hosts"))
                   .select_from(t.groups.join(_members, _members.c.group_id == t.groups.c.id))
                   .where(t.groups.c.domain_name == domain_name, _members.c.user_id == user_uuid))
    policy_q = (sa.select(t.keypair_resource_policies.c.allowed_vfolder_hosts.label("hosts"))
                .select_from(t.keypairs.join(t.keypair_resource_policies,
                                             t.keypairs.c.resource_policy == t.keypair_resource_policies.c.name))
                .where(t.keypairs.c.access_key == access_key))
    allowed: dict[str, set[str]] = {}
    for hosts in (await conn.execute(sa.union_all(domain_q, group_q, policy_q))).scalars():
        _merge(allowed, hosts)
    return allowed


# ------------------------------------------------------------------ quota scopes and limits

async def user_policy_limits(conn: AsyncConnection, user_uuid: uuid.UUID) -> tuple[int, int]:
    """(max_vfolder_count, max_quota_scope_size) of the user's resource policy; (0, -1) without one."""
    q = (sa.select(t.user_resource_policies.c.max_vfolder_count, t.user_resource_policies.c.max_quota_scope_size)
         .select_from(t.users.join(t.user_resource_policies,
                                   t.users.c.resource_policy == t.user_resource_policies.c.name))
         .where(t.users.c.uuid == user_uuid))
    row = (await conn.execute(q)).first()
    return (0, -1) if row is None else (int(row[0]), int(row[1]))


async def project_policy_limits(conn: AsyncConnection, group_id: uuid.UUID) -> tuple[int, int]:
    q = (sa.select(t.project_resource_policies.c.max_vfolder_count,
                   t.project_resource_policies.c.max_quota_scope_size)
         .select_from(t.groups.join(t.project_resource_policies,
                                    t.groups.c.resource_policy == t.project_resource_policies.c.name))
         .where(t.groups.c.id == group_id))
    row = (await conn.execute(q)).first()
    return (0, -1) if row is None else (int(row[0]), int(row[1]))


async def owned_count(conn: AsyncConnection, *, user: uuid.UUID | None = None, group: uuid.UUID | None = None,
                      lock: bool = False) -> int:
    """Folders the user (or project) owns that still hold data (live or in the trash).
    ``lock`` serialises concurrent creations for one owner (an advisory transaction lock), so
    two requests cannot both pass a max_vfolder_count check."""
    owner = user if user is not None else group
    if lock and owner is not None:
        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(f"vfolder-owner:{owner}"))))
    q = sa.select(sa.func.count()).select_from(_vf).where(
        _vf.c.status.not_in(["delete-complete", "delete-ongoing", "delete-error"]))
    q = q.where(_vf.c.user == user) if user is not None else q.where(_vf.c.group == group)
    return int((await conn.execute(q)).scalar() or 0)


async def name_taken(conn: AsyncConnection, name: str, *, user: uuid.UUID | None = None,
                     group: uuid.UUID | None = None) -> bool:
    """A live folder of this owner already has ``name`` (trashed ones do not count, as the
    database's one-live-name index says; restoring one checks again)."""
    q = sa.select(_vf.c.id).where(_vf.c.name == name, _vf.c.status.not_in(sorted(DEAD_STATUSES)))
    q = q.where(_vf.c.user == user) if user is not None else q.where(_vf.c.group == group)
    return (await conn.execute(q.limit(1))).first() is not None


async def mounted_by_live_session(conn: AsyncConnection, vfid: str) -> bool:
    """Some session not yet terminated mounts the folder (sessions.vfolder_mounts)."""
    q = sa.select(t.sessions.c.id).where(
        t.sessions.c.status.not_in(["TERMINATED", "CANCELLED"]),
        t.sessions.c.vfolder_mounts.contains([{"vfid": vfid}]),
    ).limit(1)
    return (await conn.execute(q)).first() is not None


# ------------------------------------------------------------------ writes

async def insert_folder(conn: AsyncConnection, values: Mapping[str, Any]) -> sa.Row[Any]:
    row = (await conn.execute(sa.insert(_vf).values(**values).returning(*_vf.c))).one()
    return row


async def update_folder(conn: AsyncConnection, folder_id: uuid.UUID, values: Mapping[str, Any]) -> None:
    await conn.execute(sa.update(_vf).where(_vf.c.id == folder_id).values(**values))


async def set_status(conn: AsyncConnection, folder_id: uuid.UUID, status: str, *,
                     only_from: Collection[str] | None = None) -> bool:
    """Move the folder to ``status`` (recorded in status_history); with ``only_from``, only if it
    is in one of those statuses now. False when nothing changed (another request got there first)."""
    q = sa.update(_vf).where(_vf.c.id == folder_id).values(
        status=status, status_changed=sa.func.now(),
        status_history=_vf.c.status_history.op("||")(
            sa.func.jsonb_build_object(status, sa.func.to_char(
                sa.func.timezone("UTC", sa.func.now()), 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'))),
    )
    if only_from is not None:
        q = q.where(_vf.c.status.in_(list(only_from)))
    return bool((await conn.execute(q)).rowcount)


async def folder_for_write(conn: AsyncConnection, folder_id: uuid.UUID) -> sa.Row[Any] | None:
    """The folder row, held until the transaction ends."""
    return (await conn.execute(sa.select(_vf).where(_vf.c.id == folder_id).with_for_update())).first()


async def delete_folder_row(conn: AsyncConnection, folder_id: uuid.UUID) -> None:
    await conn.execute(sa.delete(_vf).where(_vf.c.id == folder_id))


async def drop_shares(conn: AsyncConnection, folder_id: uuid.UUID) -> None:
    """A folder leaving the live set takes its grants with it (invitees lose it)."""
    await conn.execute(sa.delete(_vp).where(_vp.c.vfolder == folder_id))
    await conn.execute(sa.update(t.vfolder_invitations).where(
        t.vfolder_invitations.c.vfolder == folder_id, t.vfolder_invitations.c.state == "pending",
    ).values(state="canceled", modified_at=sa.func.now()))


async def drop_share_of(conn: AsyncConnection, folder_id: uuid.UUID, user_uuid: uuid.UUID) -> None:
    await conn.execute(sa.delete(_vp).where(_vp.c.vfolder == folder_id, _vp.c.user == user_uuid))


# ------------------------------------------------------------------ GraphQL lists

#: ``filter`` / ``order`` fields of vfolder_list (the original's VirtualFolder queryfilter fields).
FILTER_FIELDS: dict[str, qf.Field] = {
    "id": qf.Field(_vf.c.id, "uuid"),
    "host": qf.Field(_vf.c.host, "str"),
    "quota_scope_id": qf.Field(_vf.c.quota_scope_id, "str"),
    "name": qf.Field(_vf.c.name, "str"),
    "group": qf.Field(_vf.c.group, "uuid"),
    "group_name": qf.Field(t.groups.c.name, "str"),
    "user": qf.Field(_vf.c.user, "uuid"),
    "user_email": qf.Field(t.users.c.email, "str"),
    "creator": qf.Field(_vf.c.creator, "str"),
    "unmanaged_path": qf.Field(_vf.c.unmanaged_path, "str"),
    "usage_mode": qf.enum(_vf.c.usage_mode, ("general", "model", "data"), str.lower),
    "permission": qf.enum(_vf.c.permission, ("ro", "rw", "wd"), str.lower),
    "ownership_type": qf.enum(_vf.c.ownership_type, ("user", "group"), str.lower),
    "max_files": qf.Field(_vf.c.max_files, "int"),
    "max_size": qf.Field(_vf.c.max_size, "int"),
    "cur_size": qf.Field(_vf.c.cur_size, "int"),
    "num_files": qf.Field(_vf.c.num_files, "int"),
    "created_at": qf.Field(_vf.c.created_at, "datetime"),
    "last_used": qf.Field(_vf.c.last_used, "datetime"),
    "cloneable": qf.Field(_vf.c.cloneable, "bool"),
    "status": qf.enum(_vf.c.status, sorted(ALL_STATUSES), str.lower),
}


#: Which folders a GraphQL list starts from.
LIST_SCOPES = ("any", "reach", "own", "invited", "project")


def list_query(scope: str, viewer: uuid.UUID, project_ids: Sequence[uuid.UUID] | None, *,
               types: Collection[str] = ("user", "group"), domain_name: str | None = None,
               group_id: uuid.UUID | None = None, owner_user: uuid.UUID | None = None) -> sa.Select[Any]:
    """The base of a vfolder list: ``any`` folder (admins; within ``domain_name`` when given),
    what ``viewer`` reaches, or of that only their ``own``, the ``invited`` (shared with them)
    or the ``project`` folders; narrowed to a project or an owning user."""
    if scope == "any":
        q = any_folder_query(viewer)
        if domain_name is not None:
            q = q.where(sa.or_(t.users.c.domain_name == domain_name, t.groups.c.domain_name == domain_name))
    else:
        q = reach_query(viewer, project_ids, types=types)
        if scope == "own":
            q = q.where(_vf.c.user == viewer)
        elif scope == "invited":
            q = q.where(_vf.c.user != viewer, _vp.c.user.is_not(None), _vf.c.user.is_not(None))
        elif scope == "project":
            q = q.where(_vf.c.group.is_not(None))
    if group_id is not None:
        q = q.where(_vf.c.group == group_id)
    if owner_user is not None:
        q = q.where(_vf.c.user == owner_user)
    return q


async def keypair_owner(conn: AsyncConnection, access_key: str) -> Any:
    """(user uuid, domain) of a keypair, or None."""
    q = (sa.select(t.users.c.uuid, t.users.c.domain_name)
         .select_from(t.keypairs.join(t.users, t.users.c.uuid == t.keypairs.c.user))
         .where(t.keypairs.c.access_key == access_key))
    return (await conn.execute(q)).first()


async def scope_owner_domain(conn: AsyncConnection, kind: str, owner: uuid.UUID) -> str | None:
    """The domain of a quota scope's user or project; None when it does not exist."""
    if kind == "user":
        q = sa.select(t.users.c.domain_name).where(t.users.c.uuid == owner)
    else:
        q = sa.select(t.groups.c.domain_name).where(t.groups.c.id == owner)
    return (await conn.execute(q)).scalar()


async def folder_page(conn: AsyncConnection, base: sa.Select[Any], *, limit: int, offset: int,
                      filter_: str | None, order: str | None) -> tuple[list[sa.Row[Any]], int]:
    """One page of ``base`` (a reach_query / any_folder_query) with filter and order; raises
    QueryError on a bad filter or order."""
    if filter_:
        base = base.where(qf.where(filter_, FILTER_FIELDS))
    total = int((await conn.execute(sa.select(sa.func.count()).select_from(base.subquery()))).scalar() or 0)
    ordering = qf.order_by(order, FILTER_FIELDS) if order else []
    rows = (await conn.execute(base.order_by(*ordering, _vf.c.created_at, _vf.c.id).limit(limit).offset(offset))).all()
    return list(rows), total
