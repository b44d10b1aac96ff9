"""KeyPair: SDL, resolvers and row -> object mapping (the secret only to its owner and superadmins)."""

from __future__ import annotations

from typing import Any

from ariadne import ObjectType, QueryType

from bai.manager.services import gql_queries as svc
from bai.manager.store.keypairs import Requester

from .context import context_of

QUERIES = '''
  "A keypair; the caller's own when `access_key` is omitted."
  keypair(domain_name: String, access_key: String): KeyPair
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
}
'''

query = QueryType()
keypair = ObjectType("KeyPair")
BINDABLES = (query, keypair)


def keypair_obj(row: Any, req: Requester) -> dict[str, Any]:
    """A row of store.keypairs.keypair_with_user as a KeyPair, as ``req`` may see it."""
    own = row.access_key == req.access_key
    return {
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
