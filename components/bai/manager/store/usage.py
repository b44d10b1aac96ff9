"""What sessions hold right now: the slots of resource-occupying kernels, summed per keypair,
project, domain or resource group (the original's "occupancy")."""

from __future__ import annotations

import uuid
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bai.common.types import ResourceSlots, slots_from_json

from . import tables as t
from .agents import OCCUPYING_KERNEL_STATUSES

_k = t.kernels.c


async def occupied(conn: AsyncConnection, *, access_key: str | None = None, user_uuid: uuid.UUID | None = None,
                   group_id: uuid.UUID | None = None, domain_name: str | None = None,
                   scaling_group: str | None = None) -> ResourceSlots:
    """The summed requested slots of the kernels that hold resources, of the given owner(s)."""
    conds: list[sa.ColumnElement[bool]] = [_k.status.in_(OCCUPYING_KERNEL_STATUSES)]
    if access_key is not None:
        conds.append(_k.access_key == access_key)
    if user_uuid is not None:
        conds.append(_k.user_uuid == user_uuid)
    if group_id is not None:
        conds.append(_k.group_id == group_id)
    if domain_name is not None:
        conds.append(_k.domain_name == domain_name)
    if scaling_group is not None:
        conds.append(_k.scaling_group == scaling_group)
    total: ResourceSlots = {}
    for (slots,) in await conn.execute(sa.select(_k.requested_slots).where(*conds)):
        for name, amount in slots_from_json(slots).items():
            total[name] = total.get(name, Decimal(0)) + amount
    return total


async def slot_limits(conn: AsyncConnection, group_id: uuid.UUID, domain_name: str) -> tuple[dict[str, str], dict[str, str]]:
    """``total_resource_slots`` of the project and of the domain (missing slots: unlimited)."""
    group = await conn.scalar(sa.select(t.groups.c.total_resource_slots).where(t.groups.c.id == group_id))
    domain = await conn.scalar(sa.select(t.domains.c.total_resource_slots).where(t.domains.c.name == domain_name))
    return dict(group or {}), dict(domain or {})
