"""Who may see a session's events: the session's owners (cached; fixed for its life), the
projects a requested project name means, and the decision itself."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from bai.manager import errors
from bai.manager.store import access as access_store
from bai.manager.store.keypairs import Requester

from ..context import ManagerContext

__all__ = ["OwnersCache", "SessionOwners", "may_see", "project_ids"]

#: Sessions whose owners (domain, project, user) are kept in memory.
OWNERS_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class SessionOwners:
    """What decides who may see a session's events; fixed for the session's life."""

    domain_name: str
    group_id: uuid.UUID | None
    user_uuid: uuid.UUID | None


class OwnersCache:
    """Sessions' owners, read once each (they never change)."""

    def __init__(self, ctx: ManagerContext, max_entries: int = OWNERS_CACHE_SIZE) -> None:
        self._ctx = ctx
        self._max = max_entries
        self._owners: dict[uuid.UUID, SessionOwners] = {}

    async def get(self, session_id: uuid.UUID) -> SessionOwners | None:
        found = self._owners.get(session_id)
        if found is not None:
            return found
        async with self._ctx.db.connect() as conn:
            row = await access_store.session_owners(conn, session_id)
        if row is None:
            return None
        if len(self._owners) >= self._max:
            self._owners.clear()
        found = self._owners[session_id] = SessionOwners(row.domain_name, row.group_id, row.user_uuid)
        return found


async def may_see(owners: OwnersCache, who: Requester, group_ids: frozenset[uuid.UUID] | None,
                  session_id: object, owner_access_key: object) -> bool:
    """Whether ``who`` may see an event of session ``session_id`` (as the event gives it) owned by
    ``owner_access_key``, in a stream limited to the projects ``group_ids`` (None: any): their own
    sessions, their domain's (admins), every one (superadmins); a user also sees the sessions of
    their own user account."""
    mine = owner_access_key == who.access_key
    if group_ids is None and (who.is_superadmin or mine):
        return True
    try:
        found = await owners.get(uuid.UUID(str(session_id)))
    except ValueError:
        return False
    if found is None:
        return False
    if group_ids is not None and found.group_id not in group_ids:
        return False
    if who.is_superadmin or mine:
        return True
    if found.domain_name != who.domain_name:
        return False
    return who.role == "admin" or found.user_uuid == who.user_uuid


async def project_ids(ctx: ManagerContext, who: Requester, name: str) -> frozenset[uuid.UUID]:
    """The projects called ``name`` that ``who`` may name (superadmins: in any domain); 404 if none."""
    async with ctx.db.connect() as conn:
        ids = await access_store.group_ids_named(conn, name, None if who.is_superadmin else who.domain_name)
    if not ids:
        raise errors.GroupNotFound()
    return ids
