"""Who may see a session's events: the session's owners (cached; fixed for its life) and the
projects a requested project name means."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from bai.manager import errors
from bai.manager.store import access as access_store
from bai.manager.store.keypairs import Requester

from ..context import ManagerContext

__all__ = ["SessionScope", "SessionScopes", "project_ids"]

SCOPE_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class SessionScope:
    """What decides who may see a session's events; fixed for the session's life."""

    domain_name: str
    group_id: uuid.UUID | None
    user_uuid: uuid.UUID | None


class SessionScopes:
    """Sessions' scopes, read once each (a session's owners never change)."""

    def __init__(self, ctx: ManagerContext, max_entries: int = SCOPE_CACHE_SIZE) -> None:
        self._ctx = ctx
        self._max = max_entries
        self._scopes: dict[uuid.UUID, SessionScope] = {}

    async def get(self, session_id: uuid.UUID) -> SessionScope | None:
        found = self._scopes.get(session_id)
        if found is not None:
            return found
        async with self._ctx.db.connect() as conn:
            row = await access_store.session_owners(conn, session_id)
        if row is None:
            return None
        if len(self._scopes) >= self._max:
            self._scopes.clear()
        found = self._scopes[session_id] = SessionScope(row.domain_name, row.group_id, row.user_uuid)
        return found


async def project_ids(ctx: ManagerContext, who: Requester, name: str) -> frozenset[uuid.UUID]:
    """The projects called ``name`` that ``who`` may name (superadmins: in any domain); 404 if none."""
    async with ctx.db.connect() as conn:
        ids = await access_store.group_ids_named(conn, name, None if who.is_superadmin else who.domain_name)
    if not ids:
        raise errors.GroupNotFound()
    return ids
