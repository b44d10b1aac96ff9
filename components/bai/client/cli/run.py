"""``backend.ai run``: create (or reuse) a session, execute code over the streaming API, and
optionally destroy the session. With FILES, as the official CLI: the files are uploaded into
/home/work (paths relative to ``--basedir``), then run in batch mode (``--clean``, ``--build``,
``--exec`` shell commands, each ``*`` by default: build what the files need, run ``main.py``).

stdout carries exactly the program's stdout, stderr the program's stderr; progress and status
messages also go to stderr (none with ``-q``). The exit status is the code's exit code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from .common import (
    ExitCode,
    fail,
    get_cli_context,
    print_done,
    print_fail,
    print_info,
    print_json,
    print_warn,
    spinner,
)
from .params import build_create_kwargs, start_options

if TYPE_CHECKING:
    from ..request import APISession
    from ..session import SessionCreated


def make_run_cmd(name: str = "run", help_text: str | None = None) -> click.Command:
    @click.command(name=name)
    @click.argument("image", type=str, required=False)
    @click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
    @click.option("-c", "--code", metavar="CODE", help="The code snippet as a single string")
    @click.option(
        "--rm", is_flag=True,
        help="Terminate the session immediately after running the given code or files",
    )
    @click.option(
        "-s", "--stats", is_flag=True,
        help='Show resource usage statistics after termination (only works if "--rm" is given)',
    )
    @click.option(
        "-q", "--quiet", is_flag=True,
        help="Hide execution details but show only the compute_session outputs.",
    )
    @click.option("--clean", metavar="CMD", help="Custom shell command for cleaning up the base directory")
    @click.option("--build", metavar="CMD", help="Custom shell command for building the given files")
    @click.option("--exec", "exec_", metavar="CMD", help="Custom shell command for executing the given files")
    @click.option("--basedir", metavar="PATH", type=click.Path(), default=None,
                  help="Base directory path of uploaded files. All uploaded files must reside inside this directory.")
    @start_options
    def run(
        image: str | None, files: tuple[str, ...], code: str | None, rm: bool, stats: bool,
        quiet: bool, clean: str | None, build: str | None, exec_: str | None, basedir: str | None, **opts: Any,
    ) -> None:
        """
        Run the given code snippet or file in a session.
        Depending on the session name you give (default is random),
        it may reuse an existing session or create a new one.

        \b
        IMAGE: The name (and version/platform tags appended after a colon) of session
               runtime or programming language. May be left out with -t NAME when
               the session NAME exists: the code then runs in it.
        FILES: Files to upload and run in batch mode (--clean/--build/--exec); needs IMAGE.
        """
        cli_ctx = get_cli_context()
        json_mode = cli_ctx.json_mode
        if image is None and opts.get("name") is None:
            fail("Give an IMAGE to start a session (e.g. backend.ai run -c CODE python), "
                 "or -t NAME to run in an existing session.",
                 ExitCode.INVALID_ARGUMENT, json_mode=json_mode)
        if image is not None and not files and code is None and Path(image).is_file():
            # `run -t NAME main.py`: the file was taken for the IMAGE
            fail(f"{image} is a file: give the IMAGE before it "
                 f"(backend.ai run [-t NAME] IMAGE {image}).",
                 ExitCode.INVALID_ARGUMENT, json_mode=json_mode)
        if files and code:
            fail("You can run only either source files or command-line code snippet.",
                 ExitCode.INVALID_ARGUMENT, json_mode=json_mode)
        if not files and code is None:
            fail('You should provide the command-line code snippet using "-c" option '
                 "if run without files.", ExitCode.INVALID_ARGUMENT, json_mode=json_mode)
        batch: dict[str, Any] | None = None
        if files:
            from ..session_files import relative_paths

            try:
                relative_paths(files, basedir)
            except Exception as e:  # BackendClientError: outside the base directory
                fail(str(e), ExitCode.INVALID_ARGUMENT, json_mode=json_mode)
            batch = {"files": list(files), "basedir": basedir,
                     "opts": {"clean": clean or "*", "build": build or "*", "exec": exec_ or "*"}}
        code = code or ""
        kwargs = build_create_kwargs(opts)
        # the official CLI's ``run`` sends no dependencies and an empty preopen list
        kwargs["dependencies"] = None
        kwargs["preopen_ports"] = list(opts.get("preopen") or [])
        if kwargs["name"] is None:
            from ..helpers import generate_session_name

            kwargs["name"] = generate_session_name()
        from .admin.base import call

        exit_code = call(
            lambda api: _run(api, image, code, kwargs, rm=rm, stats=stats, quiet=quiet, json_mode=json_mode,
                             batch=batch),
            action="run",
        )
        sys.exit(exit_code)

    if help_text and help_text.startswith("Alias"):
        run.short_help = help_text
    return run


def _write(stream: IO[str], text: str) -> None:
    try:
        stream.write(text)
    except UnicodeEncodeError:
        stream.flush()
        buf = getattr(stream, "buffer", None)
        if buf is None:
            stream.write(text.encode("ascii", "backslashreplace").decode("ascii"))
        else:
            buf.write(text.encode("utf-8", "surrogateescape"))


def print_console(result: dict[str, Any]) -> None:
    """Forward one execution result's console records to our stdout/stderr."""
    out, err = sys.stdout, sys.stderr
    for rec in result.get("console") or []:
        if not rec:
            continue
        kind = rec[0]
        data = rec[1] if len(rec) > 1 else ""
        if kind == "stdout":
            _write(out, str(data))
        elif kind == "stderr":
            _write(err, str(data))
        else:
            out.flush()
            _write(err, f"----- output record (type: {kind}) -----\n{data}\n----- end of record -----\n")
    files = result.get("files") or []
    if files:
        out.flush()
        _write(err, "--- generated files ---\n")
        for item in files:
            if isinstance(item, dict):
                _write(err, f"{item.get('name')}: {item.get('url')}\n")
            else:
                _write(err, f"{item}\n")
        _write(err, "--- end of generated files ---\n")
    out.flush()
    err.flush()


async def read_user_input(options: dict[str, Any]) -> str:
    """Read one line (or a password) from the terminal without blocking the event loop.

    A daemon thread is used so that an interrupted read never blocks interpreter exit.
    """
    import asyncio
    import getpass
    import threading

    loop = asyncio.get_running_loop()
    fut: asyncio.Future[str] = loop.create_future()

    def _reader() -> None:
        try:
            if options.get("is_password"):
                value = getpass.getpass("")
            else:
                line = sys.stdin.readline()
                value = line[:-1] if line.endswith("\n") else line
        except BaseException as e:  # forwarded to the awaiting coroutine
            loop.call_soon_threadsafe(_settle, None, e)
            return
        loop.call_soon_threadsafe(_settle, value, None)

    def _settle(value: str | None, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc if isinstance(exc, Exception) else EOFError(str(exc)))
        else:
            fut.set_result(value or "")

    threading.Thread(target=_reader, name="bai-stdin", daemon=True).start()
    return await fut


def _console_and_steps(verbose: bool) -> Any:
    """print_console, plus the official CLI's line for each finished batch step."""

    def on_result(result: dict[str, Any]) -> None:
        print_console(result)
        if verbose and result.get("status") == "clean-finished":
            print_done(f"Clean finished. (exit code = {result.get('exitCode')})")
        elif verbose and result.get("status") == "build-finished":
            print_done(f"Build finished. (exit code = {result.get('exitCode')})")

    return on_result


def _exit_status(exit_code: int | None, status: str) -> int:
    if exit_code is None:
        return 0 if status == "finished" else int(ExitCode.FAILURE)
    if 0 <= exit_code <= 255:
        return exit_code
    if exit_code < 0 and -exit_code < 128:
        return 128 - exit_code  # killed by a signal
    return int(ExitCode.FAILURE)


async def _destroy_quietly(api: APISession, name: str, verbose: bool) -> Any:
    from ..exceptions import BackendError
    from ..session import destroy

    try:
        with spinner("Cleaning up the session...", enabled=verbose):
            ret = await destroy(api, name)
    except BackendError as e:
        from .admin.base import describe

        print_warn(f"Failed to clean up the session {name}: {describe(e)}")
        return None
    if verbose:
        print_done("Cleaned up the session.")
    return ret


async def _existing(api: APISession, name: str, json_mode: bool) -> SessionCreated:
    """The live session ``name`` (for ``run -t NAME`` without an IMAGE), shaped like a reused
    session of ``create``; a clear error when there is none."""
    from ..exceptions import BackendAPIError
    from ..session import SessionCreated, get_info

    try:
        info = await get_info(api, name)
    except BackendAPIError as e:
        if e.status != 404:
            raise
        fail(f"No session named {name}: give an IMAGE to start one "
             f"(backend.ai run -t {name} -c CODE python).",
             ExitCode.INVALID_ARGUMENT, json_mode=json_mode)
    return SessionCreated(session_id=None, name=name, status=str(info.get("status", "")),
                          created=False, service_ports=[],
                          domain=str(info.get("domainName") or api.config.domain),
                          group=api.config.group, raw=info)


async def _run(
    api: APISession,
    image: str | None,
    code: str,
    create_kwargs: dict[str, Any],
    *,
    rm: bool,
    stats: bool,
    quiet: bool,
    json_mode: bool,
    batch: dict[str, Any] | None = None,
) -> int:
    from .. import session as sess

    verbose = not quiet
    name = create_kwargs["name"]
    if image is None:
        created = await _existing(api, name, json_mode)
    else:
        with spinner(f"Starting the session {name}...", enabled=verbose):
            created = await sess.create(api, image, **create_kwargs)
    status = created.status
    if status != "RUNNING":
        if status == "PENDING":
            print_info(f"Session ID {created.name} is enqueued for scheduling.")
        elif status == "SCHEDULED":
            print_info(f"Session ID {created.name} is scheduled and about to be started.")
        elif status == "TIMEOUT":
            print_info(f"Session ID {created.name} is still on the job queue.")
        elif status == "TERMINATED":
            print_warn(f"Session ID {created.name} is already terminated.\n"
                       "This may be an error in the compute_session image.")
        else:
            print_fail(f"Session ID {created.name} has an error during scheduling/startup "
                       f"or cancelled (status: {status}).")
        if rm:
            await _destroy_quietly(api, created.name, verbose)
        if json_mode:
            print_json({"sessionId": created.session_id, "sessionName": created.name,
                        "created": created.created, "sessionStatus": status,
                        "status": None, "exitCode": None})
        return int(ExitCode.OPERATION_TIMEOUT if status == "TIMEOUT" else ExitCode.FAILURE)
    if verbose:
        if created.created:
            print_done(f"Session {created.name} is ready (domain={created.domain}, group={created.group}).")
        else:
            print_done(f"Reusing session {created.name}...")
    ref = created.session_id or created.name
    result = None
    destroy_ret: Any = None
    try:
        if batch is not None:
            from ..session_files import upload

            with spinner("Uploading source files...", enabled=verbose):
                await upload(api, ref, batch["files"], basedir=batch["basedir"])
            if verbose:
                print_done("Uploading done.")
        result = await sess.stream_execute(
            api,
            ref,
            code,
            mode="query" if batch is None else "batch",
            opts=None if batch is None else batch["opts"],
            on_result=None if json_mode else _console_and_steps(verbose),
            read_input=read_user_input,
        )
        if verbose:
            print_done(f"Execution finished. (exit code = {result.exit_code})")
    finally:
        if rm:
            destroy_ret = await _destroy_quietly(api, created.name, verbose)
    stats_data = destroy_ret.get("stats") if isinstance(destroy_ret, dict) else None
    if json_mode:
        print_json({
            "sessionId": created.session_id,
            "sessionName": created.name,
            "created": created.created,
            "sessionStatus": status,
            "status": result.status,
            "exitCode": result.exit_code,
            "stdout": result.stdout,
            "stderr": result.stderr,
            "console": result.console,
            "files": result.files,
            **({"stats": stats_data} if rm and stats else {}),
        })
    elif rm and stats:
        if stats_data:
            from .session import format_stats

            click.echo("Statistics:\n" + format_stats(stats_data), err=True)
        else:
            print_warn("Statistics: unavailable.")
    return _exit_status(result.exit_code, result.status)
