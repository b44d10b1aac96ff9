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
