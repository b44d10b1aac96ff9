"""``backend.ai session events NAME`` (and the top-level alias ``events``): a session's lifecycle
events as they happen, printed as the official CLI prints them (the event name, then its data as
one line of JSON), until the session has ended."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .common import ExitCode, get_cli_context, report_error, run_async

__all__ = ["make_events_cmd"]

#: After these the session (or, for scope=kernel, its kernel) will send no more.
_LAST_EVENTS = {"*": ("session_terminated", "session_cancelled"),
                "session": ("session_terminated", "session_cancelled"),
                "kernel": ("kernel_terminated", "kernel_cancelled")}
_ENDED = ("TERMINATED", "CANCELLED")


def make_events_cmd(name: str = "events", help_text: str | None = None) -> click.Command:
    @click.command(name=name)
    @click.argument("session_ref", metavar="SESSION_ID_OR_NAME")
    @click.option("-o", "--owner", "--owner-access-key", "owner", metavar="ACCESS_KEY",
                  help="Specify the owner of the target session explicitly.")
    @click.option("--scope", type=click.Choice(["*", "session", "kernel"]), default="*",
                  help="Filter the events by kernel-specific ones or session-specific ones.")
    def events(session_ref: str, owner: str | None, scope: str) -> None:
        """
        Monitor the lifecycle events of a compute session until it ends.

        SESSION_ID_OR_NAME: session ID or its alias given when creating the session.
        """
        cli_ctx = get_cli_context()
        json_mode = cli_ctx.json_mode
        try:
            cfg = cli_ctx.get_config()
        except Exception as e:  # malformed configuration
            report_error(e, json_mode=json_mode)
            sys.exit(ExitCode.FAILURE)

        async def _go() -> None:
            import asyncio

            from ..events import session_events
            from ..exceptions import BackendAPIError, BackendClientError
            from ..request import APISession
            from ..session import get_info

            async with APISession(cfg) as api:
                opened = asyncio.Event()
                stream = session_events(api, session_ref, owner_access_key=owner, scope=scope, opened=opened)
                first = asyncio.ensure_future(anext(stream, None))
                try:
                    # Subscribed: a session that ends from now on is seen ending. One that has
                    # ended already sends nothing more, so look at it first.
                    waiter = asyncio.ensure_future(opened.wait())
                    await asyncio.wait({first, waiter}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    if not first.done():
                        try:
                            info = await get_info(api, session_ref, owner_access_key=owner)
                        except BackendAPIError as e:
                            if e.status != 404:
                                raise
                            if not first.done():
                                raise BackendClientError(
                                    f"No live session {session_ref!r} (it has ended, or never existed).") from e
                            info = {}
                        if str(info.get("status")) in _ENDED and not first.done():
                            return
                    event = await first
                    while event is not None:
                        _print(event.name, event.data, json_mode)
                        if event.name in _LAST_EVENTS[scope]:
                            return
                        event = await anext(stream, None)
                finally:
                    first.cancel()
                    await asyncio.gather(first, return_exceptions=True)
                    await stream.aclose()

        run_async(_go, json_mode=json_mode)

    if help_text and help_text.startswith("Alias"):
        events.short_help = help_text
        events.help = f"{help_text}.\n\n{events.help or ''}"
    return events


def _print(name: str, data: Any, json_mode: bool) -> None:
    if json_mode:
        click.echo(json.dumps({"event": name, "data": data}, ensure_ascii=False))
    else:
        click.echo(click.style(name, fg="cyan", bold=True) + " " + json.dumps(data, indent=None))
    sys.stdout.flush()
