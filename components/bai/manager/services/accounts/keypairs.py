"""create_keypair, modify_keypair (activate/deactivate, rate limit, policy, admin flag) and
delete_keypair.

Who may: a superadmin any keypair; a domain admin those of the users and admins of their own
domain, but not their own (a new key or a bigger policy for oneself is an escalation), and never
an admin flag on the key of someone whose role is not admin. The secret key is in the create
payload: whoever issues a key hands it out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from bai.manager import errors
from bai.manager.services import privileges
from bai.manager.services.context import ManagerContext
from bai.manager.store import keypairs as store
from bai.manager.store import users as user_store
from bai.manager.store.fixtures import generate_keypair
from bai.manager.store.keypairs import Requester

from . import inputs
from .outcome import Outcome, Refused, write
from .users import ADMIN_ROLES, DEFAULT_KEYPAIR_POLICY, DEFAULT_RATE_LIMIT


def _columns(props: Mapping[str, Any]) -> dict[str, Any]:
    """The keypair columns the set props write (``concurrency_limit`` is the original's
    deprecated, ignored field)."""
    values = inputs.given(props, "is_active", "is_admin", "resource_policy", "rate_limit")
    for name in ("is_active", "is_admin"):
        if name in values and not isinstance(values[name], bool):
            raise errors.InvalidAPIParameters(f"{name} must be a boolean")
    if "resource_policy" in values:
        values["resource_policy"] = inputs.text(values["resource_policy"], "resource_policy", 256,
                                                allow_empty=False)
    if "rate_limit" in values:  # a negative limit would mean "unlimited" to the rate limiter
        values["rate_limit"] = inputs.non_negative_int(values["rate_limit"], "rate_limit")
    return values


def _check_owner(req: Requester, owner_uuid: Any, owner_role: str, owner_domain: str, values: Mapping[str, Any]) -> None:
    privileges.require_manageable_account(req, owner_role, owner_domain)
    if req.role == "superadmin":
        return
    if owner_uuid == req.user_uuid:
        raise errors.GenericForbidden("a domain admin cannot issue or change their own keypairs")
    if values.get("is_admin") and owner_role not in ADMIN_ROLES:
        raise errors.GenericForbidden("only a superadmin gives an admin keypair to a non-admin user")


async def _check_policy(conn: AsyncConnection, values: Mapping[str, Any]) -> None:
    name = values.get("resource_policy")
    if name is not None and not await store.policy_exists(conn, name):
        raise Refused(f"no such keypair resource policy: {name}")


async def create_keypair(ctx: ManagerContext, req: Requester, user_id: str, props: Mapping[str, Any]) -> Outcome:
    """A new keypair for the user whose email is ``user_id`` (the original's argument name);
    the user's main access key when it had none."""
    privileges.require_admin_write(req)
    email = inputs.email(user_id)
    values = {"is_active": True, "is_admin": False, "resource_policy": DEFAULT_KEYPAIR_POLICY,
              "rate_limit": DEFAULT_RATE_LIMIT, **_columns(props)}

    async def body(conn: AsyncConnection) -> Any:
        acct = await user_store.account_by_email(conn, email, lock=True)
        if acct is None:
            raise Refused(f"User not found: {email}")
        _check_owner(req, acct.uuid, acct.role, acct.domain_name, values)
        await _check_policy(conn, values)
        access_key, secret_key = generate_keypair()
        await store.insert_keypair(conn, access_key=access_key, secret_key=secret_key, user_uuid=acct.uuid,
                                   email=email, **values)
        if acct.main_access_key is None:
            await store.set_main_access_key(conn, acct.uuid, access_key)
        return await store.keypair_with_user(conn, access_key, None)

    return await write(ctx, body)


async def modify_keypair(ctx: ManagerContext, req: Requester, access_key: str, props: Mapping[str, Any]) -> Outcome:
    privileges.require_admin_write(req)
    access_key = inputs.text(access_key, "access_key", 20, allow_empty=False)
    values = _columns(props)
    if not values:
        return Outcome(False, "nothing to update")

    async def body(conn: AsyncConnection) -> Any:
        owner = await store.keypair_owner(conn, access_key, lock=True)
        if owner is None:
            raise Refused(f"no such keypair: {access_key}")
        _check_owner(req, owner.user_uuid, owner.role, owner.domain_name, values)
        await _check_policy(conn, values)
        await store.update_keypair(conn, access_key, values)
        return await store.keypair_with_user(conn, access_key, None)

    return await write(ctx, body, invalidates_auth=True)


async def delete_keypair(ctx: ManagerContext, req: Requester, access_key: str) -> Outcome:
    """Refused for a user's main access key (make another one main first, or purge the user)
    and while a session of the key is not over."""
    privileges.require_admin_write(req)
    access_key = inputs.text(access_key, "access_key", 20, allow_empty=False)

    async def body(conn: AsyncConnection) -> None:
        owner = await store.keypair_owner(conn, access_key, lock=True)
        if owner is None:
            raise Refused(f"no such keypair: {access_key}")
        _check_owner(req, owner.user_uuid, owner.role, owner.domain_name, {})
        if owner.is_main:
            raise Refused(f"{access_key} is the main access key of {owner.email}; make another keypair "
                          "the main one first (modify_user main_access_key)")
        live = await user_store.live_session_count(conn, access_key=access_key)
        if live:
            raise Refused(f"the keypair has {live} session(s) that are not terminated; terminate them first")
        await store.delete_keypair(conn, access_key)

    return await write(ctx, body, invalidates_auth=True)
