"""``backend.ai image list [--customized]`` and ``image forget``: the images you may use, and your
own customized images (sessions saved with ``session convert-to-image``). ``admin image list``
shares :func:`show_images`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .admin.base import call, image_size, plain, print_list, refs
from .common import get_cli_context, print_done, print_json

if TYPE_CHECKING:
    from ..request import APISession

#: The label the manager gives a customized image: the name its owner chose.
CUSTOMIZED_NAME_LABEL = "ai.backend.customized-image.name"
#: ``image list --customized``: the reference (what sessions are created from) comes first.
CUSTOMIZED_FIELDS = [plain("reference"), plain("customized_name", "Customized Name"), plain("id", "ID"),
                     plain("architecture"), image_size("size_bytes")]
_CUSTOMIZED_QUERY = ("query { customized_images { id name registry tag architecture size_bytes "
                     "labels { key value } } }")


def reference_of(image: dict[str, Any]) -> str:
    """``registry/name:tag``: what ``session create`` and ``image forget`` take."""
    return f"{image.get('registry')}/{image.get('name')}:{image.get('tag')}"


def _customized_row(image: dict[str, Any]) -> dict[str, Any]:
    labels = {kv.get("key"): kv.get("value") for kv in image.get("labels") or [] if isinstance(kv, dict)}
    return {**image, "reference": reference_of(image), "customized_name": labels.get(CUSTOMIZED_NAME_LABEL)}


def show_images(*, operation: bool = False, customized: bool = False, action: str = "image list") -> None:
    """Print the images the caller may use (``operation``: the operation images), or their own
    customized images."""
    from .admin.image import LIST_FIELDS

    async def _go(api: APISession) -> list[dict[str, Any]]:
        from ..gql import query

        if customized:
            data = await query(api, _CUSTOMIZED_QUERY, {})
            return [_customized_row(i) for i in data.get("customized_images") or []]
        doc = (f"query($is_operation: Boolean) {{ images(is_operation: $is_operation) "
               f"{{ {' '.join(refs(LIST_FIELDS))} }} }}")
        return list((await query(api, doc, {"is_operation": operation}))["images"] or [])

    print_list(call(_go, action=action), CUSTOMIZED_FIELDS if customized else LIST_FIELDS)


def make_group(name: str = "image", help_text: str | None = None) -> click.Group:
    @click.group(name=name, help=help_text, short_help=help_text)
    def image() -> None:
        """Image commands."""

    @image.command(name="list")
    @click.option("--customized", is_flag=True,
                  help="Only your own customized images (sessions saved with session convert-to-image).")
    @click.option("--operation", is_flag=True, help="Only the operation images.")
    def list_(customized: bool, operation: bool) -> None:
        """Show the images you may create sessions from."""
        show_images(operation=operation, customized=customized)

    @image.command()
    @click.argument("reference_or_id", metavar="REFERENCE_OR_ID")
    @click.option("--arch", default=None,
                  help="The image's architecture (default: this machine's) when a reference is given.")
    @click.option("--keep-in-registry", is_flag=True,
                  help="Only forget the image's record; leave its tag in the registry it was pushed to.")
    def forget(reference_or_id: str, arch: str | None, keep_in_registry: bool) -> None:
        """
        Forget an image: your own customized image (any image for superadmins). An image pushed
        to a registry is deleted from it too (unless --keep-in-registry). Agents keep their copy.

        \b
        REFERENCE_OR_ID: the image's reference (<registry>/<name>:<tag>, as "image list
                         --customized" shows it) or its ID.
        """
        async def _go(api: APISession) -> str:
            from ..config import DEFAULT_IMAGE_ARCH
            from ..exceptions import BackendClientError
            from ..gql import mutate, query
            from .admin.base import is_uuid

            if is_uuid(reference_or_id):
                found = (await query(api, "query($id: String) { image(id: $id) { id is_local } }",
                                     {"id": reference_or_id}))["image"]
            else:
                found = (await query(
                    api, "query($ref: String, $arch: String) { image(reference: $ref, architecture: $arch) "
                         "{ id is_local } }", {"ref": reference_or_id, "arch": arch or DEFAULT_IMAGE_ARCH}))["image"]
            if not found:
                raise BackendClientError(
                    f"No image {reference_or_id}" + ("" if arch or is_uuid(reference_or_id)
                                                     else f" ({DEFAULT_IMAGE_ARCH}; another one needs --arch)"))
            image_id = str(found["id"])
            if found.get("is_local") or keep_in_registry:
                await mutate(api, "mutation($id: String!) { forget_image_by_id(image_id: $id) { ok msg } }",
                             {"id": image_id}, "forget_image_by_id")
            else:
                await mutate(api, "mutation($id: String!) { untag_image_from_registry(id: $id) { ok msg } }",
                             {"id": image_id}, "untag_image_from_registry")
            return image_id

        image_id = call(_go, action="image forget")
        if get_cli_context().json_mode:
            print_json({"ok": True, "msg": f"Image forgotten: {reference_or_id}", "id": image_id})
        else:
            print_done(f"Image forgotten: {reference_or_id}")

    return image
