"""``backend.ai admin user list|info|add|update|delete|purge``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .base import (
    BoolExpr,
    CommaList,
    Paging,
    call,
    confirm,
    fetch_list,
    is_uuid,
    names,
    paging_options,
    plain,
    print_item,
    print_list,
    print_mutation,
    refs,
    run_mutation,
    set_if_given,
    yes_option,
)

if TYPE_CHECKING:
    from ...request import APISession

#: the official ``admin user list`` / ``info`` columns
USER_FIELDS = [
    plain("uuid"), plain("username"), plain("role"), plain("email"), plain("full_name"),
    plain("need_password_change"), plain("status"), plain("status_info"), plain("created_at"),
    plain("domain_name"), names("groups { id name }"), plain("allowed_client_ip"),
    plain("sudo_session_enabled"), plain("main_access_key"),
]
_CREATED_FIELDS = [plain("domain_name"), plain("email"), plain("username"), plain("uuid"),
                   names("groups { id name }")]

_ROLES = click.Choice(["superadmin", "admin", "user", "monitor"], case_sensitive=False)
_STATUSES = click.Choice(["active", "inactive", "deleted", "before-verification"], case_sensitive=False)


def make_group(name: str = "user", help_text: str | None = None) -> click.Group:
    @click.group(name=name, help=help_text)
    def user() -> None:
        """User administration commands."""

    @user.command()
    @click.option("-e", "--email", default=None, help="Email of a user to display (default: yourself).")
    def info(email: str | None) -> None:
        """Show the information about the given user by email (yourself without --email)."""
        async def _go(api: APISession) -> Any:
            from ...gql import query

            if email is None:
                doc = f"query {{ user {{ {' '.join(refs(USER_FIELDS))} }} }}"
                return (await query(api, doc))["user"]
            doc = f"query($email: String) {{ user(email: $email) {{ {' '.join(refs(USER_FIELDS))} }} }}"
            return (await query(api, doc, {"email": email}))["user"]

        print_item(call(_go, action="user info"), USER_FIELDS, what="user")

    @user.command(name="list")
    @click.option("-s", "--status", type=_STATUSES, default=None,
                  help="Filter users in a specific state (active, inactive, deleted, before-verification).")
    @click.option("-g", "--group", default=None, help="Filter by group (project) ID.")
    @paging_options
    def list_(status: str | None, group: str | None, filter_: str | None, order: str | None,
              offset: int, limit: int | None) -> None:
        """
        List users (admin privilege required).

        \b
        FILTER/ORDER COLUMNS
            uuid, username, role, email, full_name, need_password_change, status,
            status_info, created_at, modified_at, domain_name
        """
        paging = Paging(offset, limit, filter_, order,
                        extra={"status": (status, "String"), "group_id": (group, "UUID")})
        items, total = call(lambda api: fetch_list(api, "user_list", USER_FIELDS, paging), action="user list")
        print_list(items, USER_FIELDS, total)

    @user.command(name="add")
    @click.argument("domain_name", metavar="DOMAIN_NAME")
    @click.argument("email", metavar="EMAIL")
    @click.argument("password", metavar="PASSWORD")
    @click.option("-u", "--username", default="", help="Username (default: the email's local part).")
    @click.option("-n", "--full-name", default="", help="Full name.")
    @click.option("-r", "--role", type=_ROLES, default="user", show_default=True, help="Role of the user.")
    @click.option("-s", "--status", type=_STATUSES, default="active", show_default=True, help="Account status.")
    @click.option("--need-password-change", is_flag=True,
                  help="The user must change the password (useful when an admin sets it).")
    @click.option("--allowed-ip", type=CommaList(), default=None,
                  help='Allowed client IPs or CIDRs, comma-separated (e.g. "127.0.0.1,10.0.0.0/8").')
    @click.option("--desc", "--description", "description", default="", help="Description of the user.")
    @click.option("--sudo-session-enabled", is_flag=True,
                  help="Enable passwordless sudo for the user inside compute sessions.")
    @click.option("-g", "--group", "--groups", "groups", type=CommaList(), default="default", show_default=True,
                  help="Projects (names or IDs, comma-separated) the user joins.")
    def add(domain_name: str, email: str, password: str, username: str, full_name: str, role: str,
            status: str, need_password_change: bool, allowed_ip: list[str] | None, description: str,
            sudo_session_enabled: bool, groups: list[str]) -> None:
        """
        Create a new user in DOMAIN_NAME.

        \b
        DOMAIN_NAME: Name of the domain where the new user belongs to.
        EMAIL: Email of the new user (also the login name).
        PASSWORD: Password of the new user.
        """
        async def _go(api: APISession) -> dict[str, Any]:
            from ...gql import mutate

            group_ids = [await _group_id(api, g, domain_name) for g in groups]
            props: dict[str, Any] = {
                "password": password, "role": role.lower(), "status": status.lower(),
                "need_password_change": need_password_change, "description": description,
                "domain_name": domain_name, "totp_activated": False,
                "sudo_session_enabled": sudo_session_enabled, "group_ids": group_ids,
            }
            set_if_given(props, username=username or None, full_name=full_name or None,
                         allowed_client_ip=allowed_ip)
            doc = ("mutation($email: String!, $input: UserInput!) {\n"
                   "  create_user(email: $email, props: $input) {\n"
                   f"    ok msg user {{ {' '.join(refs(_CREATED_FIELDS))} }}\n  }}\n}}")
            return await mutate(api, doc, {"email": email, "input": props}, "create_user")

        print_mutation(call(_go, action="user add"), item_key="user", fields=_CREATED_FIELDS)

    @user.command()
    @click.argument("email", metavar="EMAIL")
    @click.option("-p", "--password", default=None, help="Password.")
    @click.option("-u", "--username", default=None, help="Username.")
    @click.option("-n", "--full-name", default=None, help="Full name.")
    @click.option("-d", "--domain-name", default=None, help="Domain name.")
    @click.option("-r", "--role", type=_ROLES, default=None, help="Role of the user.")
    @click.option("-s", "--status", type=_STATUSES, default=None, help="Account status.")
    @click.option("--need-password-change", type=BoolExpr(), default=None,
                  help="Whether the user must change the password.")
    @click.option("--allowed-ip", type=CommaList(), default=None,
                  help="Allowed client IPs or CIDRs, comma-separated (an empty string clears them).")
    @click.option("--description", default=None, help="Description of the user.")
    @click.option("--sudo-session-enabled", type=BoolExpr(), default=None,
                  help="Enable passwordless sudo inside compute sessions.")
    @click.option("--main-access-key", default=None, help="Set the main access key (one of the user's own).")
    def update(email: str, password: str | None, username: str | None, full_name: str | None,
               domain_name: str | None, role: str | None, status: str | None,
               need_password_change: bool | None, allowed_ip: list[str] | None, description: str | None,
               sudo_session_enabled: bool | None, main_access_key: str | None) -> None:
        """
        Update an existing user; only the options given change.

        \b
        EMAIL: Email of the user to update.
        """
        props = set_if_given(
            {}, password=password, username=username, full_name=full_name, domain_name=domain_name,
            role=role.lower() if role else None, status=status.lower() if status else None,
            need_password_change=need_password_change, allowed_client_ip=allowed_ip,
            description=description, sudo_session_enabled=sudo_session_enabled,
            main_access_key=main_access_key,
        )
        doc = ("mutation($email: String!, $input: ModifyUserInput!) {\n"
               "  modify_user(email: $email, props: $input) { ok msg }\n}")
        payload = run_mutation(doc, {"email": email, "input": props}, "modify_user",
                               action="user update")
        print_mutation(payload, extra={"email": email})

    @user.command()
    @click.argument("email", metavar="EMAIL")
    def delete(email: str) -> None:
        """
        Inactivate an existing user (status "deleted"; purge removes it).

        \b
        EMAIL: Email of the user to inactivate.
        """
        doc = "mutation($email: String!) {\n  delete_user(email: $email) { ok msg }\n}"
        payload = run_mutation(doc, {"email": email}, "delete_user", action="user delete")
        print_mutation(payload, extra={"email": email})

    @user.command()
    @click.argument("email", metavar="EMAIL")
    @click.option("--purge-shared-vfolders", is_flag=True,
                  help="Also delete the user's shared virtual folders (accepted for compatibility).")
    @yes_option
    def purge(email: str, purge_shared_vfolders: bool, yes: bool) -> None:
        """
        Delete an existing user and their keypairs. This action cannot be undone.

        \b
        EMAIL: Email of the user to delete.
        """
        confirm(yes)
        doc = ("mutation($email: String!, $input: PurgeUserInput!) {\n"
               "  purge_user(email: $email, props: $input) { ok msg }\n}")
        variables = {"email": email, "input": {"purge_shared_vfolders": purge_shared_vfolders}}
        payload = run_mutation(doc, variables, "purge_user", action="user purge")
        print_mutation(payload, extra={"email": email})

    user.add_command(add, "create")  # the official alias
    return user



async def _group_id(api: APISession, ref: str, domain_name: str) -> str:
    """A project's ID from its ID or its name in ``domain_name``."""
    from ...exceptions import BackendClientError
    from ...gql import query

    if is_uuid(ref):
        return ref
    doc = ("query($name: String!, $domain_name: String) {\n"
           "  groups_by_name(name: $name, domain_name: $domain_name) { id }\n}")
    found = (await query(api, doc, {"name": ref, "domain_name": domain_name})).get("groups_by_name") or []
    if not found:
        raise BackendClientError(f"Cannot find the group {ref!r} in the domain {domain_name!r}")
    return str(found[0]["id"])
