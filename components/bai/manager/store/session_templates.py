"""The ``session_templates`` table: users' and projects' stored task and cluster templates.

Rows are never deleted here: deleting a template sets ``is_active`` false (the original's soft
delete), so every read below looks at active rows only."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t

__all__ = ["deactivate", "get_active", "insert_templates", "list_active", "update_template"]

_st = t.session_templates

#: A template with its owner's email and its project's name, as lists and checks read it.
_joined = (
    sa.select(_st, t.users.c.email.label("user_email"), t.groups.c.name.label("group_name"))
    .select_from(_st.join(t.users, t.users.c.uuid == _st.c.user_uuid)
                 .outerjoin(t.groups, t.groups.c.id == _st.c.group_id))
    .where(_st.c.is_active.is_(True))
)


def _member_of(user_uuid: uuid.UUID) -> sa.ColumnElement[bool]:
    """The template belongs to one of the user's projects."""
    groups_of_user = sa.select(t.association_groups_users.c.group_id).where(
        t.association_groups_users.c.user_id == user_uuid)
    return _st.c.group_id.in_(groups_of_user)


async def insert_templates(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert the templates (``id``, ``domain_name``, ``group_id``, ``user_uuid``, ``type``,
    ``name``, ``template``) in one statement: all of them or none."""
    if rows:
        await conn.execute(sa.insert(_st), list(rows))


async def get_active(conn: AsyncConnection, template_id: uuid.UUID, kind: str, *,
                     lock: bool = False) -> sa.Row[Any] | None:
    """The active template of this kind, with ``user_email`` and ``group_name``; None if none."""
    q = _joined.where(_st.c.id == template_id, _st.c.type == kind)
    if lock:
        q = q.with_for_update(of=_st)
    return (await conn.execute(q)).first()


async def list_active(conn: AsyncConnection, kind: str, *, visible_to: uuid.UUID | None = None,
                      domain: str | None = None, group_id: uuid.UUID | None = None) -> list[sa.Row[Any]]:
    """Active templates of this kind, oldest first: those ``visible_to`` the user (their own and
    their projects'; None: everyone's), within ``domain`` and of ``group_id`` when given."""
    q = _joined.where(_st.c.type == kind)
    if visible_to is not None:
        q = q.where(sa.or_(_st.c.user_uuid == visible_to, _member_of(visible_to)))
    if domain is not None:
        q = q.where(_st.c.domain_name == domain)
    if group_id is not None:
        q = q.where(_st.c.group_id == group_id)
    return list((await conn.execute(q.order_by(_st.c.created_at, _st.c.id))).all())


async def update_template(conn: AsyncConnection, template_id: uuid.UUID, values: dict[str, Any]) -> None:
    await conn.execute(sa.update(_st).where(_st.c.id == template_id).values(**values))


async def deactivate(conn: AsyncConnection, template_id: uuid.UUID) -> None:
    await conn.execute(sa.update(_st).where(_st.c.id == template_id).values(is_active=False))
