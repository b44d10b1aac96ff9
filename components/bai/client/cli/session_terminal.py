"""``backend.ai session terminal NAME``: an interactive shell in a session, over the terminal
websocket (``/stream/session/{ref}/pty``). The local terminal is put in raw mode (keys, Ctrl-C
included, go to the remote shell, as with ssh) and its size follows the window; the command ends
when the remote shell exits."""

from __future__ import annotations

import sys
from typing import Any

import click

from .common import ExitCode, get_cli_context, report_error, run_async

__all__ = ["make_terminal_cmd"]

_READ_CHUNK = 16 * 1024


def make_terminal_cmd(name: str = "terminal", help_text: str | None = None) -> click.Command:
    @click.command(name=name)
    @click.argument("session_ref", metavar="SESSION_ID_OR_NAME")
    @click.option("-o", "--owner", "--owner-access-key", "owner", metavar="ACCESS_KEY",
                  help="Specify the owner of the target session explicitly.")
    def terminal(session_ref: str, owner: str | None) -> None:
        """
        Open an interactive shell in a running session (exit the shell to leave).
        """
        cli_ctx = get_cli_context()
        try:
            cfg = cli_ctx.get_config()
        except Exception as e:  # malformed configuration
            report_error(e)
            sys.exit(ExitCode.FAILURE)

        async def _go() -> int:
            from ..request import APISession

            async with APISession(cfg) as api:
                ws = await api.ws_connect(f"/stream/session/{session_ref}/pty",
                                          {"owner_access_key": owner} if owner else None)
                async with ws:
                    return await _interact(ws)

        sys.exit(run_async(_go))

    return terminal


async def _interact(ws: Any) -> int:
    import asyncio
    import base64
    import json
    import os
    import signal

    import aiohttp

    loop = asyncio.get_running_loop()
    stdin_fd, out = sys.stdin.fileno(), sys.stdout.buffer
    interactive = os.isatty(stdin_fd)
    saved = None
    pending: set[asyncio.Task[None]] = set()

    def send(frame: dict[str, Any]) -> None:
        if not ws.closed:
            task = asyncio.ensure_future(ws.send_str(json.dumps(frame)))
            pending.add(task)
            task.add_done_callback(pending.discard)

    def on_stdin() -> None:
        try:
            data = os.read(stdin_fd, _READ_CHUNK)
        except OSError:
            data = b""
        if not data:  # end of input (piped): nothing more to type
            loop.remove_reader(stdin_fd)
            return
        send({"type": "stdin", "chars": base64.b64encode(data).decode("ascii")})

    def on_resize() -> None:
        try:
            size = os.get_terminal_size(sys.stdout.fileno())
        except OSError:
            return
        send({"type": "resize", "rows": size.lines, "cols": size.columns})

    if interactive:
        import termios
        import tty

        saved = termios.tcgetattr(stdin_fd)
        tty.setraw(stdin_fd, termios.TCSADRAIN)  # not TCSAFLUSH: keys typed ahead are kept
        loop.add_signal_handler(signal.SIGWINCH, on_resize)
        on_resize()
    loop.add_reader(stdin_fd, on_stdin)
    error = got_output = False
    try:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            if frame.get("type") == "out":
                out.write(base64.b64decode(frame.get("data", "")))
                out.flush()
                got_output = True
            elif frame.get("type") == "error":
                error = True
                sys.stderr.write(f"\r\nbackend.ai: {frame.get('data')}\r\n")
                sys.stderr.flush()
    finally:
        loop.remove_reader(stdin_fd)
        for task in pending:
            task.cancel()
        if saved is not None:
            import termios

            loop.remove_signal_handler(signal.SIGWINCH)
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
    # a terminal that could not even open (e.g. too many terminals) is a failure
    return int(ExitCode.FAILURE) if error and not got_output else 0
