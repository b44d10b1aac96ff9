"""KeyPairResourcePolicy: SDL, resolvers and row -> object mapping. Superadmins see every
policy, domain admins those their domain's keypairs use, users their own keypair's."""

from __future__ import annotations

from typing import Any

from ariadne import QueryType

from bai.manager.services import gql_queries as svc
from bai.manager.store.keypairs import Requester

from .context import context_of

QUERIES = '''
  "A keypair resource policy; the caller's own keypair's when `name` is omitted."
  keypair_resource_policy(name: String): KeyPairResourcePolicy

  "The keypair resource policies visible to the caller."
  keypair_resource_policies: [KeyPairResourcePolicy]
'''

SDL = '''
type KeyPairResourcePolicy {
  name: String
  created_at: DateTime
  default_for_unspecified: String
  total_resource_slots: JSONString
  max_session_lifetime: Int
  max_concurrent_sessions: Int
  max_containers_per_session: Int
  idle_timeout: BigInt
  allowed_vfolder_hosts: JSONString
  max_pending_session_count: Int
  max_pending_session_resource_slots: JSONString
  max_concurrent_sftp_sessions: Int
}
'''

query = QueryType()
BINDABLES = (query,)


def policy_obj(row: Any) -> dict[str, Any]:
    return {
        "name": row.name, "created_at": row.created_at, "default_for_unspecified": row.default_for_unspecified,
        "total_resource_slots": row.total_resource_slots or {}, "max_session_lifetime": row.max_session_lifetime,
        "max_concurrent_sessions": row.max_concurrent_sessions,
        "max_containers_per_session": row.max_containers_per_session, "idle_timeout": row.idle_timeout,
        # vfolder hosts, pending-session limits and SFTP sessions are not enforced yet.
        "allowed_vfolder_hosts": {}, "max_pending_session_count": None,
        "max_pending_session_resource_slots": None, "max_concurrent_sftp_sessions": 1,
    }


def _scope(req: Requester) -> dict[str, Any]:
    if svc.reads_all(req):
        return {}
    if req.role == "admin":
        return {"domain_name": req.domain_name}
    return {"access_key": req.access_key}


@query.field("keypair_resource_policy")
async def resolve_keypair_resource_policy(_: Any, info: Any, name: str | None = None) -> dict[str, Any] | None:
    ctx = context_of(info)
    req = ctx.requester
    rows = await svc.keypair_policies(ctx.manager.db, name=req.policy.name if name is None else name, **_scope(req))
    return policy_obj(rows[0]) if rows else None


@query.field("keypair_resource_policies")
async def resolve_keypair_resource_policies(_: Any, info: Any) -> list[dict[str, Any]]:
    ctx = context_of(info)
    return [policy_obj(r) for r in await svc.keypair_policies(ctx.manager.db, **_scope(ctx.requester))]
