"""``bai-app-proxy start [--config PATH]``."""

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
    """bai app proxy: a session's web apps and TCP services, per user."""


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="app-proxy.toml (default: $BACKEND_CONFIG_FILE, ./app-proxy.toml, /etc/backend.ai/app-proxy.toml)")
def start(config_path: str | None) -> None:
    """Serve the coordinator API and the circuits until SIGINT/SIGTERM."""
    try:
        cfg = config_mod.load(config_path)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    logging.basicConfig(level=cfg.logging.level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        # uvloop: the circuits' per-request cost is mostly the event loop's and the transports' own
        # (measured by bench/app_proxy.py).
        uvloop.run(serve(cfg))
    except StartUpError as exc:
        click.echo(f"bai-app-proxy: {exc}", err=True)
        sys.exit(1)
