"""``backend.ai session ...`` (and the top-level aliases ``start``, ``ps``, ``info``, ``rm``, ``kill``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from .common import (
    AliasGroup,
    ExitCode,
    fail,
    get_cli_context,
    print_done,
    print_fail,
    print_info,
    print_json,
    print_wait,
    print_warn,
    render_table,
    report_error,
    run_async,
    spinner,
)
from .params import build_create_kwargs, start_options

if TYPE_CHECKING:
    from ..config import APIConfig


def _alias_doc(cmd: click.Command, help_text: str | None) -> click.Command:
    if help_text and help_text.startswith("Alias"):
        cmd.short_help = help_text
        cmd.help = f"{help_text}.\n\n{cmd.help or ''}"
    return cmd


def _config_or_exit() -> APIConfig:
    cli_ctx = get_cli_context()
    try:
        return cli_ctx.get_config()
    except Exception as e:  # BackendClientError for malformed configuration
        report_error(e, json_mode=cli_ctx.json_mode)
        sys.exit(ExitCode.FAILURE)


# ---------------------------------------------------------------------------------------------
# create


def make_create_cmd(name: str = "create", help_text: str | None = None) -> click.Command:
    @click.command(name=name)
    @click.argument("image")
    @click.option(
        "-o", "--owner", "--owner-access-key", "owner", metavar="ACCESS_KEY",
        help="Set the owner of the target session explicitly.",
    )
    @click.option(
        "-c", "--startup-command", metavar="COMMAND",
        help="Set the command to execute for batch-type sessions.",
    )
    @click.option(
        "--enqueue-only", is_flag=True,
        help="Enqueue the session and return immediately without waiting for its startup.",
    )
    @click.option(
        "--depends", metavar="SESSION_ID", type=str, multiple=True,
        help="Set the list of session ID or names that the newly created session depends on. "
        "The session will get scheduled after all of them successfully finish.",
    )
    @click.option(
        "--assign-agent", metavar="AGENTS", default=None, type=str,
        help="Assign the session to specific agents (super-admins only; e.g. agent_id_1,agent_id_2).",
    )
    @start_options
    def create(
        image: str, owner: str | None, startup_command: str | None, enqueue_only: bool,
        depends: tuple[str, ...], assign_agent: str | None, **opts: Any,
    ) -> None:
        """
        Prepare and start a single compute session without executing codes.
        You may use the created session to execute codes using the "run" command.

        \b
        IMAGE: The name (and version/platform tags appended after a colon) of session
               runtime or programming language.
        """
        cli_ctx = get_cli_context()
        kwargs = build_create_kwargs(opts)
        if kwargs["name"] is None:
            from ..helpers import generate_session_name

            kwargs["name"] = generate_session_name()
        kwargs.update(
            owner_access_key=owner,
            startup_command=startup_command,
            enqueue_only=enqueue_only,
            dependencies=list(depends),
            preopen_ports=opts.get("preopen"),
            assign_agent=[a for a in assign_agent.split(",") if a] if assign_agent else None,
        )
        from .admin.base import call

        async def _go(api: Any) -> Any:
            from ..session import create as create_session

            msg = "Enqueueing the session..." if enqueue_only else f"Starting the session {kwargs['name']}..."
            with spinner(msg, enabled=not cli_ctx.json_mode):
                return await create_session(api, image, **kwargs)

        created = call(_go, action="session create")
        _report_created(created, json_mode=cli_ctx.json_mode)

    return _alias_doc(create, help_text)


def _report_created(created: Any, *, json_mode: bool) -> None:
    """Print a creation answer (a SessionCreated) as "session create" does; exit 1 unless the
    session is on its way to RUNNING."""
    status = created.status
    ok = status in ("PENDING", "SCHEDULED", "RUNNING", "TIMEOUT")
    if json_mode:
        print_json({
            "sessionId": created.session_id,
            "sessionName": created.name,
            "status": status,
            "created": created.created,
            "servicePorts": created.service_ports,
        })
    else:
        click.echo(f"Session ID: {created.session_id}")
        click.echo(f"Session name: {created.name}")
        click.echo(f"Status: {status}")
        sid = created.session_id or created.name
        if status == "PENDING":
            print_info(f"Session ID {sid} is enqueued for scheduling.")
        elif status == "SCHEDULED":
            print_info(f"Session ID {sid} is scheduled and about to be started.")
        elif status == "RUNNING":
            if created.created:
                print_info(f"Session ID {sid} is created and ready.")
            else:
                print_info(f"Session ID {sid} is already running and ready.")
            names = [p.get("name") for p in created.service_ports if isinstance(p, dict)]
            if names:
                print_info("This session provides the following app services: " + ", ".join(map(str, names)))
        elif status == "TIMEOUT":
            print_info(f"Session ID {sid} is still on the job queue.")
        elif status == "TERMINATED":
            print_warn(f"Session ID {sid} is already terminated.\n"
                       "This may be an error in the compute_session image.")
        else:
            print_fail(f"Session ID {sid} has an error during scheduling/startup or cancelled.")
    if not ok:
        sys.exit(ExitCode.FAILURE)


# ---------------------------------------------------------------------------------------------
# list

_LIST_COLUMNS: list[tuple[str, str, str]] = [
    # (GraphQL field, console header, JSON key) -- JSON keys as the official CLI's --output json
    ("name", "Name", "name"),
    ("access_key", "Owner Access Key", "access_key"),
    ("id", "Session ID", "session_id"),
    ("group_name", "Project/Group", "group_name"),
    ("main_kernel_id", "Main Kernel ID", "main_kernel_id"),
    ("image", "Image", "image"),
    ("type", "Type", "type"),
    ("status", "Status", "status"),
    ("status_info", "Status Info", "status_info"),
    ("status_changed", "Last Updated", "status_changed"),
    ("result", "Result", "result"),
]

_STATUS_CHOICES = [
    "PENDING", "SCHEDULED", "PULLING", "PREPARING", "RUNNING", "RESTARTING", "RUNNING_DEGRADED",
    "TERMINATING", "TERMINATED", "ERROR", "CANCELLED", "ALL",
]


def make_list_cmd(name: str = "list", help_text: str | None = None) -> click.Command:
    @click.command(name=name)
    @click.option("-s", "--status", default=None, type=click.Choice(_STATUS_CHOICES, case_sensitive=False),
                  help="Filter by the given status")
    @click.option("--access-key", type=str, default=None,
                  help="Get sessions for a specific access key (only works if you are a super-admin)")
    @click.option("--name-only", is_flag=True, help="Display session names only.")
    @click.option("--dead", is_flag=True, help="Filter only dead sessions. Ignores --status option.")
    @click.option("--running", is_flag=True,
                  help="Filter only scheduled and running sessions. Ignores --status option.")
    @click.option("--plain", is_flag=True,
                  help="Display the session list without decorative line drawings and the header.")
    @click.option("--filter", "filter_", default=None, help="Set the query filter expression.")
    @click.option("--order", default=None, help="Set the query ordering expression.")
    @click.option("--offset", default=0, type=click.IntRange(min=0), help="The index of the first item to show.")
    @click.option("--limit", default=None, type=click.IntRange(min=1),
                  help="The maximum number of items to show (default: all).")
    @click.option("-a", "--all", "all_", is_flag=True,
                  help='Alias of "--status=ALL": list all sessions regardless of status. Ignores --status option.')
    def list_(
        status: str | None, access_key: str | None, name_only: bool, dead: bool, running: bool,
        plain: bool, filter_: str | None, order: str | None, offset: int, limit: int | None, all_: bool,
    ) -> None:
        """
        List compute sessions (active ones by default).
        """
        from ..helpers import ACTIVE_STATUSES, ALL_STATUSES, DEAD_STATUSES, RUNNING_STATUSES

        cli_ctx = get_cli_context()
        status_q: str | None = status.upper() if status else None
        if status_q is None:
            status_q = ACTIVE_STATUSES
        if running:
            status_q = RUNNING_STATUSES
        if dead:
            status_q = DEAD_STATUSES
        if status_q == "ALL" or all_:
            status_q = ALL_STATUSES
        cfg = _config_or_exit()

        async def _go() -> tuple[list[dict[str, Any]], int]:
            from ..request import APISession
            from ..session import iter_sessions

            async with APISession(cfg) as api:
                if cli_ctx.json_mode:
                    # one page, as the official CLI's JSON output
                    return await iter_sessions(
                        api, status=status_q, access_key=access_key, filter=filter_, order=order,
                        offset=offset, page_size=min(limit or 20, 100), max_items=limit or 20,
                    )
                return await iter_sessions(
                    api, status=status_q, access_key=access_key, filter=filter_, order=order,
                    offset=offset, page_size=min(limit or 20, 100), max_items=limit,
                )

        items, total = run_async(_go, json_mode=cli_ctx.json_mode)
        if cli_ctx.json_mode:
            fields = _LIST_COLUMNS[:1] if name_only else _LIST_COLUMNS
            print_json({
                "count": len(items),
                "total_count": total,
                "items": [{jkey: item.get(f) for f, _, jkey in fields} for item in items],
            })
            return
        if name_only:
            for item in items:
                click.echo(str(item.get("name")))
            return
        if not items:
            print_info("No matching items.")
            return
        click.echo(render_table(
            [h for _, h, _ in _LIST_COLUMNS],
            [[item.get(f) for f, _, _ in _LIST_COLUMNS] for item in items],
            plain=plain,
        ))

    return _alias_doc(list_, help_text)


# ---------------------------------------------------------------------------------------------
# info


def make_info_cmd(name: str = "info", help_text: str | None = None) -> click.Command:
    @click.command(name=name)
    @click.argument("session_ref", metavar="NAME")
    @click.option("-o", "--owner", "--owner-access-key", "owner", metavar="ACCESS_KEY",
                  help="Specify the owner of the target session explicitly.")
    def info(session_ref: str, owner: str | None) -> None:
        """
        Show detailed information of a compute session (by name or ID).
        """
        cli_ctx = get_cli_context()
        cfg = _config_or_exit()

        async def _go() -> dict[str, Any]:
            from ..request import APISession
            from ..session import get_info

            async with APISession(cfg) as api:
                return await get_info(api, session_ref, owner_access_key=owner)

        data = run_async(_go, json_mode=cli_ctx.json_mode)
        if cli_ctx.json_mode:
            print_json(data)
            return
        click.echo(render_table(["Field", "Value"], [[k, _info_value(v)] for k, v in data.items()]))

    return _alias_doc(info, help_text)


def make_logs_cmd(name: str = "logs", help_text: str | None = None) -> click.Command:
    @click.command(name=name)
    @click.argument("session_ref", metavar="NAME")
    @click.option("-o", "--owner", "--owner-access-key", "owner", metavar="ACCESS_KEY",
                  help="Specify the owner of the target session explicitly.")
    def logs(session_ref: str, owner: str | None) -> None:
        """
        Show the container log of a compute session's main kernel (its newest lines).
        """
        cli_ctx = get_cli_context()
        cfg = _config_or_exit()

        async def _go() -> str:
            from ..request import APISession
            from ..session import get_logs

            async with APISession(cfg) as api:
                return await get_logs(api, session_ref, owner_access_key=owner)

        text = run_async(_go, json_mode=cli_ctx.json_mode)
        if cli_ctx.json_mode:
            print_json({"logs": text})
            return
        click.echo(text, nl=not text.endswith("\n"))

    return _alias_doc(logs, help_text)


def _info_value(v: Any) -> Any:
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False) if v else "-"
    return v


# ---------------------------------------------------------------------------------------------
# destroy


def format_stats(stats: Any) -> str:
    if not isinstance(stats, dict):
        return str(stats)
    rows = [[k, json.dumps(v) if isinstance(v, (dict, list)) else v]
            for k, v in stats.items() if k not in ("status", "version")]
    if not rows:
        return "(no statistics)"
    return render_table(["Key", "Value"], rows, plain=True)


def make_destroy_cmd(name: str = "destroy", help_text: str | None = None) -> click.Command:
    @click.command(name=name)
    @click.argument("session_names", metavar="NAMES", nargs=-1)
    @click.option("-f", "--forced", is_flag=True,
                  help="Force-terminate the errored sessions (only allowed for admins)")
    @click.option("-o", "--owner", "--owner-access-key", "owner", metavar="ACCESS_KEY",
                  help="Specify the owner of the target session explicitly.")
    @click.option("-s", "--stats", is_flag=True, help="Show resource usage statistics after termination")
    @click.option("-r", "--recursive", is_flag=True, help="Cancel all the dependant sessions recursively")
    def destroy(session_names: tuple[str, ...], forced: bool, owner: str | None, stats: bool,
                recursive: bool) -> None:
        """
        Terminate and destroy the given sessions (by name or ID).
        """
        cli_ctx = get_cli_context()
        json_mode = cli_ctx.json_mode
        if not session_names:
            fail('Specify at least one session name. Check usage with "-h" option.',
                 ExitCode.INVALID_ARGUMENT, json_mode=json_mode)
        cfg = _config_or_exit()

        async def _go() -> list[tuple[str, Any, BaseException | None]]:
            from ..exceptions import BackendAPIError
            from ..request import APISession
            from ..session import destroy as destroy_session

            results: list[tuple[str, Any, BaseException | None]] = []
            async with APISession(cfg) as api:
                if not json_mode and not sys.stderr.isatty():
                    print_wait("Terminating the session(s)...")
                with spinner("Terminating the session(s)...", enabled=not json_mode):
                    for sname in session_names:
                        try:
                            ret = await destroy_session(
                                api, sname, forced=forced, recursive=recursive, owner_access_key=owner
                            )
                        except BackendAPIError as e:
                            results.append((sname, None, e))
                        else:
                            results.append((sname, ret, None))
            return results

        results = run_async(_go, json_mode=json_mode)
        failed = [r for r in results if r[2] is not None]
        if json_mode:
            from .common import error_json

            print_json({
                "results": [
                    {"name": n, "ok": e is None, **({"stats": _stats_of(ret)} if e is None else error_json(e))}
                    for n, ret, e in results
                ]
            })
        else:
            for n, ret, e in results:
                if e is not None:
                    report_error(e)
                    if getattr(e, "status", None) == 404:
                        print_info(f'Session {n}: if you are an admin, use "-o" / "--owner" option '
                                   "to terminate other user's session.")
                    continue
                print_done(f"Terminated the session {n}.")
                if stats:
                    st = _stats_of(ret)
                    if st:
                        click.echo(f"Statistics of {n}:" if len(results) > 1 else "Statistics:")
                        click.echo(format_stats(st))
                    else:
                        click.echo("Statistics is not available.")
            if forced and not failed:
                print_warn("If you have destroyed a session whose status is one of "
                           "[PULLING, SCHEDULED, PREPARING, TERMINATING, ERROR], "
                           "manual cleanup of actual containers may be required.")
        if failed:
            sys.exit(ExitCode.FAILURE)

    return _alias_doc(destroy, help_text)


def make_restart_cmd(name: str = "restart", help_text: str | None = None) -> click.Command:
    @click.command(name=name)
    @click.argument("session_refs", metavar="SESSION_REFS", nargs=-1)
    @click.option("-o", "--owner", "--owner-access-key", "owner", metavar="ACCESS_KEY",
                  help="Specify the owner of the target session explicitly.")
    def restart(session_refs: tuple[str, ...], owner: str | None) -> None:
        """
        Restart the compute session: its kernels get fresh processes (variables are lost) in the
        same containers.

        \b
        SESSION_REF: session ID or name
        """
        cli_ctx = get_cli_context()
        json_mode = cli_ctx.json_mode
        if not session_refs:
            fail('Specify at least one session ID. Check usage with "-h" option.',
                 ExitCode.INVALID_ARGUMENT, json_mode=json_mode)
        cfg = _config_or_exit()

        async def _go() -> list[tuple[str, BaseException | None]]:
            from ..exceptions import BackendAPIError
            from ..request import APISession
            from ..session import restart as restart_session

            results: list[tuple[str, BaseException | None]] = []
            async with APISession(cfg) as api:
                if not json_mode:
                    print_wait("Restarting the session(s)...")
                for ref in session_refs:
                    try:
                        await restart_session(api, ref, owner_access_key=owner)
                    except BackendAPIError as e:
                        results.append((ref, e))
                    else:
                        results.append((ref, None))
            return results

        results = run_async(_go, json_mode=json_mode)
        if json_mode:
            from .common import error_json

            print_json({"results": [{"name": n, "ok": e is None, **({} if e is None else error_json(e))}
                                    for n, e in results]})
        else:
            for n, e in results:
                if e is not None:
                    report_error(e)
                    if getattr(e, "status", None) == 404:
                        print_info(f'Session {n}: if you are an admin, use "-o" / "--owner" option '
                                   "to restart other user's session.")
            if all(e is None for _, e in results):
                print_done("Done.")
        if any(e is not None for _, e in results):
            sys.exit(ExitCode.FAILURE)

    return _alias_doc(restart, help_text)


def _stats_of(ret: Any) -> Any:
    if isinstance(ret, dict):
        return ret.get("stats")
    if isinstance(ret, list):
        return [r.get("stats") if isinstance(r, dict) else r for r in ret]
    return None


# ---------------------------------------------------------------------------------------------
# rename, status-history, convert-to-image, commit, create-from-template

_OWNER_HELP = "Specify the owner of the target session explicitly."


def make_rename_cmd(name: str = "rename", help_text: str | None = None) -> click.Command:
    @click.command(name=name)
    @click.argument("session_ref", metavar="SESSID")
    @click.argument("new_name", metavar="NEWNAME")
    @click.option("-o", "--owner", "--owner-access-key", "owner", metavar="ACCESS_KEY", help=_OWNER_HELP)
    def rename(session_ref: str, new_name: str, owner: str | None) -> None:
        """
        Rename a running compute session.

        \b
        SESSID: the session's ID or name.
        NEWNAME: its new name (4 to 64 characters; not another live session's of the same owner).
        """
        from .admin.base import call

        async def _go(api: Any) -> None:
            from ..session import rename as rename_session

            await rename_session(api, session_ref, new_name, owner_access_key=owner)

        call(_go, action="session rename")
        if get_cli_context().json_mode:
            print_json({"ok": True, "msg": f"Session renamed to {new_name}.", "name": new_name})
        else:
            print_done(f"Session renamed to {new_name}.")

    return _alias_doc(rename, help_text)


def make_status_history_cmd(name: str = "status-history", help_text: str | None = None) -> click.Command:
    @click.command(name=name)
    @click.argument("session_ref", metavar="SESSID")
    @click.option("-o", "--owner", "--owner-access-key", "owner", metavar="ACCESS_KEY", help=_OWNER_HELP)
    def status_history(session_ref: str, owner: str | None) -> None:
        """
        Show when the compute session entered each status it has been in (also for ended
        sessions), and how long it has held its resources (PREPARING until TERMINATED, or now).
        --output json prints the map of status -> time as the server sends it.

        \b
        SESSID: the session's ID or name.
        """
        from .admin.base import call

        async def _go(api: Any) -> dict[str, str]:
            from ..session import status_history as history_of

            return await history_of(api, session_ref, owner_access_key=owner)

        history = call(_go, action="session status-history")
        if get_cli_context().json_mode:
            print_json(history)
            return
        if not history:
            print_info("No status history.")
            return
        rows = sorted(history.items(), key=lambda kv: _time_order(kv[1]))
        click.echo(render_table(["Status", "Since"], [list(r) for r in rows]))
        allocated = _allocation_time(history)
        if allocated is not None:
            print_info(f"Resource allocation time: {allocated}")

    return _alias_doc(status_history, help_text)


def _parse_time(text: str) -> Any:
    from datetime import UTC, datetime

    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _time_order(text: str) -> float:
    """A sort key: the time's timestamp (unparsable times last)."""
    t = _parse_time(text)
    return float("inf") if t is None else float(t.timestamp())


def _allocation_time(history: dict[str, str]) -> str | None:
    """PREPARING until TERMINATED (or now, for a live session), as the official client reports it
    (it reads lower-case keys; the server sends the original's upper-case status names)."""
    from datetime import UTC, datetime

    start = _parse_time(history.get("PREPARING", ""))
    if start is None:
        return None
    end = _parse_time(history.get("TERMINATED", "")) or datetime.now(UTC)
    return str(end - start)


async def _follow_task(api: Any, task_id: str, what: str, *, json_mode: bool) -> str:
    """Follow background task ``task_id`` to its end, showing its progress on stderr: a rich
    progress bar on a terminal, one line per new message otherwise, nothing with --output json.
    Its final message; a failed task raises BackendClientError with the server's message."""
    from ..events import follow_background_task

    if json_mode:
        return await follow_background_task(api, task_id)
    if not sys.stderr.isatty():
        seen: list[str] = []

        def log_progress(current: int, total: int, message: str) -> None:
            if message and message not in seen[-1:]:
                seen.append(message)
                print_info(f"[{current}/{total}] {message}")

        print_wait(what)
        return await follow_background_task(api, task_id, log_progress)
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as progress:
        bar = progress.add_task(what, total=None)

        def show_progress(current: int, total: int, message: str) -> None:
            progress.update(bar, completed=current, total=total or None, description=message or what)

        return await follow_background_task(api, task_id, show_progress)


def make_convert_to_image_cmd(name: str = "convert-to-image", help_text: str | None = None) -> click.Command:
    @click.command(name=name)
    @click.argument("session_ref", metavar="SESSID_OR_NAME")
    @click.argument("image_name", metavar="IMAGENAME")
    @click.option("-o", "--owner", "--owner-access-key", "owner", metavar="ACCESS_KEY", help=_OWNER_HELP)
    def convert_to_image(session_ref: str, image_name: str, owner: str | None) -> None:
        """
        Save a running session (its main container) as a customized image only its owner sees,
        following the work to its end; prints the new image's reference, which "session create"
        takes and "image list --customized" lists.

        \b
        SESSID_OR_NAME: the session's ID or name.
        IMAGENAME: the new image's name (a label; the reference is derived from the session's image).
        """
        from .admin.base import call

        json_mode = get_cli_context().json_mode

        async def _go(api: Any) -> tuple[str, str]:
            from ..session import convert_to_image as imagify

            task_id = await imagify(api, session_ref, image_name, owner_access_key=owner)
            message = await _follow_task(api, task_id, f"Saving the session {session_ref} as an image...",
                                         json_mode=json_mode)
            return task_id, message.removeprefix("Image ready: ").strip()

        task_id, reference = call(_go, action="session convert-to-image")
        if json_mode:
            print_json({"ok": True, "msg": "Session export process completed.", "task_id": task_id,
                        "image": reference})
        else:
            print_done("Session export process completed.")
            click.echo(reference)

    return _alias_doc(convert_to_image, help_text)


def make_commit_cmd(name: str = "commit", help_text: str | None = None) -> click.Command:
    @click.command(name=name)
    @click.argument("session_ref", metavar="SESSID")
    @click.option("--filename", metavar="NAME", default=None,
                  help="The tar's file name (.tar is added; default: the session's name and the time).")
    @click.option("-o", "--owner", "--owner-access-key", "owner", metavar="ACCESS_KEY", help=_OWNER_HELP)
    def commit(session_ref: str, filename: str | None, owner: str | None) -> None:
        """
        Save a running session (its main container) as an image tar on its agent host, following
        the work to its end; prints the tar's path on that host.

        \b
        SESSID: the session's ID or name.
        """
        from .admin.base import call

        json_mode = get_cli_context().json_mode

        async def _go(api: Any) -> tuple[dict[str, Any], str]:
            from ..session import commit as commit_session

            started = await commit_session(api, session_ref, filename=filename, owner_access_key=owner)
            saved = await _follow_task(api, str(started["bgtask_id"]), f"Committing the session {session_ref}...",
                                       json_mode=json_mode)
            return started, saved

        started, saved = call(_go, action="session commit")
        path = saved or str(started.get("path"))  # the task's final message: the tar's path on the agent host
        if json_mode:
            print_json({"ok": True, "msg": "Session commit completed.", "task_id": started["bgtask_id"],
                        "kernel": started.get("kernel"), "path": path})
        else:
            print_done("Session commit completed (the tar is on the session's agent host).")
            click.echo(path)

    return _alias_doc(commit, help_text)


#: start option (click parameter name) -> the build_create_kwargs keys it sets
_TEMPLATE_OVERRIDES: dict[str, tuple[str, ...]] = {
    "type_": ("type_",), "starts_at": ("starts_at",), "max_wait": ("max_wait",), "no_reuse": ("no_reuse",),
    "callback_url": ("callback_url",), "env": ("environ",), "tag": ("tag",), "scaling_group": ("scaling_group",),
    "resources": ("resources",), "resource_opts": ("resource_opts",), "cluster_size": ("cluster_size",),
    "cluster_mode": ("cluster_mode",), "architecture": ("architecture",), "bootstrap_script": ("bootstrap_script",),
    "domain": ("domain",), "group": ("group",), "mount": ("mounts", "mount_map", "mount_options"),
}


def make_create_from_template_cmd(name: str = "create-from-template",
                                  help_text: str | None = None) -> click.Command:
    @click.command(name=name)
    @click.argument("template_id", metavar="TEMPLATE_ID")
    @click.option("-o", "--owner", "--owner-access-key", "owner", metavar="ACCESS_KEY",
                  help="Set the owner of the target session explicitly.")
    @click.option("-i", "--image", metavar="IMAGE", default=None,
                  help="Run this image instead of the template's.")
    @click.option("-c", "--startup-command", metavar="COMMAND", default=None,
                  help="Set the command to execute for batch-type sessions.")
    @click.option("--enqueue-only", is_flag=True,
                  help="Enqueue the session and return immediately without waiting for its startup.")
    @click.option("--depends", metavar="SESSION_ID", type=str, multiple=True,
                  help="Set the list of session ID or names that the newly created session depends on. "
                  "The session will get scheduled after all of them successfully finish.")
    @click.option("--no-mount", is_flag=True,
                  help="Do not mount the template's virtual folders (only those of -m, if given).")
    @click.option("--no-env", is_flag=True, help="Do not set the environment variables of the template.")
    @click.option("--no-resource", is_flag=True,
                  help="Do not request the template's resources (the defaults, or -r, apply).")
    @start_options
    def create_from_template(
        template_id: str, owner: str | None, image: str | None, startup_command: str | None,
        enqueue_only: bool, depends: tuple[str, ...], no_mount: bool, no_env: bool, no_resource: bool,
        **opts: Any,
    ) -> None:
        """
        Start a compute session from a task template (see "backend.ai session-template"). The
        options given here override the template's values; those not given keep them.

        \b
        TEMPLATE_ID: the template's ID.
        """
        from click.core import ParameterSource

        ctx = click.get_current_context()
        cli_ctx = get_cli_context()
        parsed = build_create_kwargs(opts)
        overrides: dict[str, Any] = {}
        for param, keys in _TEMPLATE_OVERRIDES.items():
            if ctx.get_parameter_source(param) not in (ParameterSource.DEFAULT, None):
                overrides.update({k: parsed[k] for k in keys})
        if no_mount and "mounts" not in overrides:
            # as the official client: an empty list with an empty map (a list alone keeps the template's)
            overrides.update(mounts=[], mount_map={})
        if no_env and "environ" not in overrides:
            overrides["environ"] = {}
        if no_resource:
            overrides.setdefault("resources", {})
            overrides.setdefault("resource_opts", {})
        if opts.get("preopen") is not None:
            overrides["preopen_ports"] = opts["preopen"]
        domain, group = overrides.pop("domain", None), overrides.pop("group", None)
        no_reuse = overrides.pop("no_reuse", None)
        session_name = parsed["name"]
        if session_name is None:
            from ..helpers import generate_session_name

            session_name = generate_session_name()
        from .admin.base import call

        async def _go(api: Any) -> Any:
            from ..session_templates import create_session

            with spinner(f"Starting the session {session_name}...", enabled=not cli_ctx.json_mode):
                return await create_session(
                    api, template_id, name=session_name, domain=domain, group=group, no_reuse=no_reuse,
                    dependencies=list(depends), image=image, startup_command=startup_command,
                    enqueue_only=True if enqueue_only else None, owner_access_key=owner, **overrides)

        created = call(_go, action="session create-from-template")
        _report_created(created, json_mode=cli_ctx.json_mode)

    return _alias_doc(create_from_template, help_text)


# ---------------------------------------------------------------------------------------------
# the group


def make_session_group(name: str = "session", help_text: str | None = None) -> click.Group:
    group = AliasGroup(
        name=name,
        help="Set of compute session operations",
        aliases={"start": "create", "ps": "list", "rm": "destroy", "kill": "destroy"},
    )
    factories: dict[str, Callable[..., click.Command]] = {
        "create": make_create_cmd,
        "list": make_list_cmd,
        "info": make_info_cmd,
        "logs": make_logs_cmd,
        "destroy": make_destroy_cmd,
        "restart": make_restart_cmd,
        "rename": make_rename_cmd,
        "status-history": make_status_history_cmd,
        "convert-to-image": make_convert_to_image_cmd,
        "commit": make_commit_cmd,
        "create-from-template": make_create_from_template_cmd,
    }
    for cname, factory in factories.items():
        group.add_command(factory(name=cname), cname)
    from .session_events import make_events_cmd

    group.add_command(make_events_cmd(), "events")
    from .session_terminal import make_terminal_cmd

    group.add_command(make_terminal_cmd(), "terminal")
    from .session_files import make_download_cmd, make_ls_cmd, make_upload_cmd

    # `session ls` lists files as the official CLI's, and sessions when given no session.
    group.add_command(make_ls_cmd(make_list_cmd(name="list")), "ls")
    group.add_command(make_upload_cmd(), "upload")
    group.add_command(make_download_cmd(), "download")
    return group


__all__ = (
    "make_session_group",
    "make_create_cmd",
    "make_list_cmd",
    "make_info_cmd",
    "make_logs_cmd",
    "make_destroy_cmd",
    "make_restart_cmd",
    "make_rename_cmd",
    "make_status_history_cmd",
    "make_convert_to_image_cmd",
    "make_commit_cmd",
    "make_create_from_template_cmd",
    "format_stats",
)
