"""``backend.ai session-template`` (alias ``sesstpl``): create, list, get, update, delete stored
task templates (names and options as the official CLI 24.03's). Sessions are created from one with
``backend.ai session create-from-template``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from .admin.base import call, confirm, fail, plain, print_list
from .common import get_cli_context, print_done, print_json

if TYPE_CHECKING:
    from ..request import APISession

#: The manager refuses a longer payload; a bigger file is refused here before anything is sent.
MAX_TEMPLATE_BYTES = 64 * 1024

LIST_FIELDS = [plain("name"), plain("id", "ID"), plain("created_at"), plain("is_owner", "Owner"), plain("type"),
               plain("user"), plain("group"), plain("group_name", "Group Name"), plain("domain_name")]

_OWNER_HELP = "Act on the templates of another keypair (admins)."


def read_document(path: str | None, what: str = "template") -> str:
    """The text of ``path`` (``-``/None: standard input), at most MAX_TEMPLATE_BYTES."""
    try:
        if path is None or path == "-":
            raw = sys.stdin.buffer.read(MAX_TEMPLATE_BYTES + 1)
            source = "standard input"
        else:
            with open(path, "rb") as f:
                raw = f.read(MAX_TEMPLATE_BYTES + 1)
            source = path
    except OSError as e:
        fail(f"Cannot read the {what} file {path}: {e.strerror or e}")
    if len(raw) > MAX_TEMPLATE_BYTES:
        fail(f"The {what} in {source} is larger than {MAX_TEMPLATE_BYTES // 1024} KiB.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        fail(f"The {what} in {source} is not UTF-8 text.")
    if not text.strip():
        fail(f"The {what} in {source} is empty.")
    return text


def _file_option(fn: Any) -> Any:
    return click.option("-f", "--file", "template_path", metavar="PATH", default=None,
                        help="A YAML or JSON file with one template document (or a list of them); "
                             "without it (or with '-') the document is read from standard input.")(fn)


def _owner_option(fn: Any) -> Any:
    return click.option("-o", "--owner", "--owner-access-key", "owner_access_key", metavar="ACCESS_KEY",
                        default=None, help=_OWNER_HELP)(fn)


def _done(message: str, **extra: Any) -> None:
    if get_cli_context().json_mode:
        print_json({"ok": True, "msg": message, **extra})
    else:
        print_done(message)


def make_group(name: str = "session-template", help_text: str | None = None) -> click.Group:
    @click.group(name=name, help=help_text, short_help=help_text)
    def group() -> None:
        """Set of session template operations."""

    if help_text and help_text.startswith("Alias"):
        group.help = f"{help_text}: set of session template operations."

    @group.command()
    @_file_option
    @click.option("-d", "--domain", metavar="DOMAIN_NAME", default=None,
                  help="The domain of the template's project (default: the configured domain).")
    @click.option("-g", "--group", "group_name", metavar="GROUP_NAME", default=None,
                  help="The project (group) the template belongs to; its members may read it "
                       "(default: the configured group).")
    @_owner_option
    def create(template_path: str | None, domain: str | None, group_name: str | None,
               owner_access_key: str | None) -> None:
        """
        Store a task template (or several) and print its ID on standard output. Sessions are
        created from it with "backend.ai session create-from-template TEMPLATE_ID".
        """
        payload = read_document(template_path)

        async def _go(api: APISession) -> list[str]:
            from .. import session_templates as sdk

            return await sdk.create(api, payload, group=group_name, domain=domain,
                                    owner_access_key=owner_access_key)

        ids = call(_go, action="session-template create")
        if get_cli_context().json_mode:
            print_json({"ok": True, "msg": f"Task template {', '.join(ids)} created and ready", "ids": ids})
        else:
            for template_id in ids:
                print_done(f"Task template {template_id} created and ready")
                click.echo(template_id)  # stdout: ID=$(backend.ai sesstpl create -f t.yaml)

    @group.command(name="list")
    @click.option("-a", "--list-all", is_flag=True,
                  help="List every template (superadmins: all of them; domain admins: their domain's).")
    def list_(list_all: bool) -> None:
        """List the task templates you may use."""
        async def _go(api: APISession) -> list[dict[str, Any]]:
            from .. import session_templates as sdk

            return await sdk.list_templates(api, list_all=list_all)

        print_list(call(_go, action="session-template list"), LIST_FIELDS)

    @group.command()
    @click.argument("template_id", metavar="TEMPLATE_ID")
    @click.option("-f", "--format", "body_format", type=click.Choice(["yaml", "json"]), default="yaml",
                  show_default=True, help="The document's format (the global --output json implies json).")
    @_owner_option
    def get(template_id: str, body_format: str, owner_access_key: str | None) -> None:
        """Print the document of the task template TEMPLATE_ID."""
        json_mode = get_cli_context().json_mode
        fmt = "json" if json_mode else body_format

        async def _go(api: APISession) -> str:
            from .. import session_templates as sdk

            return await sdk.get(api, template_id, body_format=fmt,  # type: ignore[arg-type]
                                 owner_access_key=owner_access_key)

        text = call(_go, action="session-template get")
        if json_mode:
            import json

            print_json(json.loads(text))
        else:
            click.echo(text, nl=not text.endswith("\n"))

    @group.command()
    @click.argument("template_id", metavar="TEMPLATE_ID")
    @_file_option
    @_owner_option
    def update(template_id: str, template_path: str | None, owner_access_key: str | None) -> None:
        """Replace the document of the task template TEMPLATE_ID."""
        payload = read_document(template_path)

        async def _go(api: APISession) -> None:
            from .. import session_templates as sdk

            await sdk.update(api, template_id, payload, owner_access_key=owner_access_key)

        call(_go, action="session-template update")
        _done(f"Task template {template_id} updated", id=template_id)

    @group.command()
    @click.argument("template_id", metavar="TEMPLATE_ID")
    @click.option("-f", "--force", "-y", "--yes", "force", is_flag=True,
                  help="Delete the template without asking for confirmation.")
    @_owner_option
    def delete(template_id: str, force: bool, owner_access_key: str | None) -> None:
        """Delete the task template TEMPLATE_ID."""
        confirm(force, f"Delete the task template {template_id}?")

        async def _go(api: APISession) -> None:
            from .. import session_templates as sdk

            await sdk.delete(api, template_id, owner_access_key=owner_access_key)

        call(_go, action="session-template delete")
        _done(f"Task template {template_id} deleted", id=template_id)

    return group

