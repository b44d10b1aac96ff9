"""What every daemon's ``start`` command does before and around serving: read its TOML config
(``--config``, else ``$BACKEND_CONFIG_FILE``, ``./<name>.toml``, ``/etc/backend.ai/<name>.toml``),
set up logging at the config's level, and run the server's coroutine until it returns.

Exit codes: 2 for a config that cannot be read or is invalid (the message names the file and the
key), 1 for a start-up the daemon refused (its port taken, a store unreachable...).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

import click
import uvloop

from bai.common.config import ConfigError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _LoggingSection(Protocol):
    @property
    def level(self) -> str: ...


class _Config(Protocol):
    @property
    def logging(self) -> _LoggingSection: ...


C = TypeVar("C", bound=_Config)
F = TypeVar("F", bound=Callable[..., Any])


def config_option(file_name: str) -> Callable[[F], F]:
    """The ``--config PATH`` option (passed as ``config_path``)."""
    return click.option(
        "--config", "config_path", type=click.Path(dir_okay=False), default=None,
        help=f"{file_name} (default: $BACKEND_CONFIG_FILE, ./{file_name}, /etc/backend.ai/{file_name})")


def run(program: str, config_path: str | None, load: Callable[[str | None], C],
        serve: Callable[[C], Coroutine[Any, Any, None]], *, refusals: tuple[type[Exception], ...] = (),
        use_uvloop: bool = False) -> None:
    """Load the config, log at its level and serve; ``refusals`` are the start-up errors that
    end the process with their message and exit code 1 (no traceback: they say what to fix)."""
    try:
        cfg = load(config_path)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    logging.basicConfig(level=cfg.logging.level.upper(), format=LOG_FORMAT)
    # aiohttp's (and aiodocker's) chatter is not useful at INFO.
    logging.getLogger("aiohttp").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        if use_uvloop:
            uvloop.run(serve(cfg))
        else:
            asyncio.run(serve(cfg))
    except refusals as exc:
        click.echo(f"{program}: {exc}", err=True)
        sys.exit(1)
