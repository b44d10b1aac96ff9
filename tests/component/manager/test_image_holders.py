"""Which agents hold an image (``images.installed_agents``): heartbeats and commits agree.

A heartbeat lists the agent's images when it is sent; a commit on that agent may register a new
image before the manager handles that heartbeat. The older list must not take the agent off the
new image's holders (CI saw a just-committed image held by no agent, so forget asked no one).
"""
from __future__ import annotations

import secrets

import sqlalchemy as sa

from bai.manager.store import images as image_store
from bai.manager.store import tables as t

from .conftest import ManagerDB

ARCH = "x86_64"


async def holders(db: ManagerDB, name: str) -> list[str]:
    async with db.engine.connect() as conn:
        found = await conn.scalar(sa.select(t.images.c.installed_agents).where(t.images.c.name == name))
    return list(found)


async def test_a_heartbeat_older_than_a_commit_keeps_the_committing_agent(manager_db: ManagerDB) -> None:
    agent = f"i-{secrets.token_hex(4)}"
    kernel = f"bai.local/stable/k-{secrets.token_hex(3)}:1"
    saved = f"{kernel}-customized_{secrets.token_hex(16)}"
    async with manager_db.engine.begin() as conn:
        await image_store.upsert_local_images(conn, ARCH, [{"canonical": kernel, "digest": "sha256:a"}])
        await image_store.note_installed(conn, agent, ARCH, [kernel], settle_seconds=40)
        await image_store.register_customized(conn, saved, ARCH, "sha256:b", {}, agent)
    assert await holders(manager_db, saved) == [agent]

    # The heartbeat taken before the commit (only the kernel image) is handled now: the agent
    # stays a holder of the image it has just committed.
    async with manager_db.engine.begin() as conn:
        await image_store.note_installed(conn, agent, ARCH, [kernel], settle_seconds=40)
    assert await holders(manager_db, saved) == [agent]
    assert await holders(manager_db, kernel) == [agent]

    # Once no heartbeat that old can be handled, the list is the truth again, both ways.
    async with manager_db.engine.begin() as conn:
        await image_store.note_installed(conn, agent, ARCH, [kernel], settle_seconds=0)
    assert await holders(manager_db, saved) == []
    async with manager_db.engine.begin() as conn:
        await image_store.note_installed(conn, agent, ARCH, [saved], settle_seconds=40)
    assert await holders(manager_db, saved) == [agent]
    assert await holders(manager_db, kernel) == []  # never registered by a commit: no grace
