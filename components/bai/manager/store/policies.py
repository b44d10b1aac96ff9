"""Resource policies (keypair, user, project): reads for the GraphQL admin API and the
superadmin's writes. Every write runs on the caller's connection, inside its transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t

_p = t.keypair_resource_policies

#: Policy kind -> (its table, the table whose ``resource_policy`` column refers to it).
POLICY_TABLES: dict[str, tuple[sa.Table, sa.Table]] = {
    "keypair": (t.keypair_resource_policies, t.keypairs),
    "user": (t.user_resource_policies, t.users),
    "project": (t.project_resource_policies, t.groups),
}


async def keypair_policies(
    conn: AsyncConnection, *, name: str | None = None, domain_name: str | None = None,
    access_key: str | None = None,
) -> list[sa.Row[Any]]:
    """Keypair resource policies by name; with ``domain_name`` only those some keypair of that
    domain uses, with ``access_key`` only that keypair's (the original's scoping)."""
    q = sa.select(_p).order_by(_p.c.name)
    if name is not None:
        q = q.where(_p.c.name == name)
    if domain_name is not None or access_key is not None:
        used = (sa.select(t.keypairs.c.resource_policy)
                .select_from(t.keypairs.join(t.users, t.users.c.uuid == t.keypairs.c.user)))
        if domain_name is not None:
            used = used.where(t.users.c.domain_name == domain_name)
        if access_key is not None:
            used = used.where(t.keypairs.c.access_key == access_key)
        q = q.where(_p.c.name.in_(used))
    return list((await conn.execute(q)).all())


async def user_policies(conn: AsyncConnection, *, name: str | None = None,
                        user_uuid: uuid.UUID | None = None) -> list[sa.Row[Any]]:
    """User resource policies by name; with ``user_uuid`` only that user's."""
    p = t.user_resource_policies
    q = sa.select(p).order_by(p.c.name)
    if name is not None:
        q = q.where(p.c.name == name)
    if user_uuid is not None:
        q = q.where(p.c.name == sa.select(t.users.c.resource_policy).where(t.users.c.uuid == user_uuid)
                    .scalar_subquery())
    return list((await conn.execute(q)).all())


async def project_policies(conn: AsyncConnection, *, name: str | None = None) -> list[sa.Row[Any]]:
    p = t.project_resource_policies
    q = sa.select(p).order_by(p.c.name)
    if name is not None:
        q = q.where(p.c.name == name)
    return list((await conn.execute(q)).all())


# ------------------------------------------------------------------ writes

async def create_policy(conn: AsyncConnection, kind: str, name: str, values: Mapping[str, Any]) -> sa.Row[Any] | None:
    """The new policy's row; None when one of that name exists (nothing is written)."""
    table = POLICY_TABLES[kind][0]
    stmt = insert(table).values(name=name, **values).on_conflict_do_nothing().returning(table)
    return (await conn.execute(stmt)).first()


async def modify_policy(conn: AsyncConnection, kind: str, name: str, values: Mapping[str, Any]) -> bool:
    """Whether the policy exists (it is changed when ``values`` has anything)."""
    table = POLICY_TABLES[kind][0]
    if not values:
        return bool(await conn.scalar(sa.select(sa.func.count()).select_from(table).where(table.c.name == name)))
    result = await conn.execute(sa.update(table).where(table.c.name == name).values(**values))
    return result.rowcount > 0


async def policy_users(conn: AsyncConnection, kind: str, name: str) -> int:
    """How many keypairs / users / projects the policy bounds (it cannot go while any does), the
    policy row locked against a concurrent assignment."""
    table, users = POLICY_TABLES[kind]
    await conn.execute(sa.select(table.c.name).where(table.c.name == name).with_for_update())
    count = await conn.scalar(sa.select(sa.func.count()).select_from(users).where(users.c.resource_policy == name))
    return int(count or 0)


async def delete_policy(conn: AsyncConnection, kind: str, name: str) -> bool:
    table = POLICY_TABLES[kind][0]
    result = await conn.execute(sa.delete(table).where(table.c.name == name))
    return result.rowcount > 0
