"""Image registry: images learned from agent heartbeats and their aliases."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t


@dataclass(frozen=True)
class ImageRow:
    name: str
    architecture: str
    registry: str
    labels: dict[str, str]


def split_registry(canonical: str) -> tuple[str, str | None]:
    """``bai.local/stable/python:3.11-debian12`` -> (``bai.local``, ``3.11-debian12``)."""
    first, _, _rest = canonical.partition("/")
    registry = first if ("." in first or ":" in first) and _rest else "index.docker.io"
    _, sep, tag = canonical.rpartition(":")
    return registry, (tag if sep and "/" not in tag else None)


async def upsert_local_images(conn: AsyncConnection, architecture: str, items: list[dict[str, Any]]) -> None:
    for item in items:
        canonical = item.get("canonical")
        if not canonical:
            continue
        registry, tag = split_registry(canonical)
        stmt = insert(t.images).values(
            id=uuid.uuid4(), name=canonical, architecture=architecture, registry=registry, tag=tag,
            config_digest=item.get("digest"), labels=item.get("labels") or {}, is_local=True,
        )
        await conn.execute(stmt.on_conflict_do_update(
            constraint="uq_images_name_architecture",
            set_={"config_digest": stmt.excluded.config_digest, "labels": stmt.excluded.labels},
            where=t.images.c.config_digest.is_distinct_from(stmt.excluded.config_digest),
        ))


async def labels_of(conn: AsyncConnection, name: str, architecture: str) -> dict[str, str] | None:
    labels: dict[str, str] | None = await conn.scalar(sa.select(t.images.c.labels).where(
        t.images.c.name == name, t.images.c.architecture == architecture))
    return labels


async def resolve(conn: AsyncConnection, ref: str, architecture: str) -> ImageRow | None:
    """By canonical name, or through an alias."""
    alias_target = await conn.scalar(sa.select(t.image_aliases.c.image).where(t.image_aliases.c.alias == ref))
    name = alias_target or ref
    row = (await conn.execute(
        sa.select(t.images.c.name, t.images.c.architecture, t.images.c.registry, t.images.c.labels)
        .where(t.images.c.name == name, t.images.c.architecture == architecture)
    )).first()
    return None if row is None else ImageRow(row.name, row.architecture, row.registry, dict(row.labels))
