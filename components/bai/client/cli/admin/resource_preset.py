"""``backend.ai admin resource-preset list|add|update|delete``.

The official client 24.03 has no such group; the GraphQL calls are the original manager's
``resource_presets``, ``create_resource_preset(name, props: CreateResourcePresetInput!)``,
``modify_resource_preset(name, props: ModifyResourcePresetInput!)`` and
``delete_resource_preset(name)``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .base import (
    JSONText,
    call,
    plain,
    print_list,
    print_mutation,
    refs,
    run_mutation,
    set_if_given,
    size,
    slots,
)

if TYPE_CHECKING:
    from ...request import APISession

PRESET_FIELDS = [plain("name"), slots("resource_slots"), size("shared_memory")]


def make_group(name: str = "resource-preset", help_text: str | None = None) -> click.Group:
    @click.group(name=name, help=help_text)
    def resource_preset() -> None:
        """Resource preset administration commands."""

    @resource_preset.command(name="list")
    def list_() -> None:
        """List resource presets (every user may read them)."""
        async def _go(api: APISession) -> Any:
            from ...gql import query

            return (await query(api, f"query {{ resource_presets {{ {' '.join(refs(PRESET_FIELDS))} }} }}")
                    )["resource_presets"]

        print_list(call(_go, action="resource-preset list") or [], PRESET_FIELDS)

    @resource_preset.command()
    @click.argument("name", metavar="NAME")
    @click.option("--resource-slots", type=JSONText(), required=True,
                  help='The preset\'s resource slots as JSON (e.g. \'{"cpu": "1", "mem": "1g"}\').')
    @click.option("--shared-memory", default=None, help="Shared memory size (e.g. 64m).")
    def add(name: str, resource_slots: str, shared_memory: str | None) -> None:
        """
        Add a new resource preset.

        \b
        NAME: Name of the new resource preset.
        """
        doc = ("mutation($name: String!, $input: CreateResourcePresetInput!) {\n"
               "  create_resource_preset(name: $name, props: $input) {\n"
               f"    ok msg resource_preset {{ {' '.join(refs(PRESET_FIELDS))} }}\n  }}\n}}")
        props = set_if_given({"resource_slots": resource_slots}, shared_memory=shared_memory)
        payload = run_mutation(doc, {"name": name, "input": props}, "create_resource_preset",
                               action="resource-preset add")
        print_mutation(payload, item_key="resource_preset", fields=PRESET_FIELDS)

    @resource_preset.command()
    @click.argument("name", metavar="NAME")
    @click.option("--resource-slots", type=JSONText(), default=None, help="New resource slots as JSON.")
    @click.option("--shared-memory", default=None, help="New shared memory size (e.g. 64m).")
    def update(name: str, resource_slots: str | None, shared_memory: str | None) -> None:
        """
        Update an existing resource preset; only the options given change.

        \b
        NAME: Name of the resource preset to update.
        """
        doc = ("mutation($name: String!, $input: ModifyResourcePresetInput!) {\n"
               "  modify_resource_preset(name: $name, props: $input) { ok msg }\n}")
        props = set_if_given({}, resource_slots=resource_slots, shared_memory=shared_memory)
        payload = run_mutation(doc, {"name": name, "input": props}, "modify_resource_preset",
                               action="resource-preset update")
        print_mutation(payload, extra={"name": name})

    @resource_preset.command()
    @click.argument("name", metavar="NAME")
    def delete(name: str) -> None:
        """Delete a resource preset."""
        doc = "mutation($name: String!) {\n  delete_resource_preset(name: $name) { ok msg }\n}"
        payload = run_mutation(doc, {"name": name}, "delete_resource_preset", action="resource-preset delete")
        print_mutation(payload, extra={"name": name})

    return resource_preset
