"""SQL of keypair rotation: a successor keypair for an access key, the old one's retirement at the
end of its grace period, and which keypair a password login hands out. Callers own the
transaction."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t

_k, _r, _u = t.keypairs, t.keypair_rotations, t.users


async def lock_keypair(conn: AsyncConnection, access_key: str) -> Any:
    """The keypair with its user's uuid, role, domain and main key, locked for the transaction;
    and whether it was already rotated (``rotated``) — None when there is no such keypair."""
    q = (
        sa.select(_k.c.access_key, _k.c.is_active, _k.c.user.label("user_uuid"), _u.c.role, _u.c.domain_name,
                  _u.c.main_access_key, _r.c.new_access_key.is_not(None).label("rotated"))
        .select_from(_k.join(_u, _u.c.uuid == _k.c.user).outerjoin(_r, _r.c.old_access_key == _k.c.access_key))
        .where(_k.c.access_key == access_key)
        .with_for_update(of=_k)
    )
    return (await conn.execute(q)).first()


async def insert_successor(conn: AsyncConnection, old_access_key: str, access_key: str, secret_key: str) -> None:
    """A new active keypair of the same user with the old one's admin flag, rate limit, policy
    and SSH keys (so everything the old key could do, the new one can)."""
    copied = ("user_id", "user", "is_admin", "rate_limit", "resource_policy", "ssh_public_key", "ssh_private_key")
    src = sa.select(sa.literal(access_key), sa.literal(secret_key), sa.true(),
                    *(_k.c[c] for c in copied)).where(_k.c.access_key == old_access_key)
    await conn.execute(sa.insert(_k).from_select(["access_key", "secret_key", "is_active", *copied], src))


async def record_rotation(conn: AsyncConnection, old_access_key: str, new_access_key: str, *,
                          rotated_by: str, expires_at: datetime, retire_now: bool) -> None:
    await conn.execute(sa.insert(_r).values(
        old_access_key=old_access_key, new_access_key=new_access_key, rotated_by=rotated_by,
        expires_at=expires_at, retired_at=sa.func.now() if retire_now else None,
    ))
    if retire_now:
        await conn.execute(sa.update(_k).where(_k.c.access_key == old_access_key).values(is_active=False))


async def set_main_key(conn: AsyncConnection, user_uuid: uuid.UUID, access_key: str) -> None:
    await conn.execute(sa.update(_u).where(_u.c.uuid == user_uuid).values(main_access_key=access_key))


async def retire_expired(conn: AsyncConnection) -> list[str]:
    """Deactivate every rotated keypair whose grace period is over; their access keys."""
    due = (await conn.execute(
        sa.update(_r).where(_r.c.retired_at.is_(None), _r.c.expires_at <= sa.func.now())
        .values(retired_at=sa.func.now()).returning(_r.c.old_access_key)
    )).scalars().all()
    if due:
        await conn.execute(sa.update(_k).where(_k.c.access_key.in_(due)).values(is_active=False))
    return list(due)


async def login_keypair(conn: AsyncConnection, user_uuid: uuid.UUID) -> Any:
    """The keypair a password login hands out: an active one, not one in its grace period after a
    rotation (unless it is all there is), admin keypairs first, then the oldest (the original's)."""
    retiring = sa.exists().where(_r.c.old_access_key == _k.c.access_key)
    q = (
        sa.select(_k.c.access_key, _k.c.secret_key)
        .where(_k.c.user == user_uuid, _k.c.is_active.is_(True))
        .order_by(retiring.asc(), sa.desc(_k.c.is_admin), _k.c.created_at, _k.c.access_key)
        .limit(1)
    )
    return (await conn.execute(q)).first()
