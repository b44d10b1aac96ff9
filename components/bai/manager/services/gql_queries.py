"""The reads behind the GraphQL admin API: who may see what (the original's ``scoped_query``),
page bounds, and one connection per query. Rows come back as the store gives them; the api/gql
modules shape them into GraphQL objects."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from bai.common import kernel_stats
from bai.manager import errors
from bai.manager.querylang import QueryError, parse_statuses
from bai.manager.store import agents as agent_store
from bai.manager.store import domains as domain_store
from bai.manager.store import groups as group_store
from bai.manager.store import keypairs as keypair_store
from bai.manager.store import policies as policy_store
from bai.manager.store import presets as preset_store
from bai.manager.store import scaling_groups as sgroup_store
from bai.manager.store import sessions as session_store
from bai.manager.store import users as user_store
from bai.manager.store.keypairs import Requester
from bai.manager.store.sessions import SessionScope

__all__ = ["Page", "QueryError", "SessionScope", "check_page", "scope", "statuses"]


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    total_count: int


def scope(req: Requester, domain_name: str | None, access_key: str | None,
          *, autofill: bool) -> tuple[str | None, str | None]:
    """The original's ``scoped_query`` over access keys: superadmins (and monitors, who read
    everything) see everything, domain admins their domain, users their own access key.
    ``autofill`` defaults ``access_key`` to the caller's."""
    return _scoped(req, domain_name, access_key, req.access_key, autofill=autofill, sees_all=reads_all(req))


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


async def live_stats(redis: aioredis.Redis, kernel_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """What the agents last measured of these kernels (bai.common.kernel_stats)."""
    found = await kernel_stats.read_many(redis, [str(kid) for kid in kernel_ids])
    return {uuid.UUID(kid): stat for kid, stat in found.items()}


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


async def agent(db: AsyncEngine, agent_id: str) -> dict[str, Any] | None:
    async with db.connect() as conn:
        row = await agent_store.agent_row(conn, agent_id)
    return None if row is None else dict(row._mapping)


# ------------------------------------------------------------------ accounts and policies

#: Roles that read every domain's accounts (a monitor reads everything and writes nothing).
_READ_ALL = frozenset({"superadmin", "monitor"})


def reads_all(req: Requester) -> bool:
    return req.role in _READ_ALL


def require_admin(req: Requester) -> None:
    """The original's ``privileged_query(UserRole.ADMIN)``."""
    if req.role not in _READ_ALL and req.role != "admin":
        raise errors.GenericForbidden("admin privilege required")


def require_superadmin(req: Requester) -> None:
    """The original's ``privileged_query(UserRole.SUPERADMIN)`` (monitors read too)."""
    if req.role not in _READ_ALL:
        raise errors.GenericForbidden("superadmin privilege required")


def admin_domain(req: Requester, domain_name: str | None) -> str | None:
    """The domain an admin-only list is confined to: any for superadmins and monitors, their
    own for domain admins (naming another is forbidden)."""
    require_admin(req)
    if reads_all(req):
        return domain_name
    if domain_name is not None and domain_name != req.domain_name:
        raise errors.InsufficientPrivilege()
    return req.domain_name


def owner_scope(req: Requester, domain_name: str | None, key: Any, own: Any,
                *, autofill: bool) -> tuple[str | None, Any]:
    """The original's ``scoped_query`` over users (``key`` an email or a user UUID, ``own`` the
    caller's): users reach only themselves, domain admins their domain, superadmins and monitors
    everything. ``autofill`` defaults ``key`` to the caller's own."""
    return _scoped(req, domain_name, key, own, autofill=autofill, sees_all=reads_all(req))


def _scoped(req: Requester, domain_name: str | None, key: Any, own: Any,
            *, autofill: bool, sees_all: bool) -> tuple[str | None, Any]:
    """One scoping rule for both: whoever ``sees_all`` is unrestricted; a domain admin is held
    to their domain; anyone else to their domain and their own ``key``."""
    if sees_all:
        pass
    elif req.role == "admin":
        if domain_name is not None and domain_name != req.domain_name:
            raise errors.GenericForbidden()
        domain_name = req.domain_name
    else:
        if (domain_name is not None and domain_name != req.domain_name) or (key is not None and key != own):
            raise errors.GenericForbidden()
        domain_name, key = req.domain_name, own
    if autofill and key is None:
        key = own
    return domain_name, key


async def _read(db: AsyncEngine, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    async with db.connect() as conn:
        return await fn(conn, *args, **kwargs)


async def domain(db: AsyncEngine, name: str) -> Any | None:
    return await _read(db, domain_store.domain, name)


async def domains(db: AsyncEngine, *, is_active: bool | None) -> list[Any]:
    rows: list[Any] = await _read(db, domain_store.domains, is_active=is_active)
    return rows


async def groups(db: AsyncEngine, **conds: Any) -> list[Any]:
    """store.groups.groups: ``group_id``, ``name``, ``domain_name``, ``is_active``, ``member``."""
    rows: list[Any] = await _read(db, group_store.groups, **conds)
    return rows


async def groups_of_users(db: AsyncEngine, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Any]]:
    found: dict[uuid.UUID, list[Any]] = await _read(db, group_store.groups_of_users, user_ids)
    return found


async def user_page(db: AsyncEngine, **conds: Any) -> Page:
    """store.users.user_page (filters, order and paging as keywords)."""
    rows, total = await _read(db, user_store.user_page, **conds)
    return Page(rows, total)


async def keypair_page(db: AsyncEngine, **conds: Any) -> Page:
    """store.keypairs.keypair_page (filters, order and paging as keywords)."""
    rows, total = await _read(db, keypair_store.keypair_page, **conds)
    return Page(rows, total)


async def project_names(db: AsyncEngine, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
    found: dict[uuid.UUID, list[str]] = await _read(db, keypair_store.group_names_of_users, user_ids)
    return found


async def keypair_policies(db: AsyncEngine, **conds: Any) -> list[Any]:
    rows: list[Any] = await _read(db, policy_store.keypair_policies, **conds)
    return rows


async def scaling_groups(db: AsyncEngine, **conds: Any) -> list[Any]:
    rows: list[Any] = await _read(db, sgroup_store.scaling_groups, **conds)
    return rows


async def resource_presets(db: AsyncEngine, *, name: str | None = None) -> list[Any]:
    rows: list[Any] = await _read(db, preset_store.resource_presets, name=name)
    return rows
