"""Keypair, user and policy lookups used by authentication and quota checks."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bai.common.types import ResourceSlots, slots_from_json

from . import filters as qf
from . import tables as t


@dataclass(frozen=True)
class KeypairPolicy:
    name: str
    total_resource_slots: ResourceSlots
    max_concurrent_sessions: int
    max_containers_per_session: int
    #: LIMITED: a slot absent from total_resource_slots allows 0 (UNLIMITED: no limit)
    default_for_unspecified: str = "UNLIMITED"
    max_pending_session_count: int | None = None
    max_pending_session_resource_slots: ResourceSlots | None = None


@dataclass(frozen=True)
class Requester:
    """Who is calling: the keypair, its user and the policy that bounds it."""

    access_key: str
    secret_key: str
    is_admin: bool
    rate_limit: int | None
    user_uuid: uuid.UUID
    email: str
    role: str
    domain_name: str
    policy: KeypairPolicy
    extra: dict[str, Any] = field(default_factory=dict)
    #: The user's client-address allow list (addresses / CIDRs); None or empty: any address.
    allowed_client_ip: tuple[str, ...] | None = None

    @property
    def is_superadmin(self) -> bool:
        return self.role == "superadmin"


_requester_q = (
    sa.select(
        t.keypairs.c.access_key, t.keypairs.c.secret_key, t.keypairs.c.is_admin, t.keypairs.c.rate_limit,
        t.users.c.uuid, t.users.c.email, t.users.c.role, t.users.c.domain_name, t.users.c.allowed_client_ip,
        t.keypair_resource_policies.c.name.label("policy_name"),
        t.keypair_resource_policies.c.total_resource_slots,
        t.keypair_resource_policies.c.max_concurrent_sessions,
        t.keypair_resource_policies.c.max_containers_per_session,
        t.keypair_resource_policies.c.default_for_unspecified,
        t.keypair_resource_policies.c.max_pending_session_count,
        t.keypair_resource_policies.c.max_pending_session_resource_slots,
    )
    .select_from(
        t.keypairs.join(t.users, t.keypairs.c.user == t.users.c.uuid).join(
            t.keypair_resource_policies, t.keypairs.c.resource_policy == t.keypair_resource_policies.c.name
        )
    )
    .where(t.keypairs.c.is_active.is_(True), t.users.c.status == "active")
)


async def get_requester(conn: AsyncConnection, access_key: str) -> Requester | None:
    row = (await conn.execute(_requester_q.where(t.keypairs.c.access_key == access_key))).first()
    if row is None:
        return None
    return Requester(
        access_key=row.access_key, secret_key=row.secret_key, is_admin=row.is_admin, rate_limit=row.rate_limit,
        user_uuid=row.uuid, email=row.email, role=row.role, domain_name=row.domain_name,
        policy=KeypairPolicy(
            row.policy_name, slots_from_json(row.total_resource_slots),
            row.max_concurrent_sessions, row.max_containers_per_session, row.default_for_unspecified,
            row.max_pending_session_count,
            None if row.max_pending_session_resource_slots is None
            else slots_from_json(row.max_pending_session_resource_slots),
        ),
        allowed_client_ip=tuple(row.allowed_client_ip) if row.allowed_client_ip else None,
    )


async def get_policy(conn: AsyncConnection, name: str) -> KeypairPolicy | None:
    p = t.keypair_resource_policies
    row = (await conn.execute(
        sa.select(p.c.name, p.c.total_resource_slots, p.c.max_concurrent_sessions, p.c.max_containers_per_session)
        .where(p.c.name == name)
    )).first()
    if row is None:
        return None
    return KeypairPolicy(row.name, slots_from_json(row.total_resource_slots),
                         row.max_concurrent_sessions, row.max_containers_per_session)


async def resolve_group(conn: AsyncConnection, domain: str, group: str, user_uuid: uuid.UUID) -> uuid.UUID | None:
    """The project the user belongs to, by name (or id) within the domain."""
    cond = t.groups.c.name == group
    try:
        cond = sa.or_(cond, t.groups.c.id == uuid.UUID(group))
    except ValueError:
        pass
    q = (
        sa.select(t.groups.c.id)
        .select_from(t.groups.join(t.association_groups_users, t.association_groups_users.c.group_id == t.groups.c.id))
        .where(cond, t.groups.c.domain_name == domain, t.groups.c.is_active.is_(True),
               t.association_groups_users.c.user_id == user_uuid)
    )
    return await conn.scalar(q)


# ------------------------------------------------------------------ GraphQL reads

async def keypair_with_user(conn: AsyncConnection, access_key: str, domain_name: str | None) -> sa.Row[Any] | None:
    """The keypair with its user's email, full name and domain (None outside ``domain_name``)."""
    q = (
        sa.select(t.keypairs, t.users.c.email.label("user_email"), t.users.c.full_name.label("full_name"),
                  t.users.c.domain_name.label("domain_name"))
        .select_from(t.keypairs.join(t.users, t.users.c.uuid == t.keypairs.c.user))
        .where(t.keypairs.c.access_key == access_key)
    )
    if domain_name is not None:
        q = q.where(t.users.c.domain_name == domain_name)
    return (await conn.execute(q)).first()


async def concurrency_used(conn: AsyncConnection, access_key: str) -> int:
    """Sessions of the keypair that hold (or are about to hold) agent resources."""
    q = sa.select(sa.func.count()).select_from(t.sessions).where(
        t.sessions.c.access_key == access_key,
        t.sessions.c.status.in_(["SCHEDULED", "PREPARING", "PULLING", "RUNNING", "RESTARTING",
                                 "RUNNING_DEGRADED", "TERMINATING"]),
    )
    return int(await conn.scalar(q) or 0)


_k = t.keypairs

#: What ``keypair_list(filter, order)`` may name.
KEYPAIR_FIELDS: dict[str, qf.Field] = {
    "user_id": qf.Field(_k.c.user_id, "str"),
    "email": qf.Field(t.users.c.email, "str"),
    "full_name": qf.Field(t.users.c.full_name, "str"),
    "access_key": qf.Field(_k.c.access_key, "str"),
    "is_active": qf.Field(_k.c.is_active, "bool"),
    "is_admin": qf.Field(_k.c.is_admin, "bool"),
    "resource_policy": qf.Field(_k.c.resource_policy, "str"),
    "created_at": qf.Field(_k.c.created_at, "datetime"),
    "last_used": qf.Field(_k.c.last_used, "datetime"),
    "rate_limit": qf.Field(_k.c.rate_limit, "int"),
    "num_queries": qf.Field(_k.c.num_queries, "int"),
}


async def keypair_page(
    conn: AsyncConnection, *, domain_name: str | None = None, email: str | None = None,
    is_active: bool | None = None, filter_: str | None = None, order: str | None = None,
    limit: int | None = None, offset: int = 0,
) -> tuple[list[sa.Row[Any]], int]:
    """Keypairs (rows shaped as keypair_with_user's) matching every given condition, one page and
    the total count. A bad ``filter_`` or ``order`` raises QueryError before any SQL runs."""
    conds: list[sa.ColumnElement[bool]] = []
    if domain_name is not None:
        conds.append(t.users.c.domain_name == domain_name)
    if email is not None:
        conds.append(t.users.c.email == email)
    if is_active is not None:
        conds.append(_k.c.is_active.is_(is_active))
    if filter_ is not None:
        conds.append(qf.where(filter_, KEYPAIR_FIELDS))
    ordering = [*qf.order_by(order, KEYPAIR_FIELDS), _k.c.access_key] if order else [_k.c.created_at, _k.c.access_key]
    joined = _k.join(t.users, t.users.c.uuid == _k.c.user)
    q = (sa.select(_k, t.users.c.email.label("user_email"), t.users.c.full_name.label("full_name"),
                   t.users.c.domain_name.label("domain_name"))
         .select_from(joined).where(*conds).order_by(*ordering).offset(offset))
    if limit is not None:
        q = q.limit(limit)
    rows = list((await conn.execute(q)).all())
    if limit is None and offset == 0:
        return rows, len(rows)
    total = await conn.scalar(sa.select(sa.func.count()).select_from(joined).where(*conds))
    return rows, int(total or 0)


async def group_names_of_users(conn: AsyncConnection, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
    """Each user's project names (a keypair's ``projects``), for a whole page in one query."""
    out: dict[uuid.UUID, list[str]] = {u: [] for u in user_ids}
    if not user_ids:
        return out
    a = t.association_groups_users
    q = (sa.select(a.c.user_id, t.groups.c.name).select_from(a.join(t.groups, t.groups.c.id == a.c.group_id))
         .where(a.c.user_id.in_(list(user_ids))).order_by(t.groups.c.name))
    for row in await conn.execute(q):
        out[row.user_id].append(row.name)
    return out


# ------------------------------------------------------------------ GraphQL writes

@dataclass(frozen=True)
class KeypairOwner:
    """A keypair and the user it belongs to, as a write checks them."""

    access_key: str
    user_uuid: uuid.UUID
    email: str
    domain_name: str
    role: str
    is_main: bool  # the user's main access key


async def keypair_owner(conn: AsyncConnection, access_key: str, *, lock: bool = False) -> KeypairOwner | None:
    q = (sa.select(_k.c.access_key, t.users.c.uuid, t.users.c.email, t.users.c.domain_name, t.users.c.role,
                   (t.users.c.main_access_key == _k.c.access_key).label("is_main"))
         .select_from(_k.join(t.users, t.users.c.uuid == _k.c.user)).where(_k.c.access_key == access_key))
    if lock:
        q = q.with_for_update(of=_k)
    row = (await conn.execute(q)).first()
    return None if row is None else KeypairOwner(row.access_key, row.uuid, row.email, row.domain_name, row.role,
                                                 bool(row.is_main))


async def policy_exists(conn: AsyncConnection, name: str) -> bool:
    p = t.keypair_resource_policies
    return await conn.scalar(sa.select(p.c.name).where(p.c.name == name)) is not None


async def insert_keypair(conn: AsyncConnection, *, access_key: str, secret_key: str, user_uuid: uuid.UUID,
                         email: str, is_active: bool, is_admin: bool, rate_limit: int, resource_policy: str) -> None:
    await conn.execute(sa.insert(_k).values(
        access_key=access_key, secret_key=secret_key, user_id=email, user=user_uuid, is_active=is_active,
        is_admin=is_admin, rate_limit=rate_limit, resource_policy=resource_policy))


async def set_main_access_key(conn: AsyncConnection, user_uuid: uuid.UUID, access_key: str) -> None:
    await conn.execute(sa.update(t.users).where(t.users.c.uuid == user_uuid).values(main_access_key=access_key))


async def update_keypair(conn: AsyncConnection, access_key: str, values: dict[str, Any]) -> None:
    await conn.execute(sa.update(_k).where(_k.c.access_key == access_key).values(**values, modified_at=sa.func.now()))


async def delete_keypair(conn: AsyncConnection, access_key: str) -> None:
    """The keypair goes; its finished sessions stay, no longer naming it (the column allows it)."""
    for table in (t.kernels, t.sessions):
        await conn.execute(sa.update(table).where(table.c.access_key == access_key).values(access_key=None))
    await conn.execute(sa.delete(_k).where(_k.c.access_key == access_key))


# ------------------------------------------------------------------ the keypair's SSH keypair

async def ssh_keypair_of(conn: AsyncConnection, access_key: str) -> tuple[str, str] | None:
    """The keypair's stored SSH keypair (public, private), or None when it has none (or no such
    keypair)."""
    row = (await conn.execute(sa.select(t.keypairs.c.ssh_public_key, t.keypairs.c.ssh_private_key)
                              .where(t.keypairs.c.access_key == access_key))).first()
    if row is None or not row.ssh_public_key or not row.ssh_private_key:
        return None
    return str(row.ssh_public_key), str(row.ssh_private_key)


async def set_ssh_keypair_if_none(conn: AsyncConnection, access_key: str, pubkey: str, privkey: str) -> bool:
    """Store an SSH keypair on a keypair that has none; False (nothing changed) when it has one
    already: of two concurrent writers only one wins, and both then read the winner's."""
    c = t.keypairs.c
    result = await conn.execute(sa.update(t.keypairs).where(
        c.access_key == access_key,
        sa.or_(c.ssh_public_key.is_(None), c.ssh_public_key == "",
               c.ssh_private_key.is_(None), c.ssh_private_key == ""),
    ).values(ssh_public_key=pubkey, ssh_private_key=privkey))
    return bool(result.rowcount)
