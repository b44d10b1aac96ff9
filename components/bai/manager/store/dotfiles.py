"""Dotfiles and the stored bootstrap script: a keypair's, a domain's and a project's lists of
``{path, perm, data}`` (JSONB), read for update so a change is one read-modify-write under a
row lock (two concurrent creates cannot both pass the size and duplicate checks)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t

Dotfile = dict[str, str]


@dataclass(frozen=True)
class KeypairScope:
    """The keypair a user-config call acts on, with what authorisation needs of its user."""

    access_key: str
    user_uuid: uuid.UUID
    role: str
    domain_name: str


@dataclass(frozen=True)
class Project:
    id: uuid.UUID
    domain_name: str


def _owner_table(kind: str) -> tuple[sa.Table, sa.Column[Any]]:
    if kind == "keypair":
        return t.keypairs, t.keypairs.c.access_key
    if kind == "domain":
        return t.domains, t.domains.c.name
    if kind == "group":
        return t.groups, t.groups.c.id
    raise ValueError(f"unknown dotfile owner kind {kind!r}")


def _clean(raw: Any) -> list[Dotfile]:
    if not isinstance(raw, list):
        return []
    return [{"path": str(d["path"]), "perm": str(d["perm"]), "data": str(d["data"])}
            for d in raw if isinstance(d, dict) and {"path", "perm", "data"} <= d.keys()]


async def dotfiles_of(conn: AsyncConnection, kind: str, key: Any, *, lock: bool = False) -> list[Dotfile] | None:
    """The owner's dotfiles (None: no such owner); ``lock`` holds its row until the transaction ends."""
    table, column = _owner_table(kind)
    q = sa.select(table.c.dotfiles).where(column == key)
    if lock:
        q = q.with_for_update()
    row = (await conn.execute(q)).first()
    return None if row is None else _clean(row.dotfiles)


async def save_dotfiles(conn: AsyncConnection, kind: str, key: Any, dotfiles: list[Dotfile]) -> None:
    table, column = _owner_table(kind)
    await conn.execute(sa.update(table).where(column == key).values(dotfiles=dotfiles))


async def bootstrap_script(conn: AsyncConnection, access_key: str) -> str | None:
    row = (await conn.execute(sa.select(t.keypairs.c.bootstrap_script)
                              .where(t.keypairs.c.access_key == access_key))).first()
    return None if row is None else str(row.bootstrap_script or "")


async def save_bootstrap_script(conn: AsyncConnection, access_key: str, script: str) -> None:
    await conn.execute(sa.update(t.keypairs).where(t.keypairs.c.access_key == access_key)
                       .values(bootstrap_script=script))


async def keypair_scope(conn: AsyncConnection, access_key: str) -> KeypairScope | None:
    row = (await conn.execute(
        sa.select(t.keypairs.c.access_key, t.users.c.uuid, t.users.c.role, t.users.c.domain_name)
        .select_from(t.keypairs.join(t.users, t.users.c.uuid == t.keypairs.c.user))
        .where(t.keypairs.c.access_key == access_key))).first()
    return None if row is None else KeypairScope(row.access_key, row.uuid, row.role, row.domain_name)


async def domain_exists(conn: AsyncConnection, name: str) -> bool:
    return await conn.scalar(sa.select(sa.literal(True)).where(t.domains.c.name == name)) is not None


async def project(conn: AsyncConnection, ref: str, domain_name: str | None) -> Project | None:
    """The project ``ref`` names: by id (in ``domain_name`` when given), or by name in ``domain_name``."""
    try:
        cond = t.groups.c.id == uuid.UUID(ref)
    except ValueError:
        if domain_name is None:
            return None
        cond = t.groups.c.name == ref
    q = sa.select(t.groups.c.id, t.groups.c.domain_name).where(cond)
    if domain_name is not None:
        q = q.where(t.groups.c.domain_name == domain_name)
    row = (await conn.execute(q.limit(1))).first()
    return None if row is None else Project(row.id, row.domain_name)


async def is_member(conn: AsyncConnection, group_id: uuid.UUID, user_uuid: uuid.UUID) -> bool:
    a = t.association_groups_users
    return await conn.scalar(sa.select(sa.literal(True)).where(
        a.c.group_id == group_id, a.c.user_id == user_uuid)) is not None


async def session_dotfiles(conn: AsyncConnection, access_key: str, domain_name: str,
                           group_id: uuid.UUID) -> tuple[list[Dotfile], list[Dotfile], list[Dotfile], str]:
    """What a new session of this keypair in this project gets: the domain's, the project's and
    the keypair's dotfiles, and the keypair's bootstrap script; one round trip."""
    row = (await conn.execute(sa.select(
        sa.select(t.domains.c.dotfiles).where(t.domains.c.name == domain_name).scalar_subquery().label("d"),
        sa.select(t.groups.c.dotfiles).where(t.groups.c.id == group_id).scalar_subquery().label("g"),
        sa.select(t.keypairs.c.dotfiles).where(t.keypairs.c.access_key == access_key)
        .scalar_subquery().label("k"),
        sa.select(t.keypairs.c.bootstrap_script).where(t.keypairs.c.access_key == access_key)
        .scalar_subquery().label("b"),
    ))).one()
    return _clean(row.d), _clean(row.g), _clean(row.k), str(row.b or "")
