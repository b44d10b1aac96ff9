"""``backend.ai admin scaling-group list|info|add|update|delete|associate-scaling-group|
dissociate-scaling-group|associate-group|dissociate-group``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .base import (
    BoolExpr,
    JSONText,
    call,
    nested,
    plain,
    print_item,
    print_list,
    print_mutation,
    refs,
    run_mutation,
    set_if_given,
)

if TYPE_CHECKING:
    from ...request import APISession

#: the official ``admin scaling-group list`` columns
LIST_FIELDS = [
    plain("name"), plain("description"), plain("is_active"), plain("is_public"), plain("created_at"),
    plain("driver"), plain("scheduler"), plain("use_host_network"), plain("wsproxy_addr"),
    plain("wsproxy_api_token"),
]
#: the official ``admin scaling-group info`` columns
DETAIL_FIELDS = [*LIST_FIELDS[:6], nested("driver_opts"), LIST_FIELDS[6], nested("scheduler_opts"),
                 *LIST_FIELDS[7:]]


def make_group(name: str = "scaling-group", help_text: str | None = None) -> click.Group:
    @click.group(name=name, help=help_text)
    def scaling_group() -> None:
        """Scaling group (resource group) administration commands."""

    @scaling_group.command()
    @click.argument("name")
    def info(name: str) -> None:
        """Show the information about the given scaling group (superadmin privilege required)."""
        async def _go(api: APISession) -> Any:
            from ...gql import query

            doc = f"query($name: String) {{ scaling_group(name: $name) {{ {' '.join(refs(DETAIL_FIELDS))} }} }}"
            return (await query(api, doc, {"name": name}))["scaling_group"]

        print_item(call(_go, action="scaling-group info"), DETAIL_FIELDS, what="scaling group")

    @scaling_group.command(name="list")
    def list_() -> None:
        """List scaling groups (superadmin privilege required)."""
        async def _go(api: APISession) -> Any:
            from ...gql import query

            doc = (f"query($is_active: Boolean) {{ scaling_groups(is_active: $is_active) "
                   f"{{ {' '.join(refs(LIST_FIELDS))} }} }}")
            return (await query(api, doc, {"is_active": None}))["scaling_groups"]

        print_list(call(_go, action="scaling-group list") or [], LIST_FIELDS)

    @scaling_group.command()
    @click.argument("name", metavar="NAME")
    @click.option("-d", "--description", "--desc", "description", default="",
                  help="Description of the new scaling group.")
    @click.option("--inactive", is_flag=True, help="The new scaling group will be inactive.")
    @click.option("--private", is_flag=True,
                  help="The new scaling group will be private (not offered to users' new sessions).")
    @click.option("--driver", default="static", show_default=True, help="Set driver.")
    @click.option("--driver-opts", type=JSONText(), default="{}", show_default=True,
                  help="Set driver options as a JSON string.")
    @click.option("--scheduler", default="fifo", show_default=True, help="Set scheduler.")
    @click.option("--scheduler-opts", type=JSONText(), default="{}", show_default=True,
                  help="Set scheduler options as a JSON string.")
    @click.option("--use-host-network", is_flag=True, help="Run containers in host networking mode.")
    @click.option("--wsproxy-addr", default=None, help="Set app proxy address.")
    @click.option("--wsproxy-api-token", default=None, help="Set app proxy API token.")
    def add(name: str, description: str, inactive: bool, private: bool, driver: str, driver_opts: str,
            scheduler: str, scheduler_opts: str, use_host_network: bool, wsproxy_addr: str | None,
            wsproxy_api_token: str | None) -> None:
        """
        Add a new scaling group.

        \b
        NAME: Name of the new scaling group.
        """
        props = {"description": description, "is_active": not inactive, "is_public": not private,
                 "driver": driver, "driver_opts": driver_opts, "scheduler": scheduler,
                 "scheduler_opts": scheduler_opts, "use_host_network": use_host_network,
                 "wsproxy_addr": wsproxy_addr, "wsproxy_api_token": wsproxy_api_token}
        doc = ("mutation($name: String!, $input: CreateScalingGroupInput!) {\n"
               "  create_scaling_group(name: $name, props: $input) { ok msg scaling_group { name } }\n}")
        payload = run_mutation(doc, {"name": name, "input": props}, "create_scaling_group",
                               action="scaling-group add")
        print_mutation(payload, item_key="scaling_group")

    @scaling_group.command()
    @click.argument("name", metavar="NAME")
    @click.option("-d", "--description", "--desc", "description", default=None,
                  help="Description of the scaling group.")
    @click.option("-a", "--active", type=BoolExpr(), default=None, help="Change the active/inactive status.")
    @click.option("--private", type=BoolExpr(), default=None, help="Change the private status.")
    @click.option("--driver", default=None, help="Set driver.")
    @click.option("--driver-opts", type=JSONText(), default=None, help="Set driver options as a JSON string.")
    @click.option("--scheduler", default=None, help="Set scheduler.")
    @click.option("--scheduler-opts", type=JSONText(), default=None, help="Set scheduler options as a JSON string.")
    @click.option("--use-host-network", type=BoolExpr(), default=None, help="Change the host-networking mode.")
    @click.option("--wsproxy-addr", default=None, help="Set app proxy address.")
    @click.option("--wsproxy-api-token", default=None, help="Set app proxy API token.")
    def update(name: str, description: str | None, active: bool | None, private: bool | None,
               driver: str | None, driver_opts: str | None, scheduler: str | None,
               scheduler_opts: str | None, use_host_network: bool | None, wsproxy_addr: str | None,
               wsproxy_api_token: str | None) -> None:
        """
        Update an existing scaling group; only the options given change.

        \b
        NAME: Name of the scaling group to update.
        """
        props = set_if_given({}, description=description, is_active=active,
                             is_public=None if private is None else not private, driver=driver,
                             driver_opts=driver_opts, scheduler=scheduler, scheduler_opts=scheduler_opts,
                             use_host_network=use_host_network, wsproxy_addr=wsproxy_addr,
                             wsproxy_api_token=wsproxy_api_token)
        doc = ("mutation($name: String!, $input: ModifyScalingGroupInput!) {\n"
               "  modify_scaling_group(name: $name, props: $input) { ok msg }\n}")
        payload = run_mutation(doc, {"name": name, "input": props}, "modify_scaling_group",
                               action="scaling-group update")
        print_mutation(payload, extra={"name": name})

    @scaling_group.command()
    @click.argument("name", metavar="NAME")
    def delete(name: str) -> None:
        """Delete an existing scaling group."""
        doc = "mutation($name: String!) {\n  delete_scaling_group(name: $name) { ok msg }\n}"
        payload = run_mutation(doc, {"name": name}, "delete_scaling_group", action="scaling-group delete")
        print_mutation(payload, extra={"name": name})

    def _associate(root: str, target_arg: str, target_type: str, sgroup: str, target: str, action: str,
                   detail: str) -> None:
        doc = (f"mutation($scaling_group: String!, ${target_arg}: {target_type}!) {{\n"
               f"  {root}(scaling_group: $scaling_group, {target_arg}: ${target_arg}) {{ ok msg }}\n}}")
        payload = run_mutation(doc, {"scaling_group": sgroup, target_arg: target}, root, action=action)
        print_mutation(payload, extra={"detail_msg": detail})

    @scaling_group.command(name="associate-scaling-group")
    @click.argument("sgroup", metavar="SCALING_GROUP")
    @click.argument("domain", metavar="DOMAIN")
    def associate_scaling_group(sgroup: str, domain: str) -> None:
        """Associate a domain with a scaling group."""
        _associate("associate_scaling_group_with_domain", "domain", "String", sgroup, domain,
                   "scaling-group associate-scaling-group",
                   f"Scaling group {sgroup} is associated with domain {domain}.")

    @scaling_group.command(name="dissociate-scaling-group")
    @click.argument("sgroup", metavar="SCALING_GROUP")
    @click.argument("domain", metavar="DOMAIN")
    def dissociate_scaling_group(sgroup: str, domain: str) -> None:
        """Dissociate a domain from a scaling group."""
        _associate("disassociate_scaling_group_with_domain", "domain", "String", sgroup, domain,
                   "scaling-group dissociate-scaling-group",
                   f"Scaling group {sgroup} is dissociated from domain {domain}.")

    @scaling_group.command(name="associate-group")
    @click.argument("sgroup", metavar="SCALING_GROUP")
    @click.argument("group_id", metavar="GROUP_ID")
    def associate_group(sgroup: str, group_id: str) -> None:
        """Associate a group (project, by ID) with a scaling group."""
        _associate("associate_scaling_group_with_user_group", "user_group", "UUID", sgroup, group_id,
                   "scaling-group associate-group",
                   f"Scaling group {sgroup} is associated with group {group_id}.")

    @scaling_group.command(name="dissociate-group")
    @click.argument("sgroup", metavar="SCALING_GROUP")
    @click.argument("group_id", metavar="GROUP_ID")
    def dissociate_group(sgroup: str, group_id: str) -> None:
        """Dissociate a group (project, by ID) from a scaling group."""
        _associate("disassociate_scaling_group_with_user_group", "user_group", "UUID", sgroup, group_id,
                   "scaling-group dissociate-group",
                   f"Scaling group {sgroup} is dissociated from group {group_id}.")

    return scaling_group
