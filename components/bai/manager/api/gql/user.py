"""User: SDL, resolvers and row -> object mapping. Users read only themselves, domain admins
their domain's users, superadmins (and monitors) everyone; password hashes never leave the store."""

from __future__ import annotations

import uuid
from typing import Any

from ariadne import MutationType, ObjectType, QueryType

from bai.manager.querylang import QueryError
from bai.manager.services import gql_queries as svc
from bai.manager.services.accounts import users as accounts
from bai.manager.services.accounts.outcome import Outcome
from bai.manager.store.users import USER_STATUSES

from .batch import PageBatch
from .context import GQLContext, context_of

QUERIES = '''
  "A user by email; the caller when `email` is omitted."
  user(domain_name: String, email: String): User

  "A user by UUID; the caller when `user_id` is omitted."
  user_from_uuid(domain_name: String, user_id: ID): User

  "Users (admins only; a domain admin sees their domain's)."
  users(domain_name: String, group_id: UUID, is_active: Boolean, status: String): [User]

  "A page of users (admins only; a domain admin sees their domain's)."
  user_list(
    limit: Int!
    offset: Int!
    filter: String
    order: String
    domain_name: String
    group_id: UUID
    is_active: Boolean
    status: String
  ): UserList
'''

MUTATIONS = '''
  "A new user (admins; a domain admin in their domain, no role above admin) and its main keypair."
  create_user(email: String!, props: UserInput!): CreateUser

  "Change a user (admins; nobody changes their own role, status, domain or policy)."
  modify_user(email: String!, props: ModifyUserInput!): ModifyUser

  "Soft delete: status `deleted`, the user's keypairs deactivated."
  delete_user(email: String!): DeleteUser

  "Hard delete of the user, its keypairs, memberships and finished sessions (refused while a session is live)."
  purge_user(email: String!, props: PurgeUserInput!): PurgeUser
'''

SDL = '''
input UserInput {
  "Defaults to the email."
  username: String
  password: String!
  need_password_change: Boolean = false
  full_name: String = ""
  description: String = ""
  is_active: Boolean
  status: String
  domain_name: String! = "default"
  role: String = "user"
  group_ids: [String]
  "IPv4/IPv6 addresses or CIDR networks the user may call from; null or empty: anywhere."
  allowed_client_ip: [String]
  totp_activated: Boolean = false
  resource_policy: String = "default"
  sudo_session_enabled: Boolean = false
}

"Fields left out or null stay as they are."
input ModifyUserInput {
  username: String
  password: String
  need_password_change: Boolean
  full_name: String
  description: String
  is_active: Boolean
  status: String
  domain_name: String
  role: String
  "The user's projects become exactly these."
  group_ids: [String]
  "An empty list allows every address again."
  allowed_client_ip: [String]
  totp_activated: Boolean
  resource_policy: String
  sudo_session_enabled: Boolean
  "One of the user's own keypairs."
  main_access_key: String
}

input PurgeUserInput {
  "Accepted for the original's clients; there are no virtual folders here."
  purge_shared_vfolders: Boolean = false
}

type CreateUser {
  ok: Boolean
  msg: String
  user: User
}

type ModifyUser {
  ok: Boolean
  msg: String
  user: User
}

type DeleteUser {
  ok: Boolean
  msg: String
}

type PurgeUser {
  ok: Boolean
  msg: String
}

type UserGroup {
  id: UUID
  name: String
}

type User implements Item {
  id: ID
  uuid: UUID
  username: String
  email: String
  need_password_change: Boolean
  full_name: String
  description: String
  is_active: Boolean
  status: String
  status_info: String
  created_at: DateTime
  modified_at: DateTime
  domain_name: String
  role: String
  resource_policy: String
  allowed_client_ip: [String]
  totp_activated: Boolean
  totp_activated_at: DateTime
  sudo_session_enabled: Boolean
  main_access_key: String
  container_uid: Int
  container_main_gid: Int
  container_gids: [Int]
  groups: [UserGroup]
}

type UserList implements PaginatedList {
  items: [User]!
  total_count: Int!
}
'''

query = QueryType()
mutation = MutationType()
user_type = ObjectType("User")
BINDABLES = (query, mutation, user_type)


def _groups_batch(ctx: GQLContext, rows: list[Any]) -> PageBatch[uuid.UUID]:
    async def load(ids: Any) -> dict[uuid.UUID, list[Any]]:
        return await svc.groups_of_users(ctx.manager.db, ids)
    return PageBatch(load, [r.uuid for r in rows], default=[])


def user_obj(row: Any, groups: PageBatch[uuid.UUID]) -> dict[str, Any]:
    """A row of store.users.user_page as a User."""
    return {
        "id": row.uuid, "uuid": row.uuid, "username": row.username, "email": row.email,
        "need_password_change": bool(row.need_password_change), "full_name": row.full_name,
        "description": row.description, "is_active": row.status == "active", "status": row.status,
        "status_info": row.status_info, "created_at": row.created_at, "modified_at": row.modified_at,
        "domain_name": row.domain_name, "role": row.role, "resource_policy": row.resource_policy,
        "allowed_client_ip": row.allowed_client_ip, "totp_activated": row.totp_activated,
        "totp_activated_at": row.totp_activated_at, "sudo_session_enabled": row.sudo_session_enabled,
        "main_access_key": row.main_access_key, "container_uid": row.container_uid,
        "container_main_gid": row.container_main_gid, "container_gids": row.container_gids,
        "_groups": groups,
    }


def _objs(ctx: GQLContext, rows: list[Any]) -> list[dict[str, Any]]:
    batch = _groups_batch(ctx, rows)
    return [user_obj(r, batch) for r in rows]


def _statuses(status: str | None) -> list[str] | None:
    if status is None or not status.strip():
        return None
    value = status.strip().lower()
    if value not in USER_STATUSES:
        raise QueryError(f"Invalid status: {status!r} (one of {', '.join(sorted(USER_STATUSES))})")
    return [value]


@query.field("user")
async def resolve_user(_: Any, info: Any, domain_name: str | None = None,
                       email: str | None = None) -> dict[str, Any] | None:
    ctx = context_of(info)
    req = ctx.requester
    domain_name, email = svc.owner_scope(req, domain_name, email, req.email, autofill=True)
    page = await svc.user_page(ctx.manager.db, domain_name=domain_name, email=email)
    return _objs(ctx, page.rows)[0] if page.rows else None


@query.field("user_from_uuid")
async def resolve_user_from_uuid(_: Any, info: Any, domain_name: str | None = None,
                                 user_id: str | None = None) -> dict[str, Any] | None:
    ctx = context_of(info)
    req = ctx.requester
    wanted: uuid.UUID | None = None
    if user_id is not None:
        try:
            wanted = uuid.UUID(user_id)
        except ValueError:
            raise QueryError(f"user_id must be a UUID, got {user_id!r}") from None
    domain_name, wanted = svc.owner_scope(req, domain_name, wanted, req.user_uuid, autofill=True)
    page = await svc.user_page(ctx.manager.db, domain_name=domain_name, user_uuid=wanted)
    return _objs(ctx, page.rows)[0] if page.rows else None


@query.field("users")
async def resolve_users(_: Any, info: Any, domain_name: str | None = None, group_id: uuid.UUID | None = None,
                        is_active: bool | None = None, status: str | None = None) -> list[dict[str, Any]]:
    ctx = context_of(info)
    domain_name = svc.admin_domain(ctx.requester, domain_name)
    page = await svc.user_page(ctx.manager.db, domain_name=domain_name, group_id=group_id,
                               is_active=is_active, statuses=_statuses(status))
    return _objs(ctx, page.rows)


@query.field("user_list")
async def resolve_user_list(
    _: Any, info: Any, limit: int, offset: int, filter: str | None = None, order: str | None = None,
    domain_name: str | None = None, group_id: uuid.UUID | None = None, is_active: bool | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    ctx = context_of(info)
    domain_name = svc.admin_domain(ctx.requester, domain_name)
    svc.check_page(limit, offset, ctx.max_page_size)
    page = await svc.user_page(ctx.manager.db, domain_name=domain_name, group_id=group_id, is_active=is_active,
                               statuses=_statuses(status), filter_=filter, order=order, limit=limit, offset=offset)
    return {"items": _objs(ctx, page.rows), "total_count": page.total_count}


@user_type.field("groups")
async def resolve_groups(obj: dict[str, Any], info: Any) -> list[dict[str, Any]]:
    return [{"id": g.id, "name": g.name} for g in await obj["_groups"].get(obj["uuid"])]


def _payload(ctx: GQLContext, out: Outcome) -> dict[str, Any]:
    return {"ok": out.ok, "msg": out.msg, "user": None if out.row is None else _objs(ctx, [out.row])[0]}


@mutation.field("create_user")
async def resolve_create_user(_: Any, info: Any, email: str, props: dict[str, Any]) -> dict[str, Any]:
    ctx = context_of(info)
    return _payload(ctx, await accounts.create_user(ctx.manager, ctx.requester, email, props))


@mutation.field("modify_user")
async def resolve_modify_user(_: Any, info: Any, email: str, props: dict[str, Any]) -> dict[str, Any]:
    ctx = context_of(info)
    return _payload(ctx, await accounts.modify_user(ctx.manager, ctx.requester, email, props))


@mutation.field("delete_user")
async def resolve_delete_user(_: Any, info: Any, email: str) -> dict[str, Any]:
    ctx = context_of(info)
    return _payload(ctx, await accounts.delete_user(ctx.manager, ctx.requester, email))


@mutation.field("purge_user")
async def resolve_purge_user(_: Any, info: Any, email: str, props: dict[str, Any]) -> dict[str, Any]:
    ctx = context_of(info)
    return _payload(ctx, await accounts.purge_user(ctx.manager, ctx.requester, email))
