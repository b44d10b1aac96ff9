"""UserResourcePolicy and ProjectResourcePolicy: SDL, resolvers and row -> object mapping.
Superadmins, monitors and admins read every policy; a user their own user policy and the
policies of their projects. Writes are for superadmins (services.policies)."""

from __future__ import annotations

from typing import Any

from ariadne import MutationType, QueryType

from bai.manager.services import policies

from .context import context_of

QUERIES = '''
  "A user resource policy; the caller's own when `name` is omitted."
  user_resource_policy(name: String): UserResourcePolicy

  "User resource policies (a user: their own only)."
  user_resource_policies: [UserResourcePolicy]

  "A project resource policy (a user: only those of their projects)."
  project_resource_policy(name: String!): ProjectResourcePolicy

  "Project resource policies (a user: only those of their projects)."
  project_resource_policies: [ProjectResourcePolicy]
'''

MUTATIONS = '''
  "A new user resource policy (superadmin only); ok=false when the name is taken."
  create_user_resource_policy(name: String!, props: CreateUserResourcePolicyInput!): CreateUserResourcePolicy
  "Changes the given fields of a user resource policy (superadmin only)."
  modify_user_resource_policy(name: String!, props: ModifyUserResourcePolicyInput!): ModifyUserResourcePolicy
  "Deletes a user resource policy no user has (superadmin only)."
  delete_user_resource_policy(name: String!): DeleteUserResourcePolicy

  "A new project resource policy (superadmin only); ok=false when the name is taken."
  create_project_resource_policy(name: String!, props: CreateProjectResourcePolicyInput!):
    CreateProjectResourcePolicy
  "Changes the given fields of a project resource policy (superadmin only)."
  modify_project_resource_policy(name: String!, props: ModifyProjectResourcePolicyInput!):
    ModifyProjectResourcePolicy
  "Deletes a project resource policy no project has (superadmin only)."
  delete_project_resource_policy(name: String!): DeleteProjectResourcePolicy
'''

SDL = '''
type UserResourcePolicy {
  id: ID!
  name: String!
  created_at: DateTime!
  "0: unlimited."
  max_vfolder_count: Int
  "Bytes; -1: unlimited."
  max_quota_scope_size: BigInt
  max_session_count_per_model_session: Int
  max_customized_image_count: Int
}

type ProjectResourcePolicy {
  id: ID!
  name: String!
  created_at: DateTime!
  "0: unlimited."
  max_vfolder_count: Int
  "Bytes; -1: unlimited."
  max_quota_scope_size: BigInt
}

input CreateUserResourcePolicyInput {
  max_vfolder_count: Int
  max_quota_scope_size: BigInt
  max_session_count_per_model_session: Int
  max_customized_image_count: Int
}

input ModifyUserResourcePolicyInput {
  max_vfolder_count: Int
  max_quota_scope_size: BigInt
  max_session_count_per_model_session: Int
  max_customized_image_count: Int
}

input CreateProjectResourcePolicyInput {
  max_vfolder_count: Int
  max_quota_scope_size: BigInt
}

input ModifyProjectResourcePolicyInput {
  max_vfolder_count: Int
  max_quota_scope_size: BigInt
}

type CreateUserResourcePolicy {
  ok: Boolean
  msg: String
  resource_policy: UserResourcePolicy
}

type ModifyUserResourcePolicy {
  ok: Boolean
  msg: String
}

type DeleteUserResourcePolicy {
  ok: Boolean
  msg: String
}

type CreateProjectResourcePolicy {
  ok: Boolean
  msg: String
  resource_policy: ProjectResourcePolicy
}

type ModifyProjectResourcePolicy {
  ok: Boolean
  msg: String
}

type DeleteProjectResourcePolicy {
  ok: Boolean
  msg: String
}
'''

query = QueryType()
mutation = MutationType()
BINDABLES = (query, mutation)


def user_policy_obj(row: Any) -> dict[str, Any]:
    return {"id": f"UserResourcePolicy:{row.name}", "name": row.name, "created_at": row.created_at,
            "max_vfolder_count": row.max_vfolder_count, "max_quota_scope_size": row.max_quota_scope_size,
            "max_session_count_per_model_session": row.max_session_count_per_model_session,
            "max_customized_image_count": row.max_customized_image_count}


def project_policy_obj(row: Any) -> dict[str, Any]:
    return {"id": f"ProjectResourcePolicy:{row.name}", "name": row.name, "created_at": row.created_at,
            "max_vfolder_count": row.max_vfolder_count, "max_quota_scope_size": row.max_quota_scope_size}


@query.field("user_resource_policy")
async def resolve_user_resource_policy(_: Any, info: Any, name: str | None = None) -> dict[str, Any] | None:
    ctx = context_of(info)
    rows = await policies.user_policies(ctx.manager.db, ctx.requester, name, listing=False)
    return user_policy_obj(rows[0]) if rows else None


@query.field("user_resource_policies")
async def resolve_user_resource_policies(_: Any, info: Any) -> list[dict[str, Any]]:
    ctx = context_of(info)
    return [user_policy_obj(r) for r in await policies.user_policies(ctx.manager.db, ctx.requester, None,
                                                                     listing=True)]


@query.field("project_resource_policy")
async def resolve_project_resource_policy(_: Any, info: Any, name: str) -> dict[str, Any] | None:
    ctx = context_of(info)
    rows = await policies.project_policies(ctx.manager.db, ctx.requester, name)
    return project_policy_obj(rows[0]) if rows else None


@query.field("project_resource_policies")
async def resolve_project_resource_policies(_: Any, info: Any) -> list[dict[str, Any]]:
    ctx = context_of(info)
    return [project_policy_obj(r) for r in await policies.project_policies(ctx.manager.db, ctx.requester, None)]


_OBJ = {"user": user_policy_obj, "project": project_policy_obj}


def _bind(kind: str) -> None:
    async def create(_: Any, info: Any, name: str, props: dict[str, Any]) -> dict[str, Any]:
        ctx = context_of(info)
        out = await policies.create_policy(ctx.manager, ctx.requester, kind, name, props)
        return {"ok": out.ok, "msg": out.msg,
                "resource_policy": _OBJ[kind](out.row) if out.row is not None else None}

    async def modify(_: Any, info: Any, name: str, props: dict[str, Any]) -> dict[str, Any]:
        ctx = context_of(info)
        out = await policies.modify_policy(ctx.manager, ctx.requester, kind, name, props)
        return {"ok": out.ok, "msg": out.msg}

    async def delete(_: Any, info: Any, name: str) -> dict[str, Any]:
        ctx = context_of(info)
        out = await policies.delete_policy(ctx.manager, ctx.requester, kind, name)
        return {"ok": out.ok, "msg": out.msg}

    mutation.set_field(f"create_{kind}_resource_policy", create)
    mutation.set_field(f"modify_{kind}_resource_policy", modify)
    mutation.set_field(f"delete_{kind}_resource_policy", delete)


_bind("user")
_bind("project")
