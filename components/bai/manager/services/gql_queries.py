"""The reads behind the GraphQL admin API: who may see what (the original's ``scoped_query``),
page bounds, and one connection per query. Rows come back as the store gives them; the api/gql
modules shape them into GraphQL objects."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from bai.manager import errors
from bai.manager.querylang import QueryError, parse_statuses
from bai.manager.store import agents as agent_store
from bai.manager.store import keypairs as keypair_store
from bai.manager.store import sessions as session_store
from bai.manager.store.keypairs import Requester
from bai.manager.store.sessions import SessionScope

__all__ = ["Page", "QueryError", "SessionScope", "check_page", "scope", "statuses"]


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    total_count: int


def scope(req: Requester, domain_name: str | None, access_key: str | None,
          *, autofill: bool) -> tuple[str | None, str | None]:
    """The original's ``scoped_query``: superadmins see everything, domain admins their domain,
    users their own access key. ``autofill`` defaults ``access_key`` to the caller's."""
    if req.is_superadmin:
        pass
    elif req.role == "admin":
        if domain_name is not None and domain_name != req.domain_name:
            raise errors.GenericForbidden()
        domain_name = req.domain_name
    else:
        if domain_name is not None and domain_name != req.domain_name:
            raise errors.GenericForbidden()
        if access_key is not None and access_key != req.access_key:
            raise errors.GenericForbidden()
        domain_name, access_key = req.domain_name, req.access_key
    if autofill and access_key is None:
        access_key = req.access_key
    return domain_name, access_key


def check_page(limit: int, offset: int, max_page_size: int) -> None:
    """``limit`` / ``offset`` of a ``*_list`` query; raises QueryError (a GraphQL error)."""
    if limit < 0 or offset < 0:
        raise QueryError("limit and offset must not be negative")
    if limit > max_page_size:
        raise QueryError(f"limit must not exceed {max_page_size} (max-page-size)")


def statuses(text: str | None, known: frozenset[str], what: str) -> list[str] | None:
    """A comma-separated status list; None (no condition) when empty."""
    if text is None or not text.strip():
        return None
    return parse_statuses(text, known, what)


async def session_page(db: AsyncEngine, scope_: SessionScope, *, limit: int, offset: int,
                       statuses: Sequence[str] | None, filter_: str | None, order: str | None) -> Page:
    async with db.connect() as conn:
        rows, total = await session_store.session_page(
            conn, scope_, limit=limit, offset=offset, statuses=statuses, filter_=filter_, order=order)
    return Page(rows, total)


async def session(db: AsyncEngine, session_id: uuid.UUID, scope_: SessionScope) -> Any | None:
    async with db.connect() as conn:
        return await session_store.session_in_scope(conn, session_id, scope_)


async def kernels_by_session(db: AsyncEngine, session_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Any]]:
    async with db.connect() as conn:
        return await session_store.kernels_by_session(conn, session_ids)


async def keypair(db: AsyncEngine, access_key: str, domain_name: str | None) -> Any | None:
    async with db.connect() as conn:
        return await keypair_store.keypair_with_user(conn, access_key, domain_name)


async def concurrency_used(db: AsyncEngine, access_key: str) -> int:
    async with db.connect() as conn:
        return await keypair_store.concurrency_used(conn, access_key)


async def agent_page(db: AsyncEngine, *, limit: int, offset: int, scaling_group: str | None,
                     statuses: Sequence[str] | None, filter_: str | None, order: str | None) -> Page:
    async with db.connect() as conn:
        rows, total = await agent_store.agent_page(
            conn, limit=limit, offset=offset, scaling_group=scaling_group, statuses=statuses,
            filter_=filter_, order=order)
    return Page([dict(r._mapping) for r in rows], total)  # every column becomes an Agent field
