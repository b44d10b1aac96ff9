"""``backend.ai admin domain list|info|add|update|delete|purge``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .base import (
    BoolExpr,
    CommaList,
    JSONText,
    call,
    confirm,
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

#: the official ``admin domain list`` / ``info`` columns
DOMAIN_FIELDS = [
    plain("name"), plain("description"), plain("is_active"), plain("created_at"),
    slots("total_resource_slots"), nested_text("allowed_vfolder_hosts"), plain("allowed_docker_registries"),
    plain("integration_id"),
]
_VFOLDER_HELP = ("Allowed virtual folder hosts and permissions for them, as JSON "
                 '(e.g. \'{"HOST_NAME": ["create-vfolder", "modify-vfolder"]}\').')


def make_group(name: str = "domain", help_text: str | None = None) -> click.Group:
    @click.group(name=name, help=help_text)
    def domain() -> None:
        """Domain administration commands."""

    @domain.command()
    @click.argument("name", required=False)
    def info(name: str | None) -> None:
        """Show the information about the given domain (your own without NAME)."""
        async def _go(api: APISession) -> Any:
            from ...gql import query

            doc = f"query($name: String) {{ domain(name: $name) {{ {' '.join(refs(DOMAIN_FIELDS))} }} }}"
            return (await query(api, doc, {"name": name}))["domain"]

        print_item(call(_go, action="domain info"), DOMAIN_FIELDS, what="domain")

    @domain.command(name="list")
    def list_() -> None:
        """List domains (superadmin privilege required)."""
        async def _go(api: APISession) -> Any:
            from ...gql import query

            return (await query(api, f"query {{ domains {{ {' '.join(refs(DOMAIN_FIELDS))} }} }}"))["domains"]

        print_list(call(_go, action="domain list") or [], DOMAIN_FIELDS)

    @domain.command()
    @click.argument("name", metavar="NAME")
    @click.option("-d", "--description", default="", help="Description of the new domain.")
    @click.option("--inactive", is_flag=True, help="The new domain will be inactive.")
    @click.option("--total-resource-slots", type=JSONText(), default="{}", show_default=True,
                  help='Total resource slots as JSON (e.g. \'{"cpu": "8", "mem": "16g"}\').')
    @click.option("--vfolder-host-perms", "--vfolder-host-permissions", "--vfhost-perms",
                  "--allowed-vfolder-hosts", "vfolder_host_perms", type=JSONText(), default=None,
                  help=_VFOLDER_HELP)
    @click.option("--allowed-docker-registries", type=CommaList(), default=None,
                  help="Allowed docker registries, comma-separated.")
    def add(name: str, description: str, inactive: bool, total_resource_slots: str,
            vfolder_host_perms: str | None, allowed_docker_registries: list[str] | None) -> None:
        """
        Add a new domain.

        \b
        NAME: Name of the new domain.
        """
        props = set_if_given({"description": description, "is_active": not inactive,
                              "total_resource_slots": total_resource_slots},
                             allowed_vfolder_hosts=vfolder_host_perms,
                             allowed_docker_registries=allowed_docker_registries)
        doc = ("mutation($name: String!, $input: DomainInput!) {\n"
               "  create_domain(name: $name, props: $input) { ok msg domain { name } }\n}")
        payload = run_mutation(doc, {"name": name, "input": props}, "create_domain", action="domain add")
        print_mutation(payload, item_key="domain")

    @domain.command()
    @click.argument("name", metavar="NAME")
    @click.option("--new-name", default=None, help="New name of the domain.")
    @click.option("--description", default=None, help="Set the description of the domain.")
    @click.option("--is-active", type=BoolExpr(), default=None, help="Change the active/inactive status.")
    @click.option("--total-resource-slots", type=JSONText(), default=None, help="Update total resource slots.")
    @click.option("--vfolder-host-perms", "--vfolder-host-permissions", "--vfhost-perms",
                  "--allowed-vfolder-hosts", "vfolder_host_perms", type=JSONText(), default=None,
                  help=_VFOLDER_HELP)
    @click.option("--allowed-docker-registries", type=CommaList(), default=None,
                  help="Allowed docker registries, comma-separated (an empty string clears them).")
    def update(name: str, new_name: str | None, description: str | None, is_active: bool | None,
               total_resource_slots: str | None, vfolder_host_perms: str | None,
               allowed_docker_registries: list[str] | None) -> None:
        """
        Update an existing domain; only the options given change.

        \b
        NAME: Name of the domain to update.
        """
        props = set_if_given({}, name=new_name, description=description, is_active=is_active,
                             total_resource_slots=total_resource_slots, allowed_vfolder_hosts=vfolder_host_perms,
                             allowed_docker_registries=allowed_docker_registries)
        doc = ("mutation($name: String!, $input: ModifyDomainInput!) {\n"
               "  modify_domain(name: $name, props: $input) { ok msg }\n}")
        payload = run_mutation(doc, {"name": name, "input": props}, "modify_domain", action="domain update")
        print_mutation(payload, extra={"name": name})

    @domain.command()
    @click.argument("name", metavar="NAME")
    def delete(name: str) -> None:
        """Inactivate an existing domain (purge removes it)."""
        doc = "mutation($name: String!) {\n  delete_domain(name: $name) { ok msg }\n}"
        payload = run_mutation(doc, {"name": name}, "delete_domain", action="domain delete")
        print_mutation(payload, extra={"name": name})

    @domain.command()
    @click.argument("name", metavar="NAME")
    @yes_option
    def purge(name: str, yes: bool) -> None:
        """Delete an existing (inactive, empty) domain. This action cannot be undone."""
        confirm(yes)
        doc = "mutation($name: String!) {\n  purge_domain(name: $name) { ok msg }\n}"
        payload = run_mutation(doc, {"name": name}, "purge_domain", action="domain purge")
        print_mutation(payload, extra={"name": name})

    return domain
