"""KeyPair: SDL, resolvers and row -> object mapping (the secret only to its owner and superadmins)."""

from __future__ import annotations

from typing import Any

from ariadne import ObjectType, QueryType

from bai.manager.services import gql_queries as svc
from bai.manager.store.keypairs import Requester

from .batch import PageBatch
from .context import GQLContext, context_of

QUERIES = '''
  "A keypair; the caller's own when `access_key` is omitted."
  keypair(domain_name: String, access_key: String): KeyPair

  """
  Keypairs visible to the caller: a user's own, a domain admin's domain's, every one for
  superadmins; `email` names their user.
  """
  keypairs(domain_name: String, email: String, is_active: Boolean): [KeyPair]

  "A page of the keypairs `keypairs` would answer."
  keypair_list(
    limit: Int!
    offset: Int!
    filter: String
    order: String
    domain_name: String
    email: String
    is_active: Boolean
  ): KeyPairList
'''

SDL = '''
type UserInfo {
  email: String
  full_name: String
}

type KeyPair implements Item {
  id: ID
  user_id: String
  full_name: String
  access_key: String
  secret_key: String
  is_active: Boolean
  is_admin: Boolean
  resource_policy: String
  created_at: DateTime
  last_used: DateTime
  rate_limit: Int
  num_queries: Int
  user: UUID
  concurrency_used: Int
  user_info: UserInfo
  projects: [String]
  ssh_public_key: String
  modified_at: DateTime
}

type KeyPairList implements PaginatedList {
  items: [KeyPair]!
  total_count: Int!
}
'''

query = QueryType()
keypair = ObjectType("KeyPair")
BINDABLES = (query, keypair)


def keypair_obj(row: Any, req: Requester, projects: PageBatch[Any] | None = None) -> dict[str, Any]:
    """A row of store.keypairs.keypair_with_user as a KeyPair, as ``req`` may see it."""
    own = row.user == req.user_uuid  # every keypair of the caller's own user
    return {
        "_projects": projects, "ssh_public_key": row.ssh_public_key, "modified_at": row.created_at,
        "id": row.access_key, "user_id": row.user_id or row.user_email, "full_name": row.full_name,
        "access_key": row.access_key, "secret_key": row.secret_key if own or req.is_superadmin else None,
        "is_active": row.is_active, "is_admin": row.is_admin, "resource_policy": row.resource_policy,
        "created_at": row.created_at, "last_used": row.last_used, "rate_limit": row.rate_limit,
        "num_queries": row.num_queries, "user": row.user,
        "user_info": {"email": row.user_email, "full_name": row.full_name},
    }


@query.field("keypair")
async def resolve_keypair(
    _: Any, info: Any, domain_name: str | None = None, access_key: str | None = None,
) -> dict[str, Any] | None:
    ctx = context_of(info)
    domain_name, access_key = svc.scope(ctx.requester, domain_name, access_key, autofill=True)
    assert access_key is not None
    row = await svc.keypair(ctx.manager.db, access_key, domain_name)
    return None if row is None else keypair_obj(row, ctx.requester)


@keypair.field("concurrency_used")
async def resolve_concurrency_used(obj: dict[str, Any], info: Any) -> int:
    return await svc.concurrency_used(context_of(info).manager.db, obj["access_key"])


def _objs(ctx: GQLContext, rows: list[Any]) -> list[dict[str, Any]]:
    async def load(ids: Any) -> dict[Any, list[str]]:
        return await svc.project_names(ctx.manager.db, ids)
    batch: PageBatch[Any] = PageBatch(load, [r.user for r in rows], default=[])
    return [keypair_obj(r, ctx.requester, batch) for r in rows]


def _scope(req: Requester, domain_name: str | None, email: str | None) -> tuple[str | None, str | None]:
    return svc.owner_scope(req, domain_name, email, req.email, autofill=False)


@query.field("keypairs")
async def resolve_keypairs(_: Any, info: Any, domain_name: str | None = None, email: str | None = None,
                           is_active: bool | None = None) -> list[dict[str, Any]]:
    ctx = context_of(info)
    domain_name, email = _scope(ctx.requester, domain_name, email)
    page = await svc.keypair_page(ctx.manager.db, domain_name=domain_name, email=email, is_active=is_active)
    return _objs(ctx, page.rows)


@query.field("keypair_list")
async def resolve_keypair_list(
    _: Any, info: Any, limit: int, offset: int, filter: str | None = None, order: str | None = None,
    domain_name: str | None = None, email: str | None = None, is_active: bool | None = None,
) -> dict[str, Any]:
    ctx = context_of(info)
    domain_name, email = _scope(ctx.requester, domain_name, email)
    svc.check_page(limit, offset, ctx.max_page_size)
    page = await svc.keypair_page(ctx.manager.db, domain_name=domain_name, email=email, is_active=is_active,
                                  filter_=filter, order=order, limit=limit, offset=offset)
    return {"items": _objs(ctx, page.rows), "total_count": page.total_count}


@keypair.field("projects")
async def resolve_projects(obj: dict[str, Any], info: Any) -> list[str]:
    batch = obj["_projects"]
    if batch is None:
        names = await svc.project_names(context_of(info).manager.db, [obj["user"]])
        return names.get(obj["user"], [])
    found: list[str] = await batch.get(obj["user"])
    return found
