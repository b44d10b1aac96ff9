"""``backend.ai admin keypair list|info|add|update|activate|deactivate|delete``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .base import (
    BoolExpr,
    Paging,
    call,
    fetch_list,
    paging_options,
    plain,
    print_item,
    print_list,
    print_mutation,
    refs,
    run_mutation,
    set_if_given,
    sub,
)

if TYPE_CHECKING:
    from ...request import APISession

_FULL_NAME = sub("user_info { full_name }", "full_name", "Full Name")
#: the official ``admin keypair info`` columns (the caller's own keypair)
INFO_FIELDS = [
    plain("user_id", "Email"), _FULL_NAME, plain("access_key"), plain("secret_key"), plain("is_active"),
    plain("is_admin"), plain("created_at"), plain("last_used"), plain("resource_policy"),
    plain("rate_limit"), plain("concurrency_used"),
]
#: the official ``admin keypair list`` columns
LIST_FIELDS = [INFO_FIELDS[0], plain("projects"), *INFO_FIELDS[1:]]
_CREATED_FIELDS = [plain("access_key"), plain("secret_key")]

_MODIFY = ("mutation($access_key: String!, $input: ModifyKeyPairInput!) {\n"
           "  modify_keypair(access_key: $access_key, props: $input) { ok msg }\n}")


def make_group(name: str = "keypair", help_text: str | None = None) -> click.Group:
    @click.group(name=name, help=help_text)
    def keypair() -> None:
        """KeyPair administration commands."""

    @keypair.command()
    def info() -> None:
        """Show the server-side information of the currently configured access key."""
        async def _go(api: APISession) -> Any:
            from ...gql import query

            return (await query(api, f"query {{ keypair {{ {' '.join(refs(INFO_FIELDS))} }} }}"))["keypair"]

        print_item(call(_go, action="keypair info"), INFO_FIELDS, what="keypair")

    @keypair.command(name="list")
    @click.option("-u", "--user-id", default=None, help="Show the keypairs of this user (email).")
    @click.option("--is-active", type=BoolExpr(), default=None, help="Filter keypairs by activation.")
    @paging_options
    def list_(user_id: str | None, is_active: bool | None, filter_: str | None, order: str | None,
              offset: int, limit: int | None) -> None:
        """
        List keypairs: all of them for superadmins, a domain's for its admins, your own otherwise.
        Secret keys are shown only to their owners and superadmins.
        """
        extra: dict[str, tuple[Any, str]] = {"is_active": (is_active, "Boolean"), "domain_name": (None, "String")}
        if user_id is not None:
            extra["email"] = (user_id, "String")
        paging = Paging(offset, limit, filter_, order, extra=extra)
        items, total = call(lambda api: fetch_list(api, "keypair_list", LIST_FIELDS, paging),
                            action="keypair list")
        print_list(items, LIST_FIELDS, total)

    @keypair.command()
    @click.argument("user_id", metavar="USERID")
    @click.argument("resource_policy", metavar="RESOURCE_POLICY")
    @click.option("-a", "--admin", is_flag=True, help="Give the admin privilege to the new keypair.")
    @click.option("-i", "--inactive", is_flag=True, help="Create the new keypair in inactive state.")
    @click.option("-r", "--rate-limit", type=click.IntRange(min=1), default=5000, show_default=True,
                  help="Set the API query rate limit.")
    def add(user_id: str, resource_policy: str, admin: bool, inactive: bool, rate_limit: int) -> None:
        """
        Add a new keypair to a user; prints its access and secret key.

        \b
        USERID: The user's email.
        RESOURCE_POLICY: The keypair resource policy of the new keypair.
        """
        doc = ("mutation($user_id: String!, $input: KeyPairInput!) {\n"
               "  create_keypair(user_id: $user_id, props: $input) {\n"
               f"    ok msg keypair {{ {' '.join(refs(_CREATED_FIELDS))} }}\n  }}\n}}")
        variables = {"user_id": user_id, "input": {
            "is_active": not inactive, "is_admin": admin, "resource_policy": resource_policy,
            "rate_limit": rate_limit,
        }}
        payload = run_mutation(doc, variables, "create_keypair", action="keypair add")
        created = payload.get("keypair") or {}
        print_mutation(payload, item_key="keypair", fields=_CREATED_FIELDS,
                       extra={"access_key": created.get("access_key"), "secret_key": created.get("secret_key")})

    @keypair.command()
    @click.argument("access_key", metavar="ACCESSKEY")
    @click.option("--resource-policy", default=None, help="Resource policy for the keypair.")
    @click.option("--is-admin", type=BoolExpr(), default=None, help="Set admin privilege.")
    @click.option("--is-active", type=BoolExpr(), default=None, help="Set key pair active or not.")
    @click.option("-r", "--rate-limit", type=click.IntRange(min=1), default=None,
                  help="Set the API query rate limit.")
    def update(access_key: str, resource_policy: str | None, is_admin: bool | None, is_active: bool | None,
               rate_limit: int | None) -> None:
        """
        Update an existing keypair; only the options given change.

        \b
        ACCESSKEY: Access key of an existing keypair.
        """
        props = set_if_given({}, is_active=is_active, is_admin=is_admin, resource_policy=resource_policy,
                             rate_limit=rate_limit)
        payload = run_mutation(_MODIFY, {"access_key": access_key, "input": props},
                               "modify_keypair", action="keypair update")
        print_mutation(payload, extra={"access_key": access_key})

    def _set_active(access_key: str, active: bool, action: str) -> None:
        payload = run_mutation(_MODIFY, {"access_key": access_key, "input": {"is_active": active}},
                               "modify_keypair", action=action)
        print_mutation(payload, extra={"access_key": access_key})

    @keypair.command()
    @click.argument("access_key", metavar="ACCESSKEY")
    def activate(access_key: str) -> None:
        """Activate an inactivated keypair."""
        _set_active(access_key, True, "keypair activate")

    @keypair.command()
    @click.argument("access_key", metavar="ACCESSKEY")
    def deactivate(access_key: str) -> None:
        """Deactivate an active keypair: it cannot make API requests until it is activated again."""
        _set_active(access_key, False, "keypair deactivate")

    @keypair.command()
    @click.argument("access_key", metavar="ACCESSKEY")
    def delete(access_key: str) -> None:
        """Delete an existing keypair."""
        doc = "mutation($access_key: String!) {\n  delete_keypair(access_key: $access_key) { ok msg }\n}"
        payload = run_mutation(doc, {"access_key": access_key}, "delete_keypair",
                               action="keypair delete")
        print_mutation(payload, extra={"access_key": access_key})

    return keypair

