"""``backend.ai admin image list|rescan|alias|dealias|forget``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import click

from ..common import get_cli_context, print_done, print_info, print_json
from .base import (
    call,
    image_size,
    plain,
    print_mutation,
    run_mutation,
)

if TYPE_CHECKING:
    from ...request import APISession

#: the official ``admin image list`` columns
LIST_FIELDS = [plain("name"), plain("registry"), plain("architecture"), plain("tag"), plain("digest"),
               image_size("size_bytes"), plain("aliases")]


async def background_task_events(api: APISession, task_id: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """``(event, payload)`` of :func:`bai.client.events.background_task_events` (one SSE reader)."""
    from ...events import background_task_events as events_of

    async for event in events_of(api, task_id):
        yield event.name, event.data


def make_group(name: str = "image", help_text: str | None = None) -> click.Group:
    @click.group(name=name, help=help_text)
    def image() -> None:
        """Image administration commands."""

    @image.command(name="list")
    @click.option("--operation", is_flag=True, help="Get operational images only.")
    def list_(operation: bool) -> None:
        """Show the list of registered images in this cluster."""
        from ..image import show_images

        show_images(operation=operation)

    @image.command()
    @click.option("-r", "--registry", default=None,
                  help="The name of the configured Docker registry to scan (default: all of them).")
    def rescan(registry: str | None) -> None:
        """
        Update the kernel image metadata from the configured docker registries; waits until the
        scan ends, showing its progress.
        """
        json_mode = get_cli_context().json_mode

        async def _go(api: APISession) -> dict[str, Any]:
            from ...exceptions import BackendClientError
            from ...gql import mutate

            doc = "mutation($registry: String) {\n  rescan_images(registry: $registry) { ok msg task_id }\n}"
            started = await mutate(api, doc, {"registry": registry}, "rescan_images")
            task_id = started.get("task_id")
            if not task_id:
                return {"ok": True, "msg": started.get("msg"), "task_id": None}
            if not json_mode:
                print_info("Started updating the image metadata from the configured registries.")
            last: tuple[str, dict[str, Any]] = ("", {})
            async for event, payload in background_task_events(api, str(task_id)):
                last = (event, payload)
                if not json_mode and event == "bgtask_updated" and payload.get("message"):
                    print_info(f"[{payload.get('current_progress')}/{payload.get('total_progress')}] "
                               f"{payload['message']}")
            if last[0] == "bgtask_failed":
                raise BackendClientError(f"Error occurred: {last[1].get('message')}")
            if last[0] == "bgtask_cancelled":
                raise BackendClientError("Registry scanning has been cancelled in the middle.")
            return {"ok": True, "msg": last[1].get("message") or started.get("msg"), "task_id": task_id}

        result = call(_go, action="image rescan")
        if json_mode:
            print_json(result)
        else:
            print_done("Finished registry scanning." + (f" {result['msg']}" if result.get("msg") else ""))

    @image.command()
    @click.argument("alias")
    @click.argument("target")
    @click.option("--arch", default=None, help="Set an explicit architecture.")
    def alias(alias: str, target: str, arch: str | None) -> None:
        """Add an image alias: ALIAS names the image TARGET."""
        variables: dict[str, Any] = {"alias": alias, "target": target}
        if arch:
            doc = ("mutation($alias: String!, $target: String!, $architecture: String) {\n"
                   "  alias_image(alias: $alias, target: $target, architecture: $architecture) { ok msg }\n}")
            variables["architecture"] = arch
        else:
            doc = ("mutation($alias: String!, $target: String!) {\n"
                   "  alias_image(alias: $alias, target: $target) { ok msg }\n}")
        payload = run_mutation(doc, variables, "alias_image", action="image alias")
        _done(payload, f"An alias has created: {alias} -> {target}", {"alias": alias, "target": target})

    @image.command()
    @click.argument("alias")
    def dealias(alias: str) -> None:
        """Remove an image alias."""
        doc = "mutation($alias: String!) {\n  dealias_image(alias: $alias) { ok msg }\n}"
        payload = run_mutation(doc, {"alias": alias}, "dealias_image", action="image dealias")
        _done(payload, f"The alias has been removed: {alias}", {"alias": alias})

    @image.command()
    @click.argument("reference")
    @click.option("--arch", default="x86_64", show_default=True, help="The image's architecture.")
    def forget(reference: str, arch: str) -> None:
        """Forget (remove from the image list) the image REFERENCE; the registry keeps it."""
        doc = ("mutation($reference: String!, $architecture: String!) {\n"
               "  forget_image(reference: $reference, architecture: $architecture) { ok msg }\n}")
        payload = run_mutation(doc, {"reference": reference, "architecture": arch}, "forget_image",
                               action="image forget")
        _done(payload, f"The image has been forgotten: {reference} ({arch})", {"reference": reference})

    return image


def _done(payload: dict[str, Any], message: str, extra: dict[str, Any]) -> None:
    if get_cli_context().json_mode:
        print_mutation(payload, extra=extra)
    else:
        print_done(message)
