"""KeyPair: SDL, resolvers and row -> object mapping (the secret only to its owner and superadmins)."""

from __future__ import annotations

from typing import Any

from ariadne import MutationType, ObjectType, QueryType

from bai.manager.services import gql_queries as svc
from bai.manager.services.accounts import keypairs as accounts
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

MUTATIONS = '''
  "A new keypair for the user with this email (admins; the payload carries its secret key)."
  create_keypair(user_id: String!, props: KeyPairInput!): CreateKeyPair

  "Activate/deactivate a keypair, change its rate limit, policy or admin flag (admins)."
  modify_keypair(access_key: String!, props: ModifyKeyPairInput!): ModifyKeyPair

  "Delete a keypair that is not its user's main one and has no live session (admins)."
  delete_keypair(access_key: String!): DeleteKeyPair
'''

SDL = '''
input KeyPairInput {
  is_active: Boolean = true
  is_admin: Boolean = false
  resource_policy: String = "default"
  "Deprecated in the original and ignored."
  concurrency_limit: Int
  rate_limit: Int = 10000
}

"Fields left out or null stay as they are."
input ModifyKeyPairInput {
  is_active: Boolean
  is_admin: Boolean
  resource_policy: String
  "Deprecated in the original and ignored."
  concurrency_limit: Int
  rate_limit: Int
}

type CreateKeyPair {
  ok: Boolean
  msg: String
  keypair: KeyPair
}

type ModifyKeyPair {
  ok: Boolean
  msg: String
}

type DeleteKeyPair {
  ok: Boolean
  msg: String
}

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
mutation = MutationType()
keypair = ObjectType("KeyPair")
BINDABLES = (query, mutation, keypair)


def keypair_obj(row: Any, req: Requester, projects: PageBatch[Any] | None = None,
                *, issued: bool = False) -> dict[str, Any]:
    """A row of store.keypairs.keypair_with_user as a KeyPair, as ``req`` may see it (``issued``:
    ``req`` has just created it, and hands its secret out)."""
    own = row.user == req.user_uuid  # every keypair of the caller's own user
    return {
        "_projects": projects, "ssh_public_key": row.ssh_public_key, "modified_at": row.modified_at,
        "id": row.access_key, "user_id": row.user_id or row.user_email, "full_name": row.full_name,
        "access_key": row.access_key,
        "secret_key": row.secret_key if own or issued or req.is_superadmin else None,
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


@mutation.field("create_keypair")
async def resolve_create_keypair(_: Any, info: Any, user_id: str, props: dict[str, Any]) -> dict[str, Any]:
    ctx = context_of(info)
    out = await accounts.create_keypair(ctx.manager, ctx.requester, user_id, props)
    return {"ok": out.ok, "msg": out.msg,
            "keypair": None if out.row is None else keypair_obj(out.row, ctx.requester, issued=True)}


@mutation.field("modify_keypair")
async def resolve_modify_keypair(_: Any, info: Any, access_key: str, props: dict[str, Any]) -> dict[str, Any]:
    ctx = context_of(info)
    out = await accounts.modify_keypair(ctx.manager, ctx.requester, access_key, props)
    return {"ok": out.ok, "msg": out.msg}


@mutation.field("delete_keypair")
async def resolve_delete_keypair(_: Any, info: Any, access_key: str) -> dict[str, Any]:
    ctx = context_of(info)
    out = await accounts.delete_keypair(ctx.manager, ctx.requester, access_key)
    return {"ok": out.ok, "msg": out.msg}
