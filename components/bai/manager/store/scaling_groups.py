"""Scaling groups (resource groups): reads for the GraphQL admin API and the REST resource
endpoints, the superadmin's writes, and their associations with domains, projects and keypairs."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t

_s = t.scaling_groups

#: What a resource group can be associated with: the association table, its column naming the
#: other side, and that side's table and key column.
ASSOCIATIONS: dict[str, tuple[sa.Table, str, sa.Table, str]] = {
    "domain": (t.sgroups_for_domains, "domain", t.domains, "name"),
    "group": (t.sgroups_for_groups, "group", t.groups, "id"),
    "keypair": (t.sgroups_for_keypairs, "access_key", t.keypairs, "access_key"),
}


async def scaling_groups(
    conn: AsyncConnection, *, name: str | None = None, is_active: bool | None = None,
    domain_name: str | None = None, group_id: uuid.UUID | None = None, access_key: str | None = None,
) -> list[sa.Row[Any]]:
    """Scaling groups by name and activity; ``domain_name`` / ``group_id`` / ``access_key`` keep
    those associated with that domain / project / keypair."""
    q = sa.select(_s).order_by(_s.c.name)
    if name is not None:
        q = q.where(_s.c.name == name)
    if is_active is not None:
        q = q.where(_s.c.is_active.is_(is_active))
    for kind, key in (("domain", domain_name), ("group", group_id), ("keypair", access_key)):
        if key is not None:
            assoc, column, _, _ = ASSOCIATIONS[kind]
            q = q.where(_s.c.name.in_(sa.select(assoc.c.scaling_group).where(assoc.c[column] == key)))
    return list((await conn.execute(q)).all())


async def allowed_scaling_groups(conn: AsyncConnection, domain_name: str, group_id: uuid.UUID | None,
                                 access_key: str) -> list[sa.Row[Any]]:
    """The active resource groups a session of this keypair in this domain and project may use:
    those associated with the domain, the project or the access key, ordered by name (the
    original's ``query_allowed_sgroups``)."""
    d, g, k = t.sgroups_for_domains, t.sgroups_for_groups, t.sgroups_for_keypairs
    names = sa.union(
        sa.select(d.c.scaling_group).where(d.c.domain == domain_name),
        sa.select(k.c.scaling_group).where(k.c.access_key == access_key),
        *([sa.select(g.c.scaling_group).where(g.c.group == group_id)] if group_id is not None else []),
    )
    q = sa.select(_s).where(_s.c.name.in_(names), _s.c.is_active.is_(True)).order_by(_s.c.name)
    return list((await conn.execute(q)).all())


# ------------------------------------------------------------------ writes

async def create_scaling_group(conn: AsyncConnection, name: str, values: Mapping[str, Any]) -> sa.Row[Any] | None:
    """The new group's row; None when one of that name exists (nothing is written)."""
    stmt = insert(_s).values(name=name, **values).on_conflict_do_nothing().returning(_s)
    return (await conn.execute(stmt)).first()


async def modify_scaling_group(conn: AsyncConnection, name: str, values: Mapping[str, Any]) -> bool:
    """Whether the group exists (it is changed when ``values`` has anything)."""
    if not values:
        return await exists(conn, name)
    return (await conn.execute(sa.update(_s).where(_s.c.name == name).values(**values))).rowcount > 0


async def exists(conn: AsyncConnection, name: str) -> bool:
    return bool(await conn.scalar(sa.select(sa.func.count()).select_from(_s).where(_s.c.name == name)))


async def users_of(conn: AsyncConnection, name: str) -> tuple[int, int]:
    """``(agents, sessions)`` whose rows name the group (any status: their rows refer to it), the
    group row locked so that no agent or session joins it meanwhile."""
    await conn.execute(sa.select(_s.c.name).where(_s.c.name == name).with_for_update())
    agents = await conn.scalar(sa.select(sa.func.count()).select_from(t.agents)
                               .where(t.agents.c.scaling_group == name))
    in_group = sa.or_(t.sessions.c.scaling_group_name == name, t.sessions.c.id.in_(
        sa.select(t.kernels.c.session_id).where(t.kernels.c.scaling_group == name)))
    sessions = await conn.scalar(sa.select(sa.func.count()).select_from(t.sessions).where(in_group))
    return int(agents or 0), int(sessions or 0)


async def delete_scaling_group(conn: AsyncConnection, name: str) -> bool:
    """Deletes the group and (by cascade) its associations."""
    return (await conn.execute(sa.delete(_s).where(_s.c.name == name))).rowcount > 0


async def other_side_exists(conn: AsyncConnection, kind: str, key: Any) -> bool:
    _, _, table, column = ASSOCIATIONS[kind]
    return bool(await conn.scalar(sa.select(sa.func.count()).select_from(table).where(table.c[column] == key)))


async def associate(conn: AsyncConnection, kind: str, scaling_group: str, key: Any) -> bool:
    """Associates the group with a domain / project / keypair that both exist; False when they
    were associated already."""
    assoc, column, _, _ = ASSOCIATIONS[kind]
    stmt = (insert(assoc).values({"scaling_group": scaling_group, column: key})
            .on_conflict_do_nothing().returning(assoc.c.scaling_group))
    return (await conn.execute(stmt)).first() is not None


async def disassociate(conn: AsyncConnection, kind: str, scaling_group: str, key: Any) -> bool:
    """False when they were not associated."""
    assoc, column, _, _ = ASSOCIATIONS[kind]
    result = await conn.execute(sa.delete(assoc).where(assoc.c.scaling_group == scaling_group,
                                                       assoc.c[column] == key))
    return result.rowcount > 0


async def existing(conn: AsyncConnection, names: list[str]) -> set[str]:
    """Which of ``names`` are scaling groups."""
    return set((await conn.execute(sa.select(_s.c.name).where(_s.c.name.in_(names)))).scalars())


async def associated(conn: AsyncConnection, kind: str, names: list[str], key: Any) -> set[str]:
    """Which of the groups ``names`` are associated with the domain / project / keypair ``key``."""
    assoc, column, _, _ = ASSOCIATIONS[kind]
    q = sa.select(assoc.c.scaling_group).where(assoc.c.scaling_group.in_(names), assoc.c[column] == key)
    return set((await conn.execute(q)).scalars())


async def disassociate_all(conn: AsyncConnection, kind: str, key: Any) -> int:
    """Removes every resource group of the domain / project; how many there were."""
    assoc, column, _, _ = ASSOCIATIONS[kind]
    return (await conn.execute(sa.delete(assoc).where(assoc.c[column] == key))).rowcount


async def project_of_domain(conn: AsyncConnection, domain_name: str, ref: str,
                            member: uuid.UUID | None) -> uuid.UUID | None:
    """The active project ``ref`` (name or id) of the domain; with ``member``, only if that user
    belongs to it."""
    cond = t.groups.c.name == ref
    try:
        cond = sa.or_(cond, t.groups.c.id == uuid.UUID(ref))
    except ValueError:
        pass
    q = sa.select(t.groups.c.id).where(cond, t.groups.c.domain_name == domain_name, t.groups.c.is_active.is_(True))
    if member is not None:
        q = q.where(t.groups.c.id.in_(sa.select(t.association_groups_users.c.group_id)
                                      .where(t.association_groups_users.c.user_id == member)))
    return await conn.scalar(q.limit(1))
