"""``backend.ai vfolder ...``: the official client 24.03's virtual folder commands (names,
arguments and options), with ``--output json`` forms, progress bars and resumable transfers.

* Console output follows the official wording; ``--output json`` prints one JSON document on
  stdout (the API's answer, or ``{"ok": true, ...}`` for actions) and no bars.
* A failure is one line on stderr (``vfolder <command> failed: <reason>``) and exit code 1.
* ``upload`` resumes an interrupted upload of the same file to the same path (see
  :mod:`bai.client.transfer`); ``download`` resumes a partial file and refuses to overwrite.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .admin.base import (
    BoolExpr,
    Paging,
    call,
    confirm,
    fail,
    fetch_list,
    paging_options,
    plain,
    print_list,
)
from .common import AliasGroup, get_cli_context, print_done, print_info, print_json, print_wait, render_table

if TYPE_CHECKING:
    from rich.progress import Progress

    from ..request import APISession
    from ..vfolder import UploadItem

T = TypeVar("T")

#: ``vfolder list`` columns: the official ``_default_list_fields``
LIST_FIELDS = [plain("host"), plain("name"), plain("status"), plain("created_at"), plain("creator"),
               plain("group", "Group ID", "group_id"), plain("permission"), plain("ownership_type")]
#: files transferred at the same time by one ``upload``/``download``
TRANSFER_CONCURRENCY = 8
#: ``mkdir`` takes at most this many paths per request
MKDIR_BATCH = 50

_PERMISSION = click.Choice(["ro", "rw", "wd"])


class ByteSize(click.ParamType[int, Any]):
    """``16m``, ``512k``, ``1g``, ``4096`` (binary units), as the official ``--chunk-size``."""

    name = "byte"
    _rx = re.compile(r"^(\d+(?:\.\d*)?)([kmgtpe]?)i?b?$", re.I)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        m = self._rx.match(str(value).strip())
        if m is None:
            self.fail(f"{value!r} is not a valid byte-size expression", param, ctx)
        size = int(float(m.group(1)) * 2 ** (10 * " kmgtpe".index(m.group(2).lower() or " ")))
        if size <= 0:
            self.fail("the size must be positive", param, ctx)
        return size


class AddressMap(click.ParamType[dict[str, str], Any]):
    """``X1=Y1,X2=Y2`` -> ``{X1: Y1, X2: Y2}``."""

    name = "address-map"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dict[str, str]:
        if isinstance(value, dict):
            return value
        result: dict[str, str] = {}
        for item in str(value).split(","):
            k, sep, v = item.partition("=")
            if not sep or not k.strip() or not v.strip():
                self.fail(f"{item!r} is not a KEY=VALUE expression", param, ctx)
            result[k.strip()] = v.strip()
        return result


def _json_mode() -> bool:
    return get_cli_context().json_mode


def _run(action: str, fn: Callable[[APISession], Awaitable[T]], *,
         address_map: dict[str, str] | None = None) -> T:
    if address_map:
        try:
            get_cli_context().get_config().storage_proxy_address_map = dict(address_map)
        except Exception as e:  # malformed configuration: call() reports it the same way
            fail(f"{action} failed: {e}")
    return call(fn, action=action)


def _done(msg: str, **extra: Any) -> None:
    if _json_mode():
        print_json({"ok": True, "msg": msg, **extra})
    else:
        print_done(msg)


def _say(text: str, **data: Any) -> None:
    """A plain result line (console) or the data (JSON)."""
    if _json_mode():
        print_json(data)
    else:
        click.echo(text)


def _stderr_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def _progress() -> Iterator[Progress | None]:
    """A rich progress display on stderr (console mode on a terminal only)."""
    if _json_mode() or not _stderr_tty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(binary_units=True),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                  transient=False) as bars:
        yield bars


def _human(n: int) -> str:
    from .admin.base import binary_size

    return binary_size(n)


def make_group(name: str = "vfolder", help_text: str | None = None) -> click.Group:  # noqa: C901
    group = AliasGroup(
        name=name,
        help=(help_text or "Set of vfolder operations") + "\n\n"
        "With the global --output json every command prints one JSON document; a failure exits "
        "non-zero with one line on stderr.",
        short_help=help_text,
        aliases={"delete-file": "rm", "accept": "accept-invitation", "reject": "reject-invitation"},
    )

    # -- hosts and types ---------------------------------------------------------------------

    @group.command(name="list-hosts")
    def list_hosts() -> None:
        """List the hosts of virtual folders that is accessible to the current user."""
        from .. import vfolder as sdk

        resp = _run("vfolder list-hosts", sdk.list_hosts)
        if _json_mode():
            print_json(resp)
            return
        click.echo(f"Default vfolder host: {resp.get('default')}")
        click.echo(f"Usable hosts: {', '.join(resp.get('allowed') or [])}")

    @group.command(name="list-allowed-types")
    def list_allowed_types() -> None:
        """List allowed vfolder types."""
        from .. import vfolder as sdk

        resp = _run("vfolder list-allowed-types", sdk.list_allowed_types)
        if _json_mode():
            print_json(resp)
        else:
            click.echo(str(resp))

    # -- folders -----------------------------------------------------------------------------

    @group.command(name="list")
    @click.option("-g", "--group", "group_id", type=str, default=None, help="Filter by group (project) ID.")
    @paging_options
    def list_(group_id: str | None, filter_: str | None, order: str | None, offset: int, limit: int | None) -> None:
        """List virtual folders."""
        paging = Paging(offset=offset, limit=limit, filter=filter_, order=order,
                        extra={"group_id": (group_id, "UUID")})
        items, total = _run("vfolder list", lambda api: fetch_list(api, "vfolder_list", LIST_FIELDS, paging))
        print_list(items, LIST_FIELDS, total)

    @group.command()
    @click.argument("name", type=str)
    @click.argument("host", type=str, default=None, required=False)
    @click.option("-g", "--group", metavar="GROUP", type=str, default=None,
                  help="Group ID or NAME. Specify this option if you want to create a group folder.")
    @click.option("--unmanaged", "host_path", is_flag=True,
                  help="Treats HOST as a mount point of unmanaged virtual folder. "
                       "This option can only be used by Admin or Superadmin.")
    @click.option("-m", "--usage-mode", metavar="USAGE_MODE", type=click.Choice(["general", "data", "model"]),
                  default="general", show_default=True, help="Purpose of the folder.")
    @click.option("-p", "--permission", metavar="PERMISSION", type=_PERMISSION, default="rw", show_default=True,
                  help="Folder's innate permission (ro, rw or wd).")
    @click.option("--cloneable", "--allow-clone", is_flag=True, help="Allows the virtual folder to be cloned by users.")
    def create(name: str, host: str | None, group: str | None, host_path: bool, usage_mode: str,
               permission: str, cloneable: bool) -> None:
        """Create a new virtual folder.

        \b
        NAME: Name of a virtual folder.
        HOST: Name of a virtual folder host in which the virtual folder will be created
              (default: the server's default host).
        """
        from .. import vfolder as sdk

        kwargs: dict[str, Any] = {"group": group, "usage_mode": usage_mode, "permission": permission,
                                  "cloneable": cloneable}
        if host_path:
            if not host:
                fail("vfolder create failed: --unmanaged needs the mount point as HOST")
            kwargs["unmanaged_path"] = host
        else:
            kwargs["host"] = host
        result = _run("vfolder create", lambda api: sdk.create(api, name, **kwargs))
        _say(f'Virtual folder "{result.get("name", name)}" is created.', **result)

    @group.command()
    @click.argument("name", type=str)
    def info(name: str) -> None:
        """Show the information of the given virtual folder.

        \b
        NAME: Name of a virtual folder.
        """
        from .. import vfolder as sdk

        r = _run("vfolder info", lambda api: sdk.info(api, name))
        if _json_mode():
            print_json(r)
            return
        lines = [
            f'Virtual folder "{r.get("name")}" (ID: {r.get("id")})',
            f"- Owner: {r.get('is_owner')}",
            f"- Host: {r.get('host')}",
            f"- Permission: {r.get('permission')}",
            f"- Status: {r.get('status')}",
            f"- Number of files: {r.get('num_files', r.get('numFiles'))}",
            f"- Used bytes: {r.get('used_bytes')}",
            f"- Ownership Type: {r.get('type', r.get('ownership_type'))}",
            f"- Usage Mode: {r.get('usage_mode', '')}",
            f"- Group ID: {r.get('group')}",
            f"- User ID: {r.get('user')}",
            f"- Clone Allowed: {r.get('cloneable')}",
        ]
        click.echo("\n".join(lines))

    def _simple(cmd: str, doc: str, fn_name: str, msg: str) -> None:
        @group.command(name=cmd, help=doc)
        @click.argument("name", type=str)
        def _cmd(name: str) -> None:
            from .. import vfolder as sdk

            fn = getattr(sdk, fn_name)
            _run(f"vfolder {cmd}", lambda api: fn(api, name))
            _done(msg, name=name)

    _simple("delete", "Move the given virtual folder to the trash bin (status delete-pending); "
            "`restore` brings it back.\n\n\b\nNAME: Name of a virtual folder.", "delete", "Deleted.")
    _simple("purge", "Purge the given virtual folder (its record, after delete-trash). "
            "This operation is irreversible!\n\n\b\nNAME: Name (or ID) of a virtual folder.", "purge", "Purged.")
    _simple("delete-trash", "Delete the given virtual folder's real data. The folder must be in the "
            "trash bin (delete-pending). This operation is irreversible!\n\n\b\nNAME: Name (or ID) of a virtual folder.",
            "delete_trash", "Delete completed.")
    _simple("recover", "Restore the given virtual folder from the trash bin (deprecated; use `restore`)."
            "\n\n\b\nNAME: Name (or ID) of a virtual folder.", "restore", "Restored.")
    _simple("restore", "Restore the given virtual folder from the trash bin.\n\n\b\nNAME: Name (or ID) of a virtual folder.",
            "restore", "Restored.")

    @group.command()
    @click.argument("old_name", type=str)
    @click.argument("new_name", type=str)
    def rename(old_name: str, new_name: str) -> None:
        """Rename the given virtual folder.

        \b
        OLD_NAME: The current name of a virtual folder.
        NEW_NAME: The new name of a virtual folder.
        """
        from .. import vfolder as sdk

        _run("vfolder rename", lambda api: sdk.rename(api, old_name, new_name))
        _done("Renamed.", name=new_name, old_name=old_name)

    @group.command(name="update-options")
    @click.argument("name", type=str)
    @click.option("-p", "--permission", type=_PERMISSION, metavar="PERMISSION", default=None,
                  help="Folder's innate permission.")
    @click.option("--set-cloneable", type=BoolExpr(), metavar="BOOLEXPR", default=None,
                  help="Whether the virtual folder can be cloned (unchanged if not given).")
    def update_options(name: str, permission: str | None, set_cloneable: bool | None) -> None:
        """Update an existing virtual folder's options.

        \b
        NAME: Name of the virtual folder to update.
        """
        from .. import vfolder as sdk

        async def _go(api: APISession) -> None:
            if not (await sdk.info(api, name)).get("is_owner"):
                from ..exceptions import BackendClientError

                raise BackendClientError("You cannot update virtual folder that you do not own.")
            await sdk.update_options(api, name, permission=permission, cloneable=set_cloneable)

        _run("vfolder update-options", _go)
        _done("Updated.", name=name)

    @group.command()
    @click.argument("name", type=str)
    @click.argument("target_name", type=str)
    @click.argument("target_host", type=str, default=None, required=False)
    @click.option("-m", "--usage-mode", metavar="USAGE_MODE", type=click.Choice(["general", "data", "model"]),
                  default="general", show_default=True, help="Purpose of the cloned virtual folder.")
    @click.option("-p", "--permission", metavar="PERMISSION", type=_PERMISSION, default="rw", show_default=True,
                  help="Cloned virtual folder's permission.")
    def clone(name: str, target_name: str, target_host: str | None, usage_mode: str, permission: str) -> None:
        """Clone a virtual folder (follows the clone's progress until it ends).

        \b
        NAME: Name of the virtual folder to clone from.
        TARGET_NAME: Name of the virtual folder to clone to.
        TARGET_HOST: Name of a virtual folder host to which the virtual folder will be cloned.
        """
        from .. import vfolder as sdk

        json_mode = _json_mode()

        async def _go(api: APISession) -> dict[str, Any]:
            from ..exceptions import BackendClientError
            from .admin.image import background_task_events

            src = await sdk.info(api, name)
            if not src.get("cloneable") and not src.get("is_owner"):
                raise BackendClientError(
                    "Clone is not allowed for this virtual folder. Please update the 'cloneable' option.")
            result = await sdk.clone(api, name, target_name, target_host=target_host, usage_mode=usage_mode,
                                     permission=permission)
            task_id = result.get("bgtask_id")
            if not task_id:
                return result
            if not json_mode:
                print_wait("Cloning the vfolder... (This may take a while depending on its size and number of files!)")
            last: tuple[str, dict[str, Any]] = ("", {})
            async for event, payload in background_task_events(api, str(task_id)):
                last = (event, payload)
                if not json_mode and event == "bgtask_updated":
                    done, total = payload.get("current_progress"), payload.get("total_progress")
                    message = payload.get("message") or ""
                    print_info(f"[{done}/{total}] {message}".rstrip())
            if last[0] == "bgtask_failed":
                raise BackendClientError(f"Error during the operation: {last[1].get('message')}")
            if last[0] == "bgtask_cancelled":
                raise BackendClientError("The operation has been cancelled in the middle. "
                                         "(This may be due to server shutdown.)")
            return result

        result = _run("vfolder clone", _go)
        _done("Cloning the vfolder is complete.", **result)

    # -- files -------------------------------------------------------------------------------

    @group.command()
    @click.argument("name", type=str)
    @click.argument("path", metavar="PATH", default=".")
    def ls(name: str, path: str) -> None:
        """List files in a path of a virtual folder.

        \b
        NAME: Name of a virtual folder.
        PATH: Path inside vfolder.
        """
        from .. import vfolder as sdk

        result = _run("vfolder ls", lambda api: sdk.list_files(api, name, path))
        items = result.get("items")
        if _json_mode():
            print_json({"items": items if items is not None else _legacy_items(result)})
            return
        rows = [[i.get("name"), i.get("size"), _short_time(i.get("modified")), _mode(i)]
                for i in (items if items is not None else _legacy_items(result))]
        print_done("Retrieved.")
        click.echo(render_table(["file name", "size", "modified", "mode"], rows))

    @group.command()
    @click.argument("name", type=str)
    @click.argument("paths", type=str, nargs=-1, required=True)
    @click.option("-p", "--parents", is_flag=True, help="Make missing parents of this path as needed")
    @click.option("-e", "--exist-ok", is_flag=True, help="Allow specifying already existing directories")
    def mkdir(name: str, paths: tuple[str, ...], parents: bool, exist_ok: bool) -> None:
        """Create empty directories in the virtual folder.

        \b
        NAME: Name of a virtual folder.
        PATHS: Relative directory paths to create in the vfolder.
        """
        from .. import vfolder as sdk

        results = _run("vfolder mkdir", lambda api: sdk.mkdir(
            api, name, list(paths) if len(paths) > 1 else paths[0], parents=parents, exist_ok=exist_ok))
        if _json_mode():
            print_json({"ok": True, "results": results})
            return
        failed = _failed_items(results)
        if failed:
            fail("vfolder mkdir failed: " + "; ".join(failed))
        print_done(f"Created: {', '.join(paths)}")

    @group.command(name="rename-file")
    @click.argument("name", type=str)
    @click.argument("target_path", type=str)
    @click.argument("new_name", type=str)
    def rename_file(name: str, target_path: str, new_name: str) -> None:
        """Rename a file or a directory in a virtual folder.

        \b
        NAME: Name of a virtual folder.
        TARGET_PATH: The target path inside a virtual folder (file or directory).
        NEW_NAME: New name of the target (should not contain slash).
        """
        from .. import vfolder as sdk

        _run("vfolder rename-file", lambda api: sdk.rename_file(api, name, target_path, new_name))
        _done("Renamed.", path=target_path, new_name=new_name)

    @group.command()
    @click.argument("name", type=str)
    @click.argument("src", type=str)
    @click.argument("dst", type=str)
    def mv(name: str, src: str, dst: str) -> None:
        """Move a file or a directory within a virtual folder.

        \b
        NAME: Name of a virtual folder.
        SRC: The relative path of the source file or directory inside a virtual folder
        DST: The relative path of the destination file or directory inside a virtual folder.
        """
        from .. import vfolder as sdk

        _run("vfolder mv", lambda api: sdk.move_file(api, name, src, dst))
        _done("Moved.", src=src, dst=dst)

    @group.command()
    @click.argument("name", type=str)
    @click.argument("filenames", nargs=-1, required=True)
    @click.option("-r", "--recursive", is_flag=True, help="Enable recursive deletion of directories.")
    @click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
    def rm(name: str, filenames: tuple[str, ...], recursive: bool, yes: bool) -> None:
        """Delete files in a virtual folder. This operation is irreversible!

        \b
        NAME: Name of a virtual folder.
        FILENAMES: Paths of the files to delete.
        """
        from .. import vfolder as sdk

        confirm(yes)
        _run("vfolder rm", lambda api: sdk.delete_files(api, name, list(filenames), recursive=recursive))
        _done("Done.", files=list(filenames))

    @group.command()
    @click.argument("name", type=str)
    @click.argument("filenames", type=Path, nargs=-1, required=True)
    @click.option("-b", "--base-dir", type=Path, default=None,
                  help="The local parent directory which contains the files to be uploaded; paths in the "
                       "folder are relative to it. [default: current working directory]")
    @click.option("-r", "--recursive", is_flag=True, help="Upload the given directory recursively.")
    @click.option("--chunk-size", type=ByteSize(), default="16M", show_default=True,
                  help="Transfer the file with the given chunk size with binary suffixes (e.g. 16m).")
    @click.option("--override-storage-proxy", type=AddressMap(), default=None,
                  help='Overrides storage proxy address ("X1=Y1,X2=Y2": the url the manager answers '
                       "= the url to use).")
    def upload(name: str, filenames: tuple[Path, ...], base_dir: Path | None, recursive: bool, chunk_size: int,
               override_storage_proxy: dict[str, str] | None) -> None:
        """Upload files to the virtual folder (tus, resumable: running the same upload again after an
        interruption sends only the rest). Files with the same names are overwritten.

        \b
        NAME: Name of a virtual folder.
        FILENAMES: Paths of the files to be uploaded.
        """
        from .. import vfolder as sdk
        from ..exceptions import BackendError

        base = base_dir if base_dir is not None else Path.cwd()
        try:
            dirs, files = sdk.walk_sources(list(filenames), base, recursive=recursive)
        except (BackendError, OSError) as e:
            fail(f"vfolder upload failed: {e}")

        async def _go(api: APISession) -> list[Any]:
            for i in range(0, len(dirs), MKDIR_BATCH):
                await sdk.mkdir(api, name, dirs[i:i + MKDIR_BATCH], parents=True, exist_ok=True)
            with _progress() as bars:
                return await _for_each(files, lambda item: _upload_one(api, name, item, chunk_size, bars))

        results = _run("vfolder upload", _go, address_map=override_storage_proxy)
        if _json_mode():
            print_json({"ok": True, "uploaded": [r.__dict__ for r in results], "directories": dirs})
        else:
            print_done("Done.")

    @group.command()
    @click.argument("name", type=str)
    @click.argument("filenames", type=str, nargs=-1, required=True)
    @click.option("-b", "--base-dir", type=Path, default=None,
                  help="The local parent directory which will contain the downloaded files. "
                       "[default: current working directory]")
    @click.option("--chunk-size", type=ByteSize(), default="16M", show_default=True,
                  help="Accepted for compatibility (downloads are streamed in 1 MiB steps).")
    @click.option("--override-storage-proxy", type=AddressMap(), default=None,
                  help='Overrides storage proxy address ("X1=Y1,X2=Y2").')
    @click.option("--max-retries", type=click.IntRange(min=0), default=20, show_default=True,
                  help="Maximum retry attempt when any failure occurs.")
    def download(name: str, filenames: tuple[str, ...], base_dir: Path | None, chunk_size: int,
                 override_storage_proxy: dict[str, str] | None, max_retries: int) -> None:
        """Download files from the virtual folder (a directory comes as NAME.zip). An existing local
        file is never overwritten; a partial download left by an interruption is resumed.

        \b
        NAME: Name of a virtual folder.
        FILENAMES: Paths of the files to be downloaded inside a vfolder.
        """
        from .. import vfolder as sdk
        from ..exceptions import BackendError

        base = base_dir if base_dir is not None else Path.cwd()
        try:
            targets = [(f, sdk.local_dest_of(f, base)) for f in filenames]
        except BackendError as e:
            fail(f"vfolder download failed: {e}")

        async def _go(api: APISession) -> list[Any]:
            with _progress() as bars:
                return await _for_each(targets, lambda t: _download_one(api, name, t[0], t[1], bars, max_retries))

        results = _run("vfolder download", _go, address_map=override_storage_proxy)
        if _json_mode():
            print_json({"ok": True, "downloaded": [r.__dict__ for r in results]})
        else:
            print_done("Done.")

    @group.command(name="request-download")
    @click.argument("name", type=str)
    @click.argument("filename", type=str)
    @click.option("--archive", is_flag=True, help="Ask for a directory as a zip archive.")
    def request_download(name: str, filename: str, archive: bool) -> None:
        """Request a JWT-formatted download token for later use.

        \b
        NAME: Name of a virtual folder.
        FILENAME: Path of the file to be downloaded.
        """
        from .. import vfolder as sdk

        resp = _run("vfolder request-download", lambda api: sdk.request_download(api, name, filename,
                                                                                  archive=archive))
        if _json_mode():
            print_json(resp)
        else:
            print_done(f"Download token: {resp['token']}")

    # -- sharing -----------------------------------------------------------------------------

    @group.command()
    @click.argument("name", type=str)
    @click.argument("emails", type=str, nargs=-1, required=True)
    @click.option("-p", "--perm", metavar="PERMISSION", type=_PERMISSION, default="rw", show_default=True,
                  help='Permission to give. "ro" (read-only) / "rw" (read-write) / "wd" (write-delete).')
    def invite(name: str, emails: tuple[str, ...], perm: str) -> None:
        """Invite other users to access a user-type virtual folder.

        \b
        NAME: Name of a virtual folder.
        EMAILS: Emails to invite.
        """
        from .. import vfolder as sdk

        result = _run("vfolder invite", lambda api: sdk.invite(api, name, perm, list(emails)))
        invited = result.get("invited_ids") or []
        if _json_mode():
            print_json(result)
        elif invited:
            click.echo("Invitation sent to:\n" + "\n".join(f"\t- {i}" for i in invited))
        else:
            click.echo("No users found. Invitation was not sent.")

    @group.command()
    @click.option("--sent", is_flag=True, help="List the invitations I sent instead of those I received.")
    def invitations(sent: bool) -> None:
        """List received invitations (and, on a terminal, accept or reject one)."""
        from .. import vfolder as sdk

        items = _run("vfolder invitations", sdk.sent_invitations if sent else sdk.invitations)
        if _json_mode():
            print_json({"invitations": items})
            return
        if not items:
            click.echo("No invitations.")
            return
        click.echo("List of invitations (inviter, invitee, vfolder, permission, id):")
        for n, inv in enumerate(items, 1):
            click.echo(f"[{n}] {inv.get('inviter')}, {inv.get('invitee')}, {inv.get('vfolder_name')} "
                       f"({inv.get('vfolder_id')}), {_perm_word(inv.get('perm'))}, {inv.get('id')}")
        if sent or not sys.stdin.isatty():
            return
        choice = click.prompt("Choose invitation number to manage", default="", show_default=False)
        if not choice.isdigit() or not 1 <= int(choice) <= len(items):
            return
        inv = items[int(choice) - 1]
        action = click.prompt("Choose action. (a)ccept, (r)eject, (c)ancel",
                              type=click.Choice(["a", "r", "c"], case_sensitive=False))
        if action.lower() == "a":
            _run("vfolder invitations", lambda api: sdk.accept_invitation(api, str(inv["id"])))
            click.echo(f"You can now access vfolder {inv.get('vfolder_name')} ({inv.get('id')})")
        elif action.lower() == "r":
            _run("vfolder invitations", lambda api: sdk.delete_invitation(api, str(inv["id"])))
            click.echo(f"vfolder invitation rejected: {inv.get('vfolder_name')} ({inv.get('id')})")

    @group.command(name="accept-invitation")
    @click.argument("inv_id", type=str)
    def accept_invitation(inv_id: str) -> None:
        """Accept a received invitation (its ID as `invitations` lists it)."""
        from .. import vfolder as sdk

        _run("vfolder accept-invitation", lambda api: sdk.accept_invitation(api, inv_id))
        _done("Invitation accepted.", id=inv_id)

    @group.command(name="reject-invitation")
    @click.argument("inv_id", type=str)
    def reject_invitation(inv_id: str) -> None:
        """Reject a received invitation, or cancel one you sent."""
        from .. import vfolder as sdk

        _run("vfolder reject-invitation", lambda api: sdk.delete_invitation(api, inv_id))
        _done("Invitation rejected.", id=inv_id)

    @group.command()
    @click.argument("name", type=str)
    @click.argument("emails", type=str, nargs=-1, required=True)
    @click.option("-p", "--perm", metavar="PERMISSION", type=_PERMISSION, default="rw", show_default=True,
                  help='Permission to give. "ro" (read-only) / "rw" (read-write) / "wd" (write-delete).')
    def share(name: str, emails: tuple[str, ...], perm: str) -> None:
        """Share a group folder to users with overriding permission.

        \b
        NAME: Name of a (group-type) virtual folder.
        EMAILS: Emails to share.
        """
        from .. import vfolder as sdk

        result = _run("vfolder share", lambda api: sdk.share(api, name, perm, list(emails)))
        shared = result.get("shared_emails") or []
        if _json_mode():
            print_json(result)
        elif shared:
            click.echo(f"Shared with {perm} permission to:\n" + "\n".join(f"\t- {e}" for e in shared))
        else:
            click.echo("No users found. Folder is not shared.")

    @group.command()
    @click.argument("name", type=str)
    @click.argument("emails", type=str, nargs=-1, required=True)
    def unshare(name: str, emails: tuple[str, ...]) -> None:
        """Unshare a group folder from users.

        \b
        NAME: Name of a (group-type) virtual folder.
        EMAILS: Emails to unshare.
        """
        from .. import vfolder as sdk

        result = _run("vfolder unshare", lambda api: sdk.unshare(api, name, list(emails)))
        unshared = result.get("unshared_emails") or []
        if _json_mode():
            print_json(result)
        elif unshared:
            click.echo("Unshared from:\n" + "\n".join(f"\t- {e}" for e in unshared))
        else:
            click.echo("No users found. Folder is not unshared.")

    @group.command()
    @click.argument("name", type=str)
    @click.option("-s", "--shared-user-uuid", metavar="SHARED_USER_UUID", type=str, default=None,
                  help="The ID of the person who wants to leave (the person who shared the vfolder).")
    def leave(name: str, shared_user_uuid: str | None) -> None:
        """Leave the shared virtual folder.

        \b
        NAME: Name of a virtual folder
        """
        from .. import vfolder as sdk

        async def _go(api: APISession) -> str | None:
            folder = await sdk.info(api, name)
            if folder.get("type", folder.get("ownership_type")) == "group":
                return "You cannot leave a group virtual folder."
            if folder.get("is_owner"):
                return "You cannot leave a virtual folder you own. Consider using delete instead."
            await sdk.leave(api, name, shared_user_uuid)
            return None

        refusal = _run("vfolder leave", _go)
        if refusal:
            fail(f"vfolder leave failed: {refusal}")
        _say(f'Left the shared virtual folder "{name}".', ok=True, msg="left the shared vfolder", name=name)

    return group


# ---------------------------------------------------------------------------------------------
# transfers


async def _for_each(items: Sequence[Any], work: Callable[[Any], Awaitable[T]]) -> list[T]:
    """Run ``work`` over ``items``, :data:`TRANSFER_CONCURRENCY` at a time, results in order; the
    first failure cancels the rest (what was sent stays resumable)."""
    results: list[T | None] = [None] * len(items)
    queue = iter(enumerate(items))

    async def worker() -> None:
        for i, item in queue:
            results[i] = await work(item)

    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(min(TRANSFER_CONCURRENCY, len(items))):
                tg.create_task(worker())
    except BaseExceptionGroup as group:
        # report the first real failure, not the group that wraps it
        first = group.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return [r for r in results if r is not None]


async def _upload_one(api: APISession, name: str, item: UploadItem, chunk_size: int,
                      bars: Progress | None) -> Any:
    from .. import vfolder as sdk

    task = bars.add_task(item.remote, total=item.size) if bars is not None else None
    started: list[int] = []

    def progress(done: int) -> None:
        if not started:
            started.append(done)
            if done and bars is None and not _json_mode():
                print_info(f"Resuming {item.remote} from {done} of {item.size} bytes")
        if bars is not None and task is not None:
            bars.update(task, completed=done)

    try:
        result = await sdk.upload_file(api, name, item, chunk_size=chunk_size, progress=progress)
    except BaseException:
        if bars is not None and task is not None:
            bars.remove_task(task)
        raise
    if bars is not None and task is not None:
        bars.update(task, completed=item.size)
    elif not _json_mode():
        how = f" (resumed from {result.resumed_from})" if result.resumed_from else ""
        print_info(f"Uploaded {item.local} -> {item.remote} ({_human(item.size)}){how}")
    return result


async def _download_one(api: APISession, name: str, remote: str, dest: Path, bars: Progress | None,
                        retries: int) -> Any:
    from .. import vfolder as sdk

    archive = await _is_directory(api, name, remote)
    if archive:
        dest = dest.with_name((dest.name or name) + ".zip") if remote.strip() not in ("", ".", "/") \
            else dest / f"{name}.zip"
    task = bars.add_task(remote, total=None) if bars is not None else None

    def progress(done: int, total: int | None) -> None:
        if bars is not None and task is not None:
            bars.update(task, completed=done, total=total)

    result = await sdk.download_file(api, name, remote, dest, archive=archive, retries=retries, progress=progress)
    if bars is None and not _json_mode():
        print_info(f"Downloaded {remote} -> {dest} ({_human(result.size)})")
    return result


async def _is_directory(api: APISession, name: str, remote: str) -> bool:
    """Whether ``remote`` is a directory in the folder (looked up in its parent's listing)."""
    from pathlib import PurePosixPath

    from .. import vfolder as sdk
    from ..exceptions import BackendAPIError

    pure = PurePosixPath(remote.strip() or ".")
    if str(pure) in (".", "/"):
        return True
    try:
        listing = await sdk.list_files(api, name, str(pure.parent))
    except BackendAPIError:
        return False  # let the download request give the real reason
    for entry in listing.get("items") or []:
        if entry.get("name") == pure.name:
            return str(entry.get("type", "")).upper() == "DIRECTORY"
    return False


# ---------------------------------------------------------------------------------------------
# formatting


def _legacy_items(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The legacy ``files`` JSON text as ``items`` rows (servers that send only that)."""
    try:
        files = json.loads(result.get("files") or "[]")
    except ValueError:
        return []
    return [{"name": f.get("filename"), "size": f.get("size"), "modified": f.get("mtime"),
             "mode": f.get("mode"), "type": "DIRECTORY" if str(f.get("mode", "")).startswith("d") else "FILE"}
            for f in files if isinstance(f, dict)]


def _short_time(value: Any) -> str:
    from datetime import datetime

    try:
        if isinstance(value, (int, float)):
            dt = datetime.fromtimestamp(value)
        else:
            dt = datetime.fromisoformat(str(value))
        return dt.strftime("%b %d %Y %H:%M:%S")
    except (TypeError, ValueError, OSError):
        return str(value)


def _mode(item: dict[str, Any]) -> str:
    mode = str(item.get("mode") or "")
    if mode.isdigit() and len(mode) <= 4:
        kind = {"DIRECTORY": "d", "SYMLINK": "l"}.get(str(item.get("type", "")).upper(), "-")
        bits = int(mode, 8)
        return kind + "".join((c if bits & (1 << (8 - i)) else "-") for i, c in enumerate("rwxrwxrwx"))
    return mode


def _perm_word(perm: Any) -> str:
    return {"rw": "read-write", "ro": "read-only", "wd": "write-delete"}.get(str(perm), str(perm))


def _failed_items(results: Any) -> list[str]:
    """mkdir's per-path failures: a list of ``{"relpath"|"item", "status", "msg"}`` rows, or a
    ``{"success": [...], "failed": [...]}`` result set."""
    if isinstance(results, dict):
        rows = [r for r in results.get("failed") or [] if isinstance(r, dict)]
    elif isinstance(results, list):
        rows = [r for r in results if isinstance(r, dict) and r.get("status") == "failed"]
    else:
        rows = []
    return [f"{r.get('relpath', r.get('item'))}: {r.get('msg')}" for r in rows]
