"""KeyPairResourcePolicy: SDL, resolvers and row -> object mapping. Superadmins and monitors see
every policy, domain admins those their domain's keypairs use, users their own keypair's.
Creating, modifying and deleting policies is for superadmins (services.policies)."""

from __future__ import annotations

from typing import Any

from ariadne import MutationType, QueryType

from bai.manager.services import gql_queries as svc
from bai.manager.services import policies
from bai.manager.store.keypairs import Requester

from .context import context_of

QUERIES = '''
  "A keypair resource policy; the caller's own keypair's when `name` is omitted."
  keypair_resource_policy(name: String): KeyPairResourcePolicy

  "The keypair resource policies visible to the caller."
  keypair_resource_policies: [KeyPairResourcePolicy]
'''

MUTATIONS = '''
  "A new keypair resource policy (superadmin only); ok=false when the name is taken."
  create_keypair_resource_policy(name: String!, props: CreateKeyPairResourcePolicyInput!):
    CreateKeyPairResourcePolicy

  "Changes the given fields of a keypair resource policy (superadmin only)."
  modify_keypair_resource_policy(name: String!, props: ModifyKeyPairResourcePolicyInput!):
    ModifyKeyPairResourcePolicy

  "Deletes a keypair resource policy no keypair uses (superadmin only)."
  delete_keypair_resource_policy(name: String!): DeleteKeyPairResourcePolicy
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

input CreateKeyPairResourcePolicyInput {
  "LIMITED (slots missing from total_resource_slots: 0) or UNLIMITED (missing: no limit)."
  default_for_unspecified: String!
  "Slot name -> amount (decimal; memory also as 4g), e.g. {\\"cpu\\": \\"4\\", \\"mem\\": \\"8g\\"}."
  total_resource_slots: JSONString = "{}"
  "Seconds; 0: no limit."
  max_session_lifetime: Int = 0
  max_concurrent_sessions: Int!
  max_concurrent_sftp_sessions: Int = 1
  max_containers_per_session: Int!
  idle_timeout: BigInt!
  allowed_vfolder_hosts: JSONString
  max_pending_session_count: Int
  max_pending_session_resource_slots: JSONString
}

input ModifyKeyPairResourcePolicyInput {
  default_for_unspecified: String
  total_resource_slots: JSONString
  max_session_lifetime: Int
  max_concurrent_sessions: Int
  max_concurrent_sftp_sessions: Int
  max_containers_per_session: Int
  idle_timeout: BigInt
  allowed_vfolder_hosts: JSONString
  max_pending_session_count: Int
  max_pending_session_resource_slots: JSONString
}

type CreateKeyPairResourcePolicy {
  ok: Boolean
  msg: String
  resource_policy: KeyPairResourcePolicy
}

type ModifyKeyPairResourcePolicy {
  ok: Boolean
  msg: String
}

type DeleteKeyPairResourcePolicy {
  ok: Boolean
  msg: String
}
'''

query = QueryType()
mutation = MutationType()
BINDABLES = (query, mutation)


def policy_obj(row: Any) -> dict[str, Any]:
    return {
        "name": row.name, "created_at": row.created_at, "default_for_unspecified": row.default_for_unspecified,
        "total_resource_slots": row.total_resource_slots or {}, "max_session_lifetime": row.max_session_lifetime,
        "max_concurrent_sessions": row.max_concurrent_sessions,
        "max_containers_per_session": row.max_containers_per_session, "idle_timeout": row.idle_timeout,
        # stored as the original does; vfolder hosts, pending-session limits and SFTP sessions are
        # not enforced by this manager yet
        "allowed_vfolder_hosts": row.allowed_vfolder_hosts or {},
        "max_pending_session_count": row.max_pending_session_count,
        "max_pending_session_resource_slots": row.max_pending_session_resource_slots,
        "max_concurrent_sftp_sessions": row.max_concurrent_sftp_sessions,
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


@mutation.field("create_keypair_resource_policy")
async def resolve_create(_: Any, info: Any, name: str, props: dict[str, Any]) -> dict[str, Any]:
    ctx = context_of(info)
    out = await policies.create_policy(ctx.manager, ctx.requester, "keypair", name, props)
    return {"ok": out.ok, "msg": out.msg, "resource_policy": policy_obj(out.row) if out.row is not None else None}


@mutation.field("modify_keypair_resource_policy")
async def resolve_modify(_: Any, info: Any, name: str, props: dict[str, Any]) -> dict[str, Any]:
    ctx = context_of(info)
    out = await policies.modify_policy(ctx.manager, ctx.requester, "keypair", name, props)
    return {"ok": out.ok, "msg": out.msg}


@mutation.field("delete_keypair_resource_policy")
async def resolve_delete(_: Any, info: Any, name: str) -> dict[str, Any]:
    ctx = context_of(info)
    out = await policies.delete_policy(ctx.manager, ctx.requester, "keypair", name)
    return {"ok": out.ok, "msg": out.msg}
