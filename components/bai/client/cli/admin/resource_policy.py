"""``backend.ai admin keypair-resource-policy list|info|add|update|delete``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .base import (
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
    slots_text,
    yes_option,
)

if TYPE_CHECKING:
    from ...request import APISession

#: the official ``admin keypair-resource-policy list`` / ``info`` columns
POLICY_FIELDS = [
    plain("name"), plain("created_at"), slots_text("total_resource_slots"), plain("max_concurrent_sessions"),
    plain("idle_timeout"), plain("max_containers_per_session"), nested_text("allowed_vfolder_hosts"),
    plain("max_session_lifetime"), plain("max_pending_session_count"),
    slots_text("max_pending_session_resource_slots"), plain("max_concurrent_sftp_sessions"),
]
_UNSPECIFIED = click.Choice(["LIMITED", "UNLIMITED"], case_sensitive=False)
_VFOLDER_HELP = ("Allowed virtual folder hosts and permissions for them, as JSON "
                 '(e.g. \'{"HOST_NAME": ["create-vfolder", "modify-vfolder"]}\').')


def _policy_options(creating: bool) -> Any:
    """The options of ``add`` (with the original's defaults) and ``update`` (all unset)."""
    def d(value: Any) -> Any:
        return value if creating else None

    def decorate(fn: Any) -> Any:
        opts = [
            click.option("--default-for-unspecified", type=_UNSPECIFIED, default=d("UNLIMITED"),
                         show_default=creating, help="Default behavior for unspecified resources."),
            click.option("--total-resource-slots", type=JSONText(), default=d("{}"), show_default=creating,
                         help='Set total resource slots as JSON (e.g. \'{"cpu": "4", "mem": "8g"}\').'),
            click.option("--max-session-lifetime", type=click.IntRange(min=0), default=d(0),
                         show_default=creating, help="Maximum lifetime to keep session alive (seconds, 0: no limit)."),
            click.option("--max-concurrent-sessions", type=click.IntRange(min=0), default=d(30),
                         show_default=creating, help="Number of maximum concurrent sessions."),
            click.option("--max-concurrent-sftp-sessions", type=click.IntRange(min=0), default=d(30),
                         show_default=creating, help="Number of maximum concurrent SFTP sessions."),
            click.option("--max-containers-per-session", type=click.IntRange(min=1), default=d(1),
                         show_default=creating, help="Number of maximum containers per session."),
            click.option("--idle-timeout", type=click.IntRange(min=0), default=d(1800), show_default=creating,
                         help="The maximum period of time allowed for kernels to wait further requests."),
            click.option("--vfolder-host-perms", "--vfolder-host-permissions", "--vfhost-perms",
                         "--allowed-vfolder-hosts", "vfolder_host_perms", type=JSONText(), default=None,
                         help=_VFOLDER_HELP),
            click.option("--max-pending-session-count", type=click.IntRange(min=0), default=None,
                         help="Number of maximum pending sessions."),
            click.option("--max-pending-session-resource-slots", type=JSONText(), default=None,
                         help="Set maximum resource slots for pending sessions (JSON)."),
        ]
        for opt in reversed(opts):
            fn = opt(fn)
        return fn

    return decorate


def _props(opts: dict[str, Any]) -> dict[str, Any]:
    return set_if_given(
        {}, default_for_unspecified=(opts["default_for_unspecified"] or "").upper() or None,
        total_resource_slots=opts["total_resource_slots"], max_session_lifetime=opts["max_session_lifetime"],
        max_concurrent_sessions=opts["max_concurrent_sessions"],
        max_concurrent_sftp_sessions=opts["max_concurrent_sftp_sessions"],
        max_containers_per_session=opts["max_containers_per_session"], idle_timeout=opts["idle_timeout"],
        allowed_vfolder_hosts=opts["vfolder_host_perms"], max_pending_session_count=opts["max_pending_session_count"],
        max_pending_session_resource_slots=opts["max_pending_session_resource_slots"],
    )


def make_group(name: str = "keypair-resource-policy", help_text: str | None = None) -> click.Group:
    @click.group(name=name, help=help_text)
    def keypair_resource_policy() -> None:
        """KeyPair resource policy administration commands."""

    @keypair_resource_policy.command()
    @click.argument("name", required=False)
    def info(name: str | None) -> None:
        """Show details about a keypair resource policy (your keypair's without NAME)."""
        async def _go(api: APISession) -> Any:
            from ...gql import query

            doc = (f"query($name: String) {{ keypair_resource_policy(name: $name) "
                   f"{{ {' '.join(refs(POLICY_FIELDS))} }} }}")
            return (await query(api, doc, {"name": name}))["keypair_resource_policy"]

        print_item(call(_go, action="keypair-resource-policy info"), POLICY_FIELDS,
                   what="keypair resource policy")

    @keypair_resource_policy.command(name="list")
    def list_() -> None:
        """List keypair resource policies (admins: all; others: their own keypairs')."""
        async def _go(api: APISession) -> Any:
            from ...gql import query

            doc = f"query {{ keypair_resource_policies {{ {' '.join(refs(POLICY_FIELDS))} }} }}"
            return (await query(api, doc))["keypair_resource_policies"]

        print_list(call(_go, action="keypair-resource-policy list") or [], POLICY_FIELDS)

    @keypair_resource_policy.command()
    @click.argument("name", metavar="NAME")
    @_policy_options(creating=True)
    def add(name: str, **opts: Any) -> None:
        """
        Add a new keypair resource policy.

        \b
        NAME: Name of the new keypair resource policy.
        """
        doc = ("mutation($name: String!, $input: CreateKeyPairResourcePolicyInput!) {\n"
               "  create_keypair_resource_policy(name: $name, props: $input) {\n"
               "    ok msg resource_policy { name }\n  }\n}")
        payload = run_mutation(doc, {"name": name, "input": _props(opts)}, "create_keypair_resource_policy",
                               action="keypair-resource-policy add")
        print_mutation(payload, item_key="resource_policy")

    @keypair_resource_policy.command()
    @click.argument("name", metavar="NAME")
    @_policy_options(creating=False)
    def update(name: str, **opts: Any) -> None:
        """
        Update an existing keypair resource policy; only the options given change.

        \b
        NAME: Name of the keypair resource policy to update.
        """
        doc = ("mutation($name: String!, $input: ModifyKeyPairResourcePolicyInput!) {\n"
               "  modify_keypair_resource_policy(name: $name, props: $input) { ok msg }\n}")
        payload = run_mutation(doc, {"name": name, "input": _props(opts)}, "modify_keypair_resource_policy",
                               action="keypair-resource-policy update")
        print_mutation(payload, extra={"name": name})

    @keypair_resource_policy.command()
    @click.argument("name", metavar="NAME")
    @yes_option
    def delete(name: str, yes: bool) -> None:
        """
        Delete a keypair resource policy (refused while a keypair uses it).

        \b
        NAME: Name of the keypair resource policy to delete.
        """
        confirm(yes)
        doc = "mutation($name: String!) {\n  delete_keypair_resource_policy(name: $name) { ok msg }\n}"
        payload = run_mutation(doc, {"name": name}, "delete_keypair_resource_policy",
                               action="keypair-resource-policy delete")
        print_mutation(payload, extra={"name": name})

    return keypair_resource_policy
