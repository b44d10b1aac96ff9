"""A new session's dependencies: resolved at create time against the owner's own sessions
(ids or names; an unknown or foreign one refuses the create, nothing is enqueued), and stored
with the session in its transaction. The scheduler does the waiting and the cancelling
(:mod:`..scheduling.dependencies`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from bai.manager import errors
from bai.manager.store import session_dependencies as store

__all__ = ["MAX_DEPENDENCIES", "resolve", "save"]

#: Dependencies one session may name (the request is refused beyond it).
MAX_DEPENDENCIES = 64


async def resolve(conn: AsyncConnection, refs: Sequence[str] | None, access_key: str) -> list[uuid.UUID]:
    """The ids of the sessions ``refs`` names, each once, in the order given; 400 when one is
    not a session of ``access_key`` (the original's answer; a foreign one is not told apart)."""
    if not refs:
        return []
    if len(refs) > MAX_DEPENDENCIES:
        raise errors.InvalidAPIParameters(f"A session may depend on at most {MAX_DEPENDENCIES} sessions.")
    ids: list[uuid.UUID] = []
    for ref in refs:
        row = None if (not ref or "\x00" in ref) else await store.owned_by_ref(conn, ref, access_key)
        if row is None:
            raise errors.InvalidAPIParameters("Unknown session ID or name in the dependency list",
                                              {"session_ref": ref})
        if row.id not in ids:
            ids.append(row.id)
    return ids


async def save(conn: AsyncConnection, session_id: uuid.UUID, depends_on: Sequence[uuid.UUID]) -> None:
    await store.insert(conn, session_id, depends_on)
