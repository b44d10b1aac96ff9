"""``bai-webserver start [--config PATH]``."""

from __future__ import annotations

import logging
import sys

import click
import uvloop

from bai.common.config import ConfigError

from . import config as config_mod
from .server import StartUpError, serve


@click.group()
def main() -> None:
    """bai webserver: browser logins, the signed API proxy and the web UI."""


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="webserver.toml (default: $BACKEND_CONFIG_FILE, ./webserver.toml, /etc/backend.ai/webserver.toml)")
def start(config_path: str | None) -> None:
    """Serve until SIGINT/SIGTERM."""
    try:
        cfg = config_mod.load(config_path)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    logging.basicConfig(level=cfg.logging.level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        uvloop.run(serve(cfg))
    except StartUpError as exc:
        click.echo(f"bai-webserver: {exc}", err=True)
        sys.exit(1)
