"""Keypair, user and policy lookups used by authentication and quota checks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bai.common.types import ResourceSlots, slots_from_json

from . import tables as t


@dataclass(frozen=True)
class KeypairPolicy:
    name: str
    total_resource_slots: ResourceSlots
    max_concurrent_sessions: int
    max_containers_per_session: int


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

    @property
    def is_superadmin(self) -> bool:
        return self.role == "superadmin"


_requester_q = (
    sa.select(
        t.keypairs.c.access_key, t.keypairs.c.secret_key, t.keypairs.c.is_admin, t.keypairs.c.rate_limit,
        t.users.c.uuid, t.users.c.email, t.users.c.role, t.users.c.domain_name,
        t.keypair_resource_policies.c.name.label("policy_name"),
        t.keypair_resource_policies.c.total_resource_slots,
        t.keypair_resource_policies.c.max_concurrent_sessions,
        t.keypair_resource_policies.c.max_containers_per_session,
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
            row.max_concurrent_sessions, row.max_containers_per_session,
        ),
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
