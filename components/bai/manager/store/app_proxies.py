"""The app proxy (the original's "wsproxy" coordinator) a resource group uses."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t


async def coordinator_of(conn: AsyncConnection, scaling_group: str) -> Any:
    """``(wsproxy_addr, wsproxy_api_token)`` of the resource group, or None when it does not exist."""
    q = sa.select(t.scaling_groups.c.wsproxy_addr, t.scaling_groups.c.wsproxy_api_token).where(
        t.scaling_groups.c.name == scaling_group)
    return (await conn.execute(q)).first()
