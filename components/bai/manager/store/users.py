"""User and credential queries behind the /auth endpoints. Callers own the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from . import filters as qf
from . import tables as t

SIGNUP_RATE_LIMIT = 1000
DEFAULT_POLICY = "default"  # the user resource policy (the keypair policy is configured)
DEFAULT_GROUP = "default"

_user_cols = (t.users.c.uuid, t.users.c.email, t.users.c.username, t.users.c.password,
              t.users.c.status, t.users.c.role, t.users.c.domain_name)


async def login_candidates(conn: AsyncConnection, domain: str, name: str) -> list[Any]:
    """Users of ``domain`` whose email or username is ``name``; an email match comes first."""
    q = (
        sa.select(*_user_cols)
        .where(t.users.c.domain_name == domain, sa.or_(t.users.c.email == name, t.users.c.username == name))
        .order_by(sa.desc(t.users.c.email == name))
    )
    return list((await conn.execute(q)).all())


async def get_user(conn: AsyncConnection, user_uuid: uuid.UUID) -> Any:
    return (await conn.execute(sa.select(*_user_cols).where(t.users.c.uuid == user_uuid))).first()


async def email_of(conn: AsyncConnection, user_uuid: uuid.UUID) -> str | None:
    email: str | None = await conn.scalar(sa.select(t.users.c.email).where(t.users.c.uuid == user_uuid))
    return email


async def pick_keypair(conn: AsyncConnection, user_uuid: uuid.UUID) -> Any:
    """An active keypair of the user, admin keypairs first (then the oldest)."""
    q = (
        sa.select(t.keypairs.c.access_key, t.keypairs.c.secret_key)
        .where(t.keypairs.c.user == user_uuid, t.keypairs.c.is_active.is_(True))
        .order_by(sa.desc(t.keypairs.c.is_admin), t.keypairs.c.created_at, t.keypairs.c.access_key)
        .limit(1)
    )
    return (await conn.execute(q)).first()


async def domain_is_active(conn: AsyncConnection, domain: str) -> bool:
    q = sa.select(t.domains.c.name).where(t.domains.c.name == domain, t.domains.c.is_active.is_(True))
    return await conn.scalar(q) is not None


async def identity_taken(conn: AsyncConnection, email: str, username: str) -> bool:
    q = sa.select(sa.exists().where(sa.or_(t.users.c.email == email, t.users.c.username == username)))
    return bool(await conn.scalar(q))


@dataclass(frozen=True)
class NewUser:
    domain: str
    email: str
    username: str
    password_hash: str
    full_name: str
    description: str
    access_key: str
    secret_key: str
    keypair_policy: str


async def insert_signup(conn: AsyncConnection, new: NewUser) -> uuid.UUID:
    """The user (role user, active), its keypair, and membership of the domain's default project."""
    user_uuid = uuid.uuid4()
    await conn.execute(sa.insert(t.users).values(
        uuid=user_uuid, username=new.username, email=new.email, password=new.password_hash,
        full_name=new.full_name, description=new.description, status="active", status_info="user-signup",
        domain_name=new.domain, role="user", resource_policy=DEFAULT_POLICY, need_password_change=False,
    ))
    await conn.execute(sa.insert(t.keypairs).values(
        access_key=new.access_key, secret_key=new.secret_key, user_id=new.email, user=user_uuid,
        is_active=True, is_admin=False, rate_limit=SIGNUP_RATE_LIMIT, resource_policy=new.keypair_policy,
    ))
    await conn.execute(
        sa.update(t.users).where(t.users.c.uuid == user_uuid).values(main_access_key=new.access_key)
    )
    group_id = await conn.scalar(
        sa.select(t.groups.c.id).where(t.groups.c.domain_name == new.domain, t.groups.c.name == DEFAULT_GROUP)
    )
    if group_id is not None:
        await conn.execute(sa.insert(t.association_groups_users).values(user_id=user_uuid, group_id=group_id))
    return user_uuid


async def deactivate_user(conn: AsyncConnection, user_uuid: uuid.UUID) -> list[str]:
    """Mark the user inactive and deactivate its keypairs; returns their access keys."""
    await conn.execute(sa.update(t.users).where(t.users.c.uuid == user_uuid).values(status="inactive"))
    res = await conn.execute(
        sa.update(t.keypairs).where(t.keypairs.c.user == user_uuid).values(is_active=False)
        .returning(t.keypairs.c.access_key)
    )
    return list(res.scalars().all())


async def set_password(conn: AsyncConnection, user_uuid: uuid.UUID, password_hash: str) -> None:
    await conn.execute(sa.update(t.users).where(t.users.c.uuid == user_uuid).values(
        password=password_hash, need_password_change=False, password_changed_at=sa.func.now(),
    ))


async def set_full_name(conn: AsyncConnection, user_uuid: uuid.UUID, full_name: str) -> None:
    await conn.execute(sa.update(t.users).where(t.users.c.uuid == user_uuid).values(full_name=full_name))


async def is_group_member(conn: AsyncConnection, user_uuid: uuid.UUID, group_id: uuid.UUID) -> bool:
    q = sa.select(t.association_groups_users.c.group_id).where(
        t.association_groups_users.c.user_id == user_uuid, t.association_groups_users.c.group_id == group_id,
    )
    return await conn.scalar(q) is not None


async def get_ssh_public_key(conn: AsyncConnection, access_key: str) -> str | None:
    q = sa.select(t.keypairs.c.ssh_public_key).where(t.keypairs.c.access_key == access_key)
    value: str | None = await conn.scalar(q)
    return value


async def set_ssh_keypair(conn: AsyncConnection, access_key: str, pubkey: str, privkey: str) -> None:
    await conn.execute(sa.update(t.keypairs).where(t.keypairs.c.access_key == access_key).values(
        ssh_public_key=pubkey, ssh_private_key=privkey,
    ))


# ------------------------------------------------------------------ GraphQL reads

USER_STATUSES = frozenset({"active", "inactive", "deleted", "before-verification"})
USER_ROLES = frozenset({"superadmin", "admin", "user", "monitor"})
_u = t.users

#: What ``user_list(filter, order)`` may name.
USER_FIELDS: dict[str, qf.Field] = {
    "uuid": qf.Field(_u.c.uuid, "uuid"),
    "username": qf.Field(_u.c.username, "str"),
    "email": qf.Field(_u.c.email, "str"),
    "need_password_change": qf.Field(_u.c.need_password_change, "bool"),
    "full_name": qf.Field(_u.c.full_name, "str"),
    "description": qf.Field(_u.c.description, "str"),
    "is_active": qf.Field(_u.c.status == "active", "bool"),
    "status": qf.enum(_u.c.status, USER_STATUSES, str.lower),
    "status_info": qf.Field(_u.c.status_info, "str"),
    "created_at": qf.Field(_u.c.created_at, "datetime"),
    "domain_name": qf.Field(_u.c.domain_name, "str"),
    "role": qf.enum(_u.c.role, USER_ROLES, str.lower),
    "resource_policy": qf.Field(_u.c.resource_policy, "str"),
    "main_access_key": qf.Field(_u.c.main_access_key, "str"),
}


async def user_page(
    conn: AsyncConnection, *, domain_name: str | None = None, group_id: uuid.UUID | None = None,
    email: str | None = None, user_uuid: uuid.UUID | None = None, is_active: bool | None = None,
    statuses: Sequence[str] | None = None, filter_: str | None = None, order: str | None = None,
    limit: int | None = None, offset: int = 0,
) -> tuple[list[sa.Row[Any]], int]:
    """Users matching every given condition (password hashes left out), one page and the total
    count. A bad ``filter_`` or ``order`` raises QueryError before any SQL runs."""
    conds: list[sa.ColumnElement[bool]] = []
    if domain_name is not None:
        conds.append(_u.c.domain_name == domain_name)
    if group_id is not None:
        conds.append(_u.c.uuid.in_(sa.select(t.association_groups_users.c.user_id)
                                   .where(t.association_groups_users.c.group_id == group_id)))
    if email is not None:
        conds.append(_u.c.email == email)
    if user_uuid is not None:
        conds.append(_u.c.uuid == user_uuid)
    if is_active is not None:
        conds.append((_u.c.status == "active") if is_active else (_u.c.status != "active"))
    if statuses is not None:
        conds.append(_u.c.status.in_(list(statuses)))
    if filter_ is not None:
        conds.append(qf.where(filter_, USER_FIELDS))
    ordering = [*qf.order_by(order, USER_FIELDS), _u.c.uuid] if order else [_u.c.created_at, _u.c.uuid]
    cols = [c for c in _u.c if c.name != "password"]
    q = sa.select(*cols).where(*conds).order_by(*ordering).offset(offset)
    if limit is not None:
        q = q.limit(limit)
    rows = list((await conn.execute(q)).all())
    if limit is None and offset == 0:
        return rows, len(rows)
    total = await conn.scalar(sa.select(sa.func.count()).select_from(_u).where(*conds))
    return rows, int(total or 0)


# ------------------------------------------------------------------ GraphQL writes

#: Sessions in these statuses are over: they hold nothing and do not keep their owner alive.
DEAD_SESSION_STATUSES = ("TERMINATED", "CANCELLED")


@dataclass(frozen=True)
class Account:
    """The columns a write checks before touching a user."""

    uuid: uuid.UUID
    email: str
    domain_name: str
    role: str
    status: str
    main_access_key: str | None


async def account_by_email(conn: AsyncConnection, email: str, *, lock: bool = False) -> Account | None:
    """The user with this email; ``lock`` holds its row until the transaction ends."""
    q = sa.select(_u.c.uuid, _u.c.email, _u.c.domain_name, _u.c.role, _u.c.status,
                  _u.c.main_access_key).where(_u.c.email == email)
    if lock:
        q = q.with_for_update()
    row = (await conn.execute(q)).first()
    return None if row is None else Account(row.uuid, row.email, row.domain_name, row.role, row.status,
                                            row.main_access_key)


async def accounts_by_uuid(conn: AsyncConnection, uuids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Account]:
    q = sa.select(_u.c.uuid, _u.c.email, _u.c.domain_name, _u.c.role, _u.c.status,
                  _u.c.main_access_key).where(_u.c.uuid.in_(list(uuids)))
    return {r.uuid: Account(r.uuid, r.email, r.domain_name, r.role, r.status, r.main_access_key)
            for r in await conn.execute(q)}


async def identity_in_use(conn: AsyncConnection, email: str | None, username: str | None,
                          *, besides: uuid.UUID | None = None) -> str | None:
    """``"email"`` or ``"username"`` when another user already has it, else None."""
    for column, value in (("email", email), ("username", username)):
        if value is None:
            continue
        q = sa.select(_u.c.uuid).where(_u.c[column] == value)
        if besides is not None:
            q = q.where(_u.c.uuid != besides)
        if await conn.scalar(q.limit(1)) is not None:
            return column
    return None


async def insert_user(conn: AsyncConnection, values: dict[str, Any]) -> uuid.UUID:
    """A new user row (``values`` = column -> value, password already hashed)."""
    user_uuid = uuid.uuid4()
    await conn.execute(sa.insert(_u).values(uuid=user_uuid, **values))
    return user_uuid


async def update_user(conn: AsyncConnection, user_uuid: uuid.UUID, values: dict[str, Any]) -> None:
    """Set ``values`` (column -> value) and ``modified_at``; a totp flag change stamps its time."""
    values = dict(values)
    if "totp_activated" in values:
        values["totp_activated_at"] = sa.func.now() if values["totp_activated"] else None
    if "password" in values:
        values["password_changed_at"] = sa.func.now()
    await conn.execute(sa.update(_u).where(_u.c.uuid == user_uuid).values(**values, modified_at=sa.func.now()))


async def project_ids_in_domain(conn: AsyncConnection, domain: str, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Which of ``ids`` are projects of ``domain``."""
    if not ids:
        return set()
    q = sa.select(t.groups.c.id).where(t.groups.c.domain_name == domain, t.groups.c.id.in_(list(ids)))
    return set((await conn.execute(q)).scalars().all())


async def set_memberships(conn: AsyncConnection, user_uuid: uuid.UUID, group_ids: Sequence[uuid.UUID]) -> None:
    """The user belongs to exactly ``group_ids`` afterwards."""
    a = t.association_groups_users
    await conn.execute(sa.delete(a).where(a.c.user_id == user_uuid))
    if group_ids:
        await conn.execute(sa.insert(a).values([{"user_id": user_uuid, "group_id": g} for g in group_ids]))


async def set_keypairs_admin(conn: AsyncConnection, user_uuid: uuid.UUID, is_admin: bool) -> list[str]:
    """Follow a role change: the user's keypairs carry admin rights exactly when its role does."""
    res = await conn.execute(
        sa.update(t.keypairs).where(t.keypairs.c.user == user_uuid)
        .values(is_admin=is_admin, modified_at=sa.func.now()).returning(t.keypairs.c.access_key))
    return list(res.scalars().all())


async def mark_deleted(conn: AsyncConnection, user_uuid: uuid.UUID) -> list[str]:
    """Soft delete: status ``deleted`` and every keypair of the user inactive; their access keys."""
    await conn.execute(sa.update(_u).where(_u.c.uuid == user_uuid).values(
        status="deleted", status_info="admin-requested", modified_at=sa.func.now()))
    res = await conn.execute(
        sa.update(t.keypairs).where(t.keypairs.c.user == user_uuid)
        .values(is_active=False, modified_at=sa.func.now()).returning(t.keypairs.c.access_key))
    return list(res.scalars().all())


async def live_session_count(conn: AsyncConnection, *, user_uuid: uuid.UUID | None = None,
                             group_id: uuid.UUID | None = None, domain_name: str | None = None,
                             access_key: str | None = None) -> int:
    """Sessions not yet TERMINATED/CANCELLED of a user, project, domain or access key."""
    s = t.sessions
    q = sa.select(sa.func.count()).select_from(s).where(s.c.status.not_in(DEAD_SESSION_STATUSES))
    for column, value in (("user_uuid", user_uuid), ("group_id", group_id), ("domain_name", domain_name),
                          ("access_key", access_key)):
        if value is not None:
            q = q.where(s.c[column] == value)
    return int(await conn.scalar(q) or 0)


async def delete_dead_sessions(conn: AsyncConnection, *, user_uuid: uuid.UUID | None = None,
                               group_id: uuid.UUID | None = None) -> int:
    """Remove the finished sessions (and with them their kernels) of a user or project being
    purged, as the original does: their rows refer to what is about to go."""
    s = t.sessions
    cond = s.c.user_uuid == user_uuid if user_uuid is not None else s.c.group_id == group_id
    res = await conn.execute(sa.delete(s).where(cond, s.c.status.in_(DEAD_SESSION_STATUSES)))
    return int(res.rowcount or 0)


async def purge_user(conn: AsyncConnection, user_uuid: uuid.UUID) -> list[str]:
    """Hard delete: the user's finished sessions, keypairs, memberships and the user; returns the
    access keys that went. The caller has made sure no live session is left."""
    await delete_dead_sessions(conn, user_uuid=user_uuid)
    res = await conn.execute(
        sa.delete(t.keypairs).where(t.keypairs.c.user == user_uuid).returning(t.keypairs.c.access_key))
    keys = list(res.scalars().all())
    await conn.execute(sa.delete(_u).where(_u.c.uuid == user_uuid))  # memberships cascade
    return keys
