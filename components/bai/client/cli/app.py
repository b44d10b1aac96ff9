"""``backend.ai app SESSION APP -b [HOST:]PORT`` and ``backend.ai apps SESSION``, as the official CLI.

``app`` listens on a local address and tunnels each TCP connection it accepts through its own
websocket, ``/stream/session/{ref}/tcpproxy?app=APP`` (raw bytes in binary frames), until
interrupted; ``apps`` lists the session's service ports and what they accept.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import sys
from collections.abc import Sequence
from typing import Any

import click

from .common import (
    ExitCode,
    get_cli_context,
    print_fail,
    print_info,
    print_json,
    print_warn,
    report_error,
    run_async,
)

CHUNK = 64 * 1024


def parse_arguments(lines: Sequence[str]) -> dict[str, Any]:
    """``--arg "--option value"`` lines as the official client reads them: an option alone maps to
    None, with one value to it, with more to their list."""
    out: dict[str, Any] = {}
    for line in lines:
        tokens: list[str] = []
        for token in shlex.shlex(line, punctuation_chars=True):
            key, sep, value = token.partition("=")
            if not sep:
                tokens.append(shlex.split(token)[0])
            else:
                tokens.extend((key, shlex.split(value)[0]))
        if not tokens:
            continue
        out[tokens[0]] = None if len(tokens) == 1 else tokens[1] if len(tokens) == 2 else tokens[1:]
    return out


def parse_envs(lines: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        key, _, value = line.strip().partition("=")
        out[key] = value
    return out


def parse_bind(bind: str) -> tuple[str, int]:
    host, sep, port = bind.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"not [HOST:]PORT: {bind!r}", param_hint="-b/--bind")
    return host or "127.0.0.1", int(port)


async def _tunnel(api: Any, ref: str, params: dict[str, str], reader: Any, writer: Any) -> None:
    """One accepted connection: one websocket, bytes both ways until either side closes."""
    import asyncio

    import aiohttp

    from ..exceptions import BackendError

    try:
        ws = await api.ws_connect(f"/stream/session/{ref}/tcpproxy", params=params)
    except BackendError as e:
        writer.write(f"HTTP/1.1 503 Service Unavailable\r\nConnection: Closed\r\n\r\nWebSocket reply: {e}".encode())
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()
        return

    async def down() -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                writer.write(msg.data)
                await writer.drain()
            elif msg.type == aiohttp.WSMsgType.ERROR:
                break

    async def up() -> None:
        while chunk := await reader.read(CHUNK):
            await ws.send_bytes(chunk)

    tasks = [asyncio.ensure_future(down()), asyncio.ensure_future(up())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ws.close()
        writer.close()


def _config() -> Any:
    cli_ctx = get_cli_context()
    try:
        return cli_ctx.get_config()
    except Exception as e:  # BackendClientError for a malformed configuration
        report_error(e, json_mode=cli_ctx.json_mode)
        sys.exit(ExitCode.FAILURE)


def make_app_cmd(name: str = "app", help_text: str | None = None) -> click.Command:
    @click.command(name=name)
    @click.argument("session_ref", metavar="NAME")
    @click.argument("app")
    @click.option("-b", "--bind", default="127.0.0.1:8080", show_default=True, metavar="[HOST:]PORT",
                  help="The IP/host address and the port number to bind this proxy.")
    @click.option("--arg", "args", multiple=True, metavar='"--option <value>"',
                  help="Add additional argument when starting service.")
    @click.option("-e", "--env", "envs", multiple=True, metavar='"ENVNAME=envvalue"',
                  help="Add additional environment variable when starting service.")
    def app_cmd(session_ref: str, app: str, bind: str, args: tuple[str, ...], envs: tuple[str, ...]) -> None:
        """
        Run a local proxy to a service provided by a compute session: each connection to
        [HOST:]PORT is tunnelled to the service APP of the session NAME.
        """
        cli_ctx = get_cli_context()
        cfg = _config()
        host, port = parse_bind(bind)
        params = {"app": app}
        if arguments := parse_arguments(args):
            params["arguments"] = json.dumps(arguments)
        if environ := parse_envs(envs):
            params["envs"] = json.dumps(environ)

        async def _serve() -> int:
            import asyncio

            from ..request import APISession

            async with APISession(cfg) as api:
                listed = await api.request_json("GET", f"/stream/session/{session_ref}/apps")
                found = next((a for a in listed if isinstance(a, dict) and a.get("name") == app), None)
                if found is None:
                    print_fail(f'The app "{app}" is not supported by the session.')
                    return ExitCode.FAILURE
                tunnels: set[asyncio.Task[None]] = set()

                async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                    task = asyncio.current_task()
                    if task is not None:
                        tunnels.add(task)
                    try:
                        await _tunnel(api, session_ref, params, reader, writer)
                    except (OSError, asyncio.CancelledError):
                        writer.close()
                    finally:
                        if task is not None:
                            tunnels.discard(task)

                try:
                    server = await asyncio.start_server(accept, host, port)
                except OSError as e:
                    print_fail(f"Cannot listen on {host}:{port}: {e.strerror}")
                    return ExitCode.FAILURE
                protocol = "http" if found.get("protocol") == "http" else "tcp"
                url = str(found.get("url_template") or "{protocol}://{host}:{port}").format(
                    protocol=protocol, host=host, port=port)
                print_info(f'A local proxy to the application "{app}" provided by the session '
                           f'"{session_ref}" is available at:\n{url}')
                if host == "0.0.0.0":
                    print_warn('NOTE: Replace "0.0.0.0" with the actual hostname you use to connect '
                               "with the CLI app proxy.")
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                try:
                    await stop.wait()
                finally:
                    print_info("Shutting down....")
                    server.close()
                    for task in list(tunnels):
                        task.cancel()
                    await asyncio.gather(*tunnels, return_exceptions=True)
                    await server.wait_closed()
                    print_info(f'The local proxy to "{app}" has terminated.')
                return ExitCode.OK

        sys.exit(run_async(_serve, json_mode=cli_ctx.json_mode))

    if help_text:
        app_cmd.short_help = help_text
    return app_cmd


def make_apps_cmd(name: str = "apps", help_text: str | None = None) -> click.Command:
    @click.command(name=name)
    @click.argument("session_ref", metavar="SESSION_ID")
    @click.argument("app_names", metavar="APP", nargs=-1)
    @click.option("-l", "--list-names", is_flag=True, help="Just print all available services.")
    def apps_cmd(session_ref: str, app_names: tuple[str, ...], list_names: bool) -> None:
        """
        List the services (apps) of a session, with the arguments and environment variables
        each accepts when it is started.
        """
        cli_ctx = get_cli_context()
        cfg = _config()

        async def _list() -> list[dict[str, Any]]:
            from ..request import APISession

            async with APISession(cfg) as api:
                found = await api.request_json("GET", f"/stream/session/{session_ref}/apps")
            return [a for a in found if isinstance(a, dict) and (not app_names or a.get("name") in app_names)]

        services = run_async(_list, json_mode=cli_ctx.json_mode)
        if cli_ctx.json_mode:
            print_json(services)
            return
        if list_names:
            print_info("This session provides the following app services: "
                       + ", ".join(str(s.get("name")) for s in services))
            return
        for service in services:
            if "allowed_arguments" in service or "allowed_envs" in service:
                print_info(f"Information for service {service['name']}:")
                if "allowed_arguments" in service:
                    click.echo(f"\tAvailable arguments: {service['allowed_arguments']}")
                if "allowed_envs" in service:
                    click.echo(f"\tAvailable environment variables: {service['allowed_envs']}")
            else:
                print_info(f"Service {service['name']} does not have customizable arguments.")

    if help_text:
        apps_cmd.short_help = help_text
    return apps_cmd
