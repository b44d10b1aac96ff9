"""A new session's dependencies: resolved at create time against the owner's own sessions
(ids or names; an unknown or foreign one refuses the create, nothing is enqueued), and stored
with the session in its transaction. The scheduler does the waiting and the cancelling
(:mod:`..scheduling.dependencies`). Also the dependency graph of a session."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from bai.manager import errors
from bai.manager.store import session_dependencies as store
from bai.manager.store.keypairs import Requester

from ..context import ManagerContext
from .lookup import resolve_owner

__all__ = ["MAX_DEPENDENCIES", "graph", "resolve", "save"]

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


#: Sessions a dependency graph shows at most (a wider graph is cut there: ``depends_on`` empty).
MAX_GRAPH_NODES = 512


async def graph(ctx: ManagerContext, requester: Requester, ref: str, owner_access_key: str | None) -> dict[str, Any]:
    """``GET /session/{ref}/dependency-graph``: the session and, recursively, what it depends on,
    in the original's shape (what the official CLI's ``session show-graph`` reads)."""
    owner = await resolve_owner(ctx, requester, owner_access_key)
    if not ref or "\x00" in ref:
        raise errors.SessionNotFound(f"Session (id={ref!r}) does not exist.")
    async with ctx.db.connect() as conn:
        found = await store.owned_by_ref(conn, ref, owner.access_key)
        if found is None:
            raise errors.SessionNotFound(f"Session (id={ref}) does not exist.")
        root = await store.session_node(conn, found.id)
        rows: dict[uuid.UUID, Any] = {root.id: root}
        edges: dict[uuid.UUID, list[uuid.UUID]] = {}
        level = [root.id]
        while level and len(rows) < MAX_GRAPH_NODES:  # one query per level of the graph
            nxt = []
            for dep in await store.dependencies_of(conn, level):
                edges.setdefault(dep.session_id, []).append(dep.id)
                if dep.id not in rows and len(rows) < MAX_GRAPH_NODES:
                    rows[dep.id] = dep
                    nxt.append(dep.id)
            level = nxt
    budget = [MAX_GRAPH_NODES]

    def node(sid: uuid.UUID, path: frozenset[uuid.UUID]) -> dict[str, Any]:
        budget[0] -= 1
        row = rows[sid]
        history = row.status_history or {}
        changed = history.get(row.status)
        children = [c for c in edges.get(sid, []) if c in rows and c not in path]
        return {
            "session_id": str(row.id), "session_name": row.name,
            # the original's str() of its enum and of a datetime: the official CLI parses both
            "status": f"KernelStatus.{row.status}",
            "status_changed": str(datetime.fromisoformat(changed)) if isinstance(changed, str) else "None",
            "depends_on": [node(c, path | {sid}) for c in children] if budget[0] > 0 else [],
        }

    return node(root.id, frozenset())
