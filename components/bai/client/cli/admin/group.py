"""``backend.ai admin group list|info|add|update|delete|purge|add-users|remove-users``.

A group is named by its ID (UUID) as in the original; where the original wants GROUP_ID a name
is accepted too, when exactly one visible project has it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .base import (
    BoolExpr,
    JSONText,
    call,
    confirm,
    is_uuid,
    nested_text,
    plain,
    print_item,
    print_list,
    print_mutation,
    refs,
    run_mutation,
    set_if_given,
    slots,
    yes_option,
)

if TYPE_CHECKING:
    from ...request import APISession

#: the official ``admin group list`` columns
LIST_FIELDS = [plain("id"), plain("name"), plain("is_active"), plain("created_at"), plain("integration_id")]
#: the official ``admin group info`` columns
DETAIL_FIELDS = [
    plain("id"), plain("name"), plain("description"), plain("is_active"), plain("created_at"),
    plain("domain_name"), slots("total_resource_slots"), nested_text("allowed_vfolder_hosts"),
    plain("integration_id"),
]
_CREATED_FIELDS = [plain("id"), plain("domain_name"), plain("name")]
_MODIFY = ("mutation($gid: UUID!, $input: ModifyGroupInput!) {\n"
           "  modify_group(gid: $gid, props: $input) { ok msg }\n}")
_VFOLDER_HELP = ("Allowed virtual folder hosts and permissions for them, as JSON "
                 '(e.g. \'{"HOST_NAME": ["create-vfolder", "modify-vfolder"]}\').')


async def resolve_group_id(api: APISession, ref: str) -> str:
    """The ID of the project ``ref`` names: itself when it is a UUID, else the one visible project
    with that name."""
    from ...exceptions import BackendClientError
    from ...gql import query

    if is_uuid(ref):
        return ref
    found = (await query(api, "query($name: String!) { groups_by_name(name: $name) { id domain_name } }",
                         {"name": ref})).get("groups_by_name") or []
    if not found:
        raise BackendClientError(f"There is no group (project) named {ref!r}")
    if len(found) > 1:
        domains = ", ".join(str(g.get("domain_name")) for g in found)
        raise BackendClientError(f"{len(found)} groups are named {ref!r} (domains {domains}): give its ID")
    return str(found[0]["id"])


def _modify(ref: str, props: dict[str, Any], action: str) -> dict[str, Any]:
    async def _go(api: APISession) -> dict[str, Any]:
        from ...gql import mutate

        gid = await resolve_group_id(api, ref)
        return {**await mutate(api, _MODIFY, {"gid": gid, "input": props}, "modify_group"), "gid": gid}

    return call(_go, action=action)


def _by_gid(ref: str, root: str, action: str) -> dict[str, Any]:
    async def _go(api: APISession) -> dict[str, Any]:
        from ...gql import mutate

        gid = await resolve_group_id(api, ref)
        doc = f"mutation($gid: UUID!) {{\n  {root}(gid: $gid) {{ ok msg }}\n}}"
        return {**await mutate(api, doc, {"gid": gid}, root), "gid": gid}

    return call(_go, action=action)


def _print(payload: dict[str, Any]) -> None:
    print_mutation(payload, extra={"gid": payload.pop("gid")})


def make_group(name: str = "group", help_text: str | None = None) -> click.Group:
    @click.group(name=name, help=help_text)
    def group() -> None:
        """User group (project) administration commands"""

    @group.command()
    @click.argument("id_or_name")
    def info(id_or_name: str) -> None:
        """
        Show the information about a group (project) by ID or name (a superadmin may see several
        groups with one name in different domains: the first is shown).
        """
        async def _go(api: APISession) -> Any:
            from ...gql import query

            selection = " ".join(refs(DETAIL_FIELDS))
            if is_uuid(id_or_name):
                doc = f"query($gid: UUID!) {{ group(id: $gid) {{ {selection} }} }}"
                return (await query(api, doc, {"gid": id_or_name}))["group"]
            doc = (f"query($name: String!, $domain_name: String) {{ groups_by_name(name: $name, "
                   f"domain_name: $domain_name) {{ {selection} }} }}")
            found = (await query(api, doc, {"name": id_or_name, "domain_name": None}))["groups_by_name"] or []
            return found[0] if found else None

        print_item(call(_go, action="group info"), DETAIL_FIELDS, what="group")

    @group.command(name="list")
    @click.option("-d", "--domain-name", default=None, help="Domain name to list groups belongs to it.")
    def list_(domain_name: str | None) -> None:
        """List groups (projects): a domain's, or those you belong to."""
        async def _go(api: APISession) -> Any:
            from ...gql import query

            doc = (f"query($domain_name: String) {{ groups(domain_name: $domain_name) "
                   f"{{ {' '.join(refs(LIST_FIELDS))} }} }}")
            return (await query(api, doc, {"domain_name": domain_name}))["groups"]

        print_list(call(_go, action="group list") or [], LIST_FIELDS)

    @group.command()
    @click.argument("domain_name", metavar="DOMAIN_NAME")
    @click.argument("name", metavar="NAME")
    @click.option("-d", "--description", default="", help="Description of the new group.")
    @click.option("-i", "--inactive", is_flag=True, help="The new group will be inactive.")
    @click.option("--total-resource-slots", type=JSONText(), default="{}", show_default=True,
                  help="Set total resource slots (JSON).")
    @click.option("--vfolder-host-perms", "--vfolder-host-permissions", "--vfhost-perms",
                  "--allowed-vfolder-hosts", "vfolder_host_perms", type=JSONText(), default="{}",
                  help=_VFOLDER_HELP)
    def add(domain_name: str, name: str, description: str, inactive: bool, total_resource_slots: str,
            vfolder_host_perms: str) -> None:
        """
        Add a new group (project) to a domain.

        \b
        DOMAIN_NAME: Name of the domain where the new group belongs to.
        NAME: Name of the new group.
        """
        doc = ("mutation($name: String!, $input: GroupInput!) {\n"
               "  create_group(name: $name, props: $input) {\n"
               f"    ok msg group {{ {' '.join(refs(_CREATED_FIELDS))} }}\n  }}\n}}")
        props = {"description": description, "is_active": not inactive, "domain_name": domain_name,
                 "total_resource_slots": total_resource_slots, "allowed_vfolder_hosts": vfolder_host_perms,
                 "integration_id": None}
        payload = run_mutation(doc, {"name": name, "input": props}, "create_group", action="group add")
        print_mutation(payload, item_key="group")

    @group.command()
    @click.argument("gid", metavar="GROUP_ID")
    @click.option("-n", "--name", default=None, help="New name of the group.")
    @click.option("-d", "--description", default=None, help="Description of the group.")
    @click.option("--is-active", type=BoolExpr(), default=None, help="Set the group active or inactive.")
    @click.option("--total-resource-slots", type=JSONText(), default=None, help="Update total resource slots.")
    @click.option("--vfolder-host-perms", "--vfolder-host-permissions", "--vfhost-perms",
                  "--allowed-vfolder-hosts", "vfolder_host_perms", type=JSONText(), default=None,
                  help=_VFOLDER_HELP)
    def update(gid: str, name: str | None, description: str | None, is_active: bool | None,
               total_resource_slots: str | None, vfolder_host_perms: str | None) -> None:
        """
        Update an existing group; only the options given change.

        \b
        GROUP_ID: ID (or unique name) of the group to update.
        """
        props = set_if_given({}, name=name, description=description, is_active=is_active,
                             total_resource_slots=total_resource_slots, allowed_vfolder_hosts=vfolder_host_perms)
        _print(_modify(gid, props, "group update"))

    @group.command()
    @click.argument("gid", metavar="GROUP_ID")
    def delete(gid: str) -> None:
        """Inactivate an existing group (purge removes it)."""
        _print(_by_gid(gid, "delete_group", "group delete"))

    @group.command()
    @click.argument("gid", metavar="GROUP_ID")
    @yes_option
    def purge(gid: str, yes: bool) -> None:
        """Delete an existing group. This action cannot be undone."""
        confirm(yes)
        _print(_by_gid(gid, "purge_group", "group purge"))

    @group.command(name="add-users")
    @click.argument("gid", metavar="GROUP_ID")
    @click.argument("user_uuids", metavar="USER_UUIDS", nargs=-1, required=True)
    def add_users(gid: str, user_uuids: tuple[str, ...]) -> None:
        """
        Add users to a group.

        \b
        GROUP_ID: The group the users will belong to.
        USER_UUIDS: The UUIDs of the users to add.
        """
        _print(_modify(gid, {"user_update_mode": "add", "user_uuids": list(user_uuids)}, "group add-users"))

    @group.command(name="remove-users")
    @click.argument("gid", metavar="GROUP_ID")
    @click.argument("user_uuids", metavar="USER_UUIDS", nargs=-1, required=True)
    def remove_users(gid: str, user_uuids: tuple[str, ...]) -> None:
        """
        Remove users from a group.

        \b
        GROUP_ID: The group the users belong to.
        USER_UUIDS: The UUIDs of the users to remove.
        """
        _print(_modify(gid, {"user_update_mode": "remove", "user_uuids": list(user_uuids)},
                       "group remove-users"))

    return group
