"""Shared CLI plumbing: lazy command groups, context, output helpers, error reporting.

Only stdlib + click at import time.
"""

from __future__ import annotations

import enum
import importlib
import json
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from ..config import APIConfig

T = TypeVar("T")


class ExitCode(enum.IntEnum):
    OK = 0
    FAILURE = 1
    INVALID_USAGE = 2
    OPERATION_TIMEOUT = 3
    INVALID_ARGUMENT = 4


# ---------------------------------------------------------------------------------------------
# groups


class AliasGroup(click.Group):
    """A group whose commands may have aliases (``session rm`` = ``session destroy``)."""

    def __init__(self, *args: Any, aliases: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aliases: dict[str, str] = dict(aliases or {})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.aliases.get(cmd_name, cmd_name))

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        _, cmd, rest = super().resolve_command(ctx, args)
        return (cmd.name if cmd is not None else None), cmd, rest

    def _aliases_of(self, name: str) -> list[str]:
        return [a for a, target in self.aliases.items() if target == name]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is None or cmd.hidden:
                continue
            aliases = self._aliases_of(name)
            label = f"{name} ({', '.join(aliases)})" if aliases else name
            rows.append((label, cmd.get_short_help_str(limit=formatter.width - 6 - len(label))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class LazyGroup(click.Group):
    """A group that imports each subcommand's module only when that subcommand is used."""

    def __init__(
        self, *args: Any, lazy_commands: Mapping[str, tuple[str, str, str]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands: dict[str, tuple[str, str, str]] = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            return cmd
        spec = self.lazy_commands.get(cmd_name)
        if spec is None:
            return None
        module_name, factory_name, short_help = spec
        factory = getattr(importlib.import_module(module_name), factory_name)
        cmd = factory(name=cmd_name, help_text=short_help)
        self.add_command(cmd, cmd_name)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Use the static short help of lazy commands so that --help imports nothing.
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                cmd = self.commands[name]
                if cmd.hidden:
                    continue
                rows.append((name, cmd.get_short_help_str(limit=formatter.width - 6 - len(name))))
            else:
                rows.append((name, self.lazy_commands[name][2]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


# ---------------------------------------------------------------------------------------------
# context


@dataclass
class CLIContext:
    output: str = "console"
    skip_sslcert_validation: bool = False
    _config: APIConfig | None = field(default=None, repr=False)

    @property
    def json_mode(self) -> bool:
        return self.output == "json"

    def get_config(self) -> APIConfig:
        if self._config is None:
            from ..config import APIConfig

            self._config = APIConfig.from_env(
                skip_sslcert_validation=self.skip_sslcert_validation or None
            )
            preload_aiohttp(self._config)
        return self._config


def preload_aiohttp(config: APIConfig) -> None:
    """Import aiohttp for the SDK, faster when no configured endpoint uses TLS.

    At import time aiohttp builds its default SSL contexts, and loading the system CA bundle
    (``SSLContext.set_default_verify_paths``) costs ~0.1 s of every CLI run. When every
    endpoint is plain ``http://`` those contexts are never used, so the CA loading is skipped
    for the duration of the import (and restored right after). With any ``https://`` endpoint
    aiohttp is imported normally.
    """
    if "aiohttp" in sys.modules:
        return
    if not config.endpoints or any(not ep.lower().startswith("http://") for ep in config.endpoints):
        return
    import ssl

    cls = ssl.SSLContext
    own = cls.__dict__.get("set_default_verify_paths")

    def _skip(self: ssl.SSLContext) -> None:
        return None

    cls.set_default_verify_paths = _skip  # type: ignore[method-assign]
    try:
        import aiohttp  # noqa: F401
    finally:
        if own is not None:
            cls.set_default_verify_paths = own  # type: ignore[method-assign]
        else:
            del cls.set_default_verify_paths


def get_cli_context() -> CLIContext:
    ctx = click.get_current_context()
    obj = ctx.find_object(CLIContext)
    if obj is None:
        obj = CLIContext()
        ctx.obj = obj
    return obj


# ---------------------------------------------------------------------------------------------
# printing (status messages go to stderr; stdout carries only results)

_INDICATORS = {
    "info": ("\u2219", "bright_cyan"),
    "wait": ("\u22ef", "bright_yellow"),
    "done": ("\u2713", "bright_green"),
    "fail": ("\u2717", "bright_red"),
    "warn": ("\u2219", "yellow"),
}


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def print_status(kind: str, msg: str) -> None:
    mark, color = _INDICATORS[kind]
    if _stderr_is_tty():
        mark = click.style(mark, fg=color)
    lines = msg.splitlines() or [""]
    text = "\n".join([f"{mark} {lines[0]}", *(f"  {ln}" for ln in lines[1:])])
    click.echo(text, err=True)


def print_info(msg: str) -> None:
    print_status("info", msg)


def print_wait(msg: str) -> None:
    print_status("wait", msg)


def print_done(msg: str) -> None:
    print_status("done", msg)


def print_warn(msg: str) -> None:
    print_status("warn", msg)


def print_fail(msg: str) -> None:
    print_status("fail", msg)


def print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


@contextmanager
def spinner(msg: str, *, enabled: bool = True) -> Iterator[None]:
    """A rich spinner on stderr while a long call runs (only when stderr is a TTY)."""
    if not enabled or not _stderr_is_tty():
        yield
        return
    from rich.console import Console

    console = Console(stderr=True)
    with console.status(msg, spinner="dots"):
        yield


# ---------------------------------------------------------------------------------------------
# errors


def format_error(exc: BaseException) -> str:
    from ..exceptions import BackendAPIError, BackendClientError

    if isinstance(exc, BackendAPIError):
        data = exc.data
        head = f"{exc.title} (HTTP {exc.status}{' ' + exc.reason if exc.reason else ''})"
        lines: list[str] = []
        slug = exc.type_slug
        msg = exc.msg
        if slug == "invalid-api-params":
            if msg:
                lines.append(f"\u279c {msg}")
            per_field = data.get("data")
            if isinstance(per_field, dict):
                lines.extend(f'- "{k}": {v}' for k, v in per_field.items())
            elif per_field:
                lines.append(f"- {per_field}")
        elif slug == "graphql-error":
            for item in data.get("data") or []:
                if isinstance(item, dict):
                    path = item.get("path")
                    suffix = f" (path: {'.'.join(map(str, path))})" if path else ""
                    lines.append(f"\u279c {item.get('message')}{suffix}")
                else:
                    lines.append(f"\u279c {item}")
        else:
            if msg:
                lines.append(f"\u279c {msg}")
            extra = data.get("data")
            if slug == "session-already-exists" and isinstance(extra, dict):
                if extra.get("existingSessionId"):
                    lines.append(f"- Existing session ID: {extra['existingSessionId']}")
            elif slug == "too-many-sessions-matched" and isinstance(extra, dict):
                for m in extra.get("matches") or []:
                    if isinstance(m, dict):
                        lines.append(f"- {m.get('id')} ({m.get('name')}, {m.get('status')})")
            elif extra:
                lines.append(f"\u279c Data: {extra!r}")
        agent = data.get("agent-details")
        if isinstance(agent, dict):
            lines.append("\u279c This is an agent-side error.")
            for key in ("exception", "title"):
                if agent.get(key):
                    lines.append(f"\u279c {agent[key]}")
        if data.get("content"):
            lines.append(str(data["content"]))
        return "\n".join([head, *lines])
    if isinstance(exc, BackendClientError):
        return str(exc)
    return f"{exc.__class__.__name__}: {exc}"


def error_json(exc: BaseException) -> dict[str, Any]:
    from ..exceptions import BackendAPIError

    if isinstance(exc, BackendAPIError):
        return {
            "error": exc.title,
            "api": {"status": exc.status, "reason": exc.reason, **exc.data},
        }
    return {"error": format_error(exc)}


def report_error(exc: BaseException, *, json_mode: bool = False) -> None:
    if json_mode:
        click.echo(json.dumps(error_json(exc), ensure_ascii=False, default=str), err=True)
    else:
        print_fail(format_error(exc))


def fail(msg: str, code: int = ExitCode.FAILURE, *, json_mode: bool = False) -> NoReturn:
    if json_mode:
        click.echo(json.dumps({"error": msg}, ensure_ascii=False), err=True)
    else:
        print_fail(msg)
    sys.exit(code)


def run_async(main: Callable[[], Awaitable[T]], *, json_mode: bool = False) -> T:
    """Run a coroutine; API/client errors are reported on stderr and exit with 1."""
    import asyncio

    from ..exceptions import BackendError

    try:
        return asyncio.run(main())  # type: ignore[arg-type]
    except BackendError as e:
        report_error(e, json_mode=json_mode)
        sys.exit(ExitCode.FAILURE)
    except KeyboardInterrupt:
        click.echo("Interrupted!", err=True)
        sys.exit(130)


# ---------------------------------------------------------------------------------------------
# parameters


def parse_kv_option(values: Sequence[str], param_hint: str, parser: Callable[[Sequence[str]], T]) -> T:
    try:
        return parser(values)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=param_hint) from None


def format_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False) if value else "-"
    text = str(value)
    return text if text else "-"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, plain: bool = False) -> str:
    """A plain-text table (tabulate's "simple" style; ``plain`` drops header and rule)."""
    cells = [[format_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers] if not plain else [0] * len(headers)
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    out: list[str] = []
    if not plain:
        out.append("  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip())
        out.append("  ".join("-" * w for w in widths))
    for row in cells:
        out.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
    return "\n".join(out)
