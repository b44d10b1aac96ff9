"""create_user, modify_user, delete_user (soft) and purge_user (hard).

Who may: a superadmin anyone; a domain admin users and admins of their own domain, granting no
role above admin (services.privileges); users and monitors nobody. Nobody changes their own role,
status, domain or resource policy, nor deletes themselves. As the original, a new user gets a
main keypair (``default`` policy, rate limit 10000, admin exactly when the role is)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from bai.manager import errors
from bai.manager.services import privileges
from bai.manager.services.auth import hash_new_password
from bai.manager.services.context import ManagerContext
from bai.manager.store import keypairs as keypair_store
from bai.manager.store import users as store
from bai.manager.store.fixtures import generate_keypair
from bai.manager.store.keypairs import Requester

from . import inputs
from .outcome import Outcome, Refused, write

#: The original's defaults for the keypair a new user gets.
DEFAULT_KEYPAIR_POLICY = "default"
DEFAULT_RATE_LIMIT = 10000
ADMIN_ROLES = frozenset({"admin", "superadmin"})
#: What nobody changes about their own account (a superadmin included: demoting or deactivating
#: oneself can lock the last superadmin out).
_NOT_ON_ONESELF = ("role", "status", "domain_name", "resource_policy")
#: ... and what only a superadmin changes about their own.
_NOT_ON_ONESELF_BELOW_SUPERADMIN = ("sudo_session_enabled", "group_ids")

_TEXT = {"username": 64, "full_name": 64, "description": 500, "resource_policy": 256}
_FLAGS = ("need_password_change", "is_active", "totp_activated", "sudo_session_enabled")


def _status(value: Any) -> str:
    status = inputs.text(value, "status", 32).lower()
    if status not in store.USER_STATUSES:
        raise errors.InvalidAPIParameters(
            f"unknown status {value!r} (one of {', '.join(sorted(store.USER_STATUSES))})")
    return status


def _role(req: Requester, value: Any) -> str:
    role = inputs.text(value, "role", 32).lower()
    privileges.require_grantable_role(req, role)
    return role


def _columns(req: Requester, props: Mapping[str, Any]) -> dict[str, Any]:
    """The user columns the set props write (the password is hashed separately)."""
    values: dict[str, Any] = {}
    for name, limit in _TEXT.items():
        if props.get(name) is not None:
            values[name] = inputs.text(props[name], name, limit, allow_empty=name != "resource_policy")
    for name in _FLAGS:
        if props.get(name) is not None:
            if not isinstance(props[name], bool):
                raise errors.InvalidAPIParameters(f"{name} must be a boolean")
            values[name] = props[name]
    if props.get("role") is not None:
        values["role"] = _role(req, props["role"])
    # ``status`` wins over ``is_active``, which only says active or inactive (the original's rule)
    is_active = values.pop("is_active", None)
    if props.get("status") is not None:
        values["status"] = _status(props["status"])
    elif is_active is not None:
        values["status"] = "active" if is_active else "inactive"
    if props.get("allowed_client_ip") is not None:  # [] clears the list (any address again)
        values["allowed_client_ip"] = inputs.client_ips(props["allowed_client_ip"])
    if props.get("domain_name") is not None:
        values["domain_name"] = inputs.domain_name(props["domain_name"])
    if props.get("main_access_key") is not None:
        values["main_access_key"] = inputs.text(props["main_access_key"], "main_access_key", 20)
    return values


async def _row(conn: AsyncConnection, user_uuid: uuid.UUID) -> Any:
    rows, _ = await store.user_page(conn, user_uuid=user_uuid)
    return rows[0]


async def _check_projects(conn: AsyncConnection, domain: str, group_ids: list[uuid.UUID]) -> None:
    found = await store.project_ids_in_domain(conn, domain, group_ids)
    missing = [str(g) for g in group_ids if g not in found]
    if missing:
        raise Refused(f"no such project in domain {domain!r}: {', '.join(missing)}")


async def create_user(ctx: ManagerContext, req: Requester, email: str, props: Mapping[str, Any]) -> Outcome:
    privileges.require_admin_write(req)
    email = inputs.email(email)
    domain = privileges.writable_domain(req, inputs.domain_name(props.get("domain_name")))
    values = _columns(req, {k: v for k, v in props.items() if k != "domain_name"})
    values.setdefault("role", "user")
    values.setdefault("status", "active")
    values.setdefault("need_password_change", False)
    values["username"] = values.get("username") or email  # the original's rule for a blank one
    password = inputs.text(props.get("password"), "password", 1024, allow_empty=False)
    group_ids = inputs.uuids(props.get("group_ids"), "group_ids")
    password_hash = await hash_new_password(ctx, password)

    async def body(conn: AsyncConnection) -> Any:
        if not await store.domain_is_active(conn, domain):
            raise Refused(f"no such active domain: {domain}")
        taken = await store.identity_in_use(conn, email, values["username"])
        if taken:
            raise Refused(f"a user with this {taken} already exists")
        await _check_projects(conn, domain, group_ids)
        user_uuid = await store.insert_user(conn, {
            **values, "email": email, "domain_name": domain, "password": password_hash,
            "status_info": "admin-requested"})
        access_key, secret_key = generate_keypair()
        await keypair_store.insert_keypair(
            conn, access_key=access_key, secret_key=secret_key, user_uuid=user_uuid, email=email,
            is_active=values["status"] == "active", is_admin=values["role"] in ADMIN_ROLES,
            rate_limit=DEFAULT_RATE_LIMIT, resource_policy=DEFAULT_KEYPAIR_POLICY)
        await keypair_store.set_main_access_key(conn, user_uuid, access_key)
        await store.set_memberships(conn, user_uuid, group_ids)
        return await _row(conn, user_uuid)

    return await write(ctx, body)


def _check_self_edit(req: Requester, acct: store.Account, values: Mapping[str, Any], groups_given: bool) -> None:
    if acct.uuid != req.user_uuid:
        return
    current = {"role": acct.role, "status": acct.status, "domain_name": acct.domain_name}
    for name in _NOT_ON_ONESELF:
        if name in values and (name not in current or values[name] != current[name]):
            raise errors.GenericForbidden(f"nobody changes their own {name.replace('_', ' ')}")
    if req.role != "superadmin":
        for name in _NOT_ON_ONESELF_BELOW_SUPERADMIN:
            if name in values or (name == "group_ids" and groups_given):
                raise errors.GenericForbidden(f"a {req.role} cannot change their own {name.replace('_', ' ')}")


async def modify_user(ctx: ManagerContext, req: Requester, email: str, props: Mapping[str, Any]) -> Outcome:
    privileges.require_admin_write(req)
    email = inputs.email(email)
    values = _columns(req, props)
    groups_given = props.get("group_ids") is not None
    group_ids = inputs.uuids(props.get("group_ids"), "group_ids")
    if "domain_name" in values:
        privileges.writable_domain(req, values["domain_name"])
    if "username" in values and not values["username"]:
        raise errors.InvalidAPIParameters("username must not be empty")
    password = props.get("password")
    if password is not None:
        values["password"] = await hash_new_password(
            ctx, inputs.text(password, "password", 1024, allow_empty=False))
    if not values and not groups_given:
        return Outcome(False, "nothing to update")

    async def body(conn: AsyncConnection) -> Any:
        acct = await store.account_by_email(conn, email, lock=True)
        if acct is None:
            raise Refused(f"no such user: {email}")
        privileges.require_manageable_account(req, acct.role, acct.domain_name)
        _check_self_edit(req, acct, values, groups_given)
        domain = values.get("domain_name", acct.domain_name)
        if domain != acct.domain_name and not await store.domain_is_active(conn, domain):
            raise Refused(f"no such active domain: {domain}")
        if "username" in values and await store.identity_in_use(conn, None, values["username"], besides=acct.uuid):
            raise Refused("a user with this username already exists")
        if "main_access_key" in values:
            owner = await keypair_store.keypair_owner(conn, values["main_access_key"])
            if owner is None or owner.user_uuid != acct.uuid:
                raise Refused("the main access key must be one of the user's own keypairs")
        changes = dict(values)
        if changes.get("status", acct.status) != acct.status:
            changes["status_info"] = "admin-requested"
        await store.update_user(conn, acct.uuid, changes)
        new_role = values.get("role", acct.role)
        if (new_role in ADMIN_ROLES) != (acct.role in ADMIN_ROLES):
            await store.set_keypairs_admin(conn, acct.uuid, new_role in ADMIN_ROLES)
        if groups_given:
            await _check_projects(conn, domain, group_ids)
            await store.set_memberships(conn, acct.uuid, group_ids)
        elif domain != acct.domain_name:  # its projects were the old domain's
            await store.set_memberships(conn, acct.uuid, [])
        return await _row(conn, acct.uuid)

    return await write(ctx, body, invalidates_auth=True)


async def _target(conn: AsyncConnection, req: Requester, email: str, what: str) -> store.Account:
    acct = await store.account_by_email(conn, email, lock=True)
    if acct is None:
        raise Refused(f"no such user: {email}")
    privileges.require_manageable_account(req, acct.role, acct.domain_name)
    if acct.uuid == req.user_uuid:
        raise errors.GenericForbidden(f"nobody {what} their own account")
    return acct


async def delete_user(ctx: ManagerContext, req: Requester, email: str) -> Outcome:
    """Soft delete: status ``deleted``, every keypair of the user deactivated."""
    privileges.require_admin_write(req)
    email = inputs.email(email)

    async def body(conn: AsyncConnection) -> None:
        acct = await _target(conn, req, email, "deletes")
        await store.mark_deleted(conn, acct.uuid)

    return await write(ctx, body, invalidates_auth=True)


async def purge_user(ctx: ManagerContext, req: Requester, email: str) -> Outcome:
    """Hard delete of the user, its keypairs, memberships and finished sessions; refused while
    it has a session that is not over (there are no virtual folders to hand over here)."""
    privileges.require_admin_write(req)
    email = inputs.email(email)

    async def body(conn: AsyncConnection) -> None:
        acct = await _target(conn, req, email, "purges")
        live = await store.live_session_count(conn, user_uuid=acct.uuid)
        if live:
            raise Refused(f"the user has {live} session(s) that are not terminated; terminate them first")
        await store.purge_user(conn, acct.uuid)

    return await write(ctx, body, invalidates_auth=True)
