"""``backend.ai session upload|download|ls``, with the official CLI's arguments and messages.

``session ls`` without arguments still lists the sessions (our older alias of ``session list``);
with a session, it lists files in it as the official ``session ls SESSID [PATH]`` does.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from .common import (
    ExitCode,
    get_cli_context,
    print_done,
    print_fail,
    print_json,
    print_wait,
    print_warn,
    render_table,
    run_async,
)


def _config() -> Any:
    from .session import _config_or_exit

    return _config_or_exit()


def make_upload_cmd(name: str = "upload") -> click.Command:
    @click.command(name=name)
    @click.argument("session_id", metavar="SESSID")
    @click.argument("files", type=click.Path(exists=True), nargs=-1)
    @click.option("-o", "--owner", "--owner-access-key", "owner", metavar="ACCESS_KEY",
                  help="Specify the owner of the target session explicitly.")
    def upload(session_id: str, files: tuple[str, ...], owner: str | None) -> None:
        """
        Upload the files to a compute session's home directory (/home/work), keeping their
        paths relative to the current directory.

        \b
        SESSID: Session ID or name.
        FILES: One or more paths to upload.
        """
        cli_ctx = get_cli_context()
        if not files:
            print_warn("Please specify one or more file paths after session ID or name.")
            return
        cfg = _config()

        async def _go() -> None:
            from ..request import APISession
            from ..session_files import upload as do_upload

            async with APISession(cfg) as api:
                await do_upload(api, session_id, list(files), owner_access_key=owner)

        if not cli_ctx.json_mode:
            print_wait("Uploading files...")
        run_async(_go, json_mode=cli_ctx.json_mode)
        if cli_ctx.json_mode:
            print_json({"uploaded": list(files)})
        else:
            print_done("Uploaded.")

    return upload


def make_download_cmd(name: str = "download") -> click.Command:
    @click.command(name=name)
    @click.argument("session_id", metavar="SESSID")
    @click.argument("files", nargs=-1)
    @click.option("--dest", type=Path, default=".", help="Destination path to store downloaded file(s)")
    @click.option("-o", "--owner", "--owner-access-key", "owner", metavar="ACCESS_KEY",
                  help="Specify the owner of the target session explicitly.")
    def download(session_id: str, files: tuple[str, ...], dest: Path, owner: str | None) -> None:
        """
        Download files from a compute session's home directory (/home/work).

        \b
        SESSID: Session ID or name.
        FILES: One or more paths inside the session (relative ones from /home/work).
        """
        cli_ctx = get_cli_context()
        if not files:
            print_warn("Please specify one or more file paths after session ID or name.")
            return
        cfg = _config()

        async def _go() -> list[str]:
            from ..request import APISession
            from ..session_files import download as do_download

            async with APISession(cfg) as api:
                return await do_download(api, session_id, list(files), dest, owner_access_key=owner)

        if not cli_ctx.json_mode:
            print_wait(f"Downloading file(s) from {session_id}...")
        names = run_async(_go, json_mode=cli_ctx.json_mode)
        if cli_ctx.json_mode:
            print_json({"downloaded": names, "dest": str(dest.resolve())})
        else:
            print_done(f"Downloaded to {dest.resolve()}.")

    return download


def make_ls_cmd(list_cmd: click.Command, name: str = "ls") -> click.Command:
    @click.command(name=name, context_settings={"ignore_unknown_options": True})
    @click.argument("session_id", metavar="SESSID", required=False)
    @click.argument("path", metavar="PATH", default="/home/work")
    @click.argument("list_args", nargs=-1, type=click.UNPROCESSED)
    @click.pass_context
    def ls(ctx: click.Context, session_id: str | None, path: str, list_args: tuple[str, ...]) -> None:
        """
        List files in a path of a running compute session (without SESSID, or with
        options only: list the sessions, as `session list`).

        \b
        SESSID: Session ID or name.
        PATH: Path inside the session (default /home/work).
        """
        if session_id is None or session_id.startswith("-"):
            args = [a for a in (session_id, *([] if path == "/home/work" else [path]), *list_args) if a]
            with list_cmd.make_context(list_cmd.name, args, parent=ctx.parent) as sub:
                list_cmd.invoke(sub)
            return
        cli_ctx = get_cli_context()
        cfg = _config()

        async def _go() -> dict[str, Any]:
            from ..request import APISession
            from ..session_files import list_files

            async with APISession(cfg) as api:
                return await list_files(api, session_id, path)

        if not cli_ctx.json_mode:
            print_wait(f'Retrieving list of files in "{path}"...')
        result = run_async(_go, json_mode=cli_ctx.json_mode)
        if result["errors"]:
            print_fail(result["errors"])
            sys.exit(ExitCode.FAILURE)
        if cli_ctx.json_mode:
            print_json(result)
            return
        rows = [[f["filename"], _size(f["size"]), datetime.fromtimestamp(f["mtime"]).strftime("%b %d %Y %H:%M:%S"),
                 f["mode"]] for f in result["files"]]
        print_done("Retrived.")
        click.echo(render_table(["File name", "Size", "Modified", "Mode"], rows))

    return ls


def _size(n: int) -> str:
    value = float(n)
    for unit in ("Bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "Bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} Bytes"
