"""``bai-agent start [--config PATH]``."""

from __future__ import annotations

import asyncio
import logging
import sys

import click

from bai.common.config import ConfigError

from . import config as config_mod
from .server import serve


@click.group()
def main() -> None:
    """bai agent: runs kernel containers for the manager."""


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="agent.toml (default: $BACKEND_CONFIG_FILE, ./agent.toml, /etc/backend.ai/agent.toml)")
def start(config_path: str | None) -> None:
    """Run the agent until SIGINT/SIGTERM."""
    try:
        cfg = config_mod.load(config_path)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    logging.basicConfig(
        level=cfg.logging.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # aiohttp/aiodocker chatter is not useful at INFO.
    logging.getLogger("aiohttp").setLevel(max(logging.WARNING, logging.getLogger().level))
    asyncio.run(serve(cfg))
