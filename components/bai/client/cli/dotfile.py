"""``backend.ai dotfile``: create, list, get, update, delete dotfiles (files every new session
finds in its home directory) of your keypair, a project (``-g``) or a domain (``-d``); names and
options as the official CLI 24.03's (``--data`` and ``-p`` are ours)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from .admin.base import Field, call, confirm, fail, plain, print_list
from .common import get_cli_context, print_done, print_json
from .session_template import read_document

if TYPE_CHECKING:
    from ..dotfiles import Scope
    from ..request import APISession

F = Callable[..., Any]


def _first_line(value: Any) -> str:
    text = str(value or "")
    lines = text[:30].splitlines()
    return lines[0] if lines else ""


LIST_FIELDS = [plain("path"), Field("data", console=_first_line), plain("permission")]


def scope_options(fn: F) -> F:
    fn = click.option("-g", "--group", metavar="GROUP",
                      help="Act on a project's dotfiles: the project's id, or its name "
                           "(within -d DOMAIN, default your domain).")(fn)
    fn = click.option("-d", "--domain", metavar="DOMAIN",
                      help="Act on a domain's dotfiles (domain admins); with -g, the project's domain.")(fn)
    fn = click.option("-o", "--owner", "--owner-access-key", "owner_access_key", metavar="ACCESS_KEY",
                      help="Act on another keypair's dotfiles (admins).")(fn)
    return fn


def content_options(fn: F) -> F:
    fn = click.option("--data", metavar="TEXT", default=None,
                      help="The dotfile's content, given inline (instead of -f).")(fn)
    fn = click.option("-f", "--file", "dotfile_path", metavar="FILE", default=None,
                      help="A file with the dotfile's content (at most 64 KiB); without -f or --data "
                           "the content is read from standard input.")(fn)
    fn = click.option("-p", "--perm", "--permission", "permission", metavar="OCTAL", default=None,
                      help="The file's permission as three octal digits, e.g. 644 "
                           "(create: 755 when not given; update: the current one is kept).")(fn)
    return fn


def _scope(owner_access_key: str | None, domain: str | None, group: str | None) -> Scope:
    from ..dotfiles import Scope

    return Scope(owner_access_key=owner_access_key, domain=domain, group=group)


def _content(dotfile_path: str | None, data: str | None) -> str:
    if dotfile_path is not None and data is not None:
        fail("Give the content with either -f/--file or --data, not both.")
    if data is not None:
        return data
    return read_document(dotfile_path, "dotfile")


def _permission(permission: str | None) -> str | None:
    """Checked before anything is sent (one line and exit 1 when malformed)."""
    if permission is None:
        return None
    from ..dotfiles import check_permission
    from ..exceptions import BackendClientError

    try:
        return check_permission(permission)
    except BackendClientError as e:
        fail(str(e))


def _done(message: str, **extra: Any) -> None:
    if get_cli_context().json_mode:
        print_json({"ok": True, "msg": message, **extra})
    else:
        print_done(message)


def make_group(name: str = "dotfile", help_text: str | None = None) -> click.Group:
    @click.group(name=name, help=help_text, short_help=help_text)
    def group() -> None:
        """Provides dotfile operations."""

    @group.command()
    @click.argument("path", metavar="PATH")
    @content_options
    @scope_options
    def create(path: str, permission: str | None, dotfile_path: str | None, data: str | None,
               owner_access_key: str | None, domain: str | None, group: str | None) -> None:
        """
        Store a dotfile: new sessions find it at PATH (relative to their home directory,
        /home/work).
        """
        from ..dotfiles import DEFAULT_PERMISSION

        perm = _permission(permission) or DEFAULT_PERMISSION
        content = _content(dotfile_path, data)
        scope = _scope(owner_access_key, domain, group)

        async def _go(api: APISession) -> None:
            from .. import dotfiles as sdk

            await sdk.create(api, path, content, permission=perm, scope=scope)

        call(_go, action="dotfile create")
        _done(f"Dotfile {path} created and ready", path=path, permission=perm)

    @group.command(name="list")
    @scope_options
    def list_(owner_access_key: str | None, domain: str | None, group: str | None) -> None:
        """List the dotfiles of your keypair, a project (-g) or a domain (-d)."""
        scope = _scope(owner_access_key, domain, group)

        async def _go(api: APISession) -> list[dict[str, Any]]:
            from .. import dotfiles as sdk

            return await sdk.list_dotfiles(api, scope=scope)

        print_list(call(_go, action="dotfile list"), LIST_FIELDS)

    @group.command()
    @click.argument("path", metavar="PATH")
    @scope_options
    def get(path: str, owner_access_key: str | None, domain: str | None, group: str | None) -> None:
        """Print the content of the dotfile at PATH (--output json: its path, permission and data)."""
        scope = _scope(owner_access_key, domain, group)

        async def _go(api: APISession) -> dict[str, Any]:
            from .. import dotfiles as sdk

            return await sdk.get(api, path, scope=scope)

        item = call(_go, action="dotfile get")
        if get_cli_context().json_mode:
            print_json(item)
        else:
            text = str(item.get("data") or "")
            click.echo(text, nl=not text.endswith("\n"))

    @group.command()
    @click.argument("path", metavar="PATH")
    @content_options
    @scope_options
    def update(path: str, permission: str | None, dotfile_path: str | None, data: str | None,
               owner_access_key: str | None, domain: str | None, group: str | None) -> None:
        """Replace the content (and, with -p, the permission) of the dotfile at PATH."""
        perm = _permission(permission)
        content = _content(dotfile_path, data)
        scope = _scope(owner_access_key, domain, group)

        async def _go(api: APISession) -> str:
            from .. import dotfiles as sdk

            keep = perm or str((await sdk.get(api, path, scope=scope)).get("permission"))
            await sdk.update(api, path, content, permission=keep, scope=scope)
            return keep

        kept = call(_go, action="dotfile update")
        _done(f"Dotfile {path} updated", path=path, permission=kept)

    @group.command()
    @click.argument("path", metavar="PATH")
    @click.option("-f", "--force", "-y", "--yes", "force", is_flag=True,
                  help="Delete the dotfile without asking for confirmation.")
    @scope_options
    def delete(path: str, force: bool, owner_access_key: str | None, domain: str | None,
               group: str | None) -> None:
        """Delete the dotfile at PATH."""
        confirm(force, f"Delete the dotfile {path}?")
        scope = _scope(owner_access_key, domain, group)

        async def _go(api: APISession) -> None:
            from .. import dotfiles as sdk

            await sdk.delete(api, path, scope=scope)

        call(_go, action="dotfile delete")
        _done(f"Dotfile {path} deleted", path=path)

    return group
