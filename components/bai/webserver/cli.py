"""``bai-webserver start [--config PATH]``."""

from __future__ import annotations

import click

from bai.common import daemon

from . import config as config_mod
from .server import StartUpError, serve


@click.group()
def main() -> None:
    """bai webserver: browser logins, the signed API proxy and the web UI."""


@main.command()
@daemon.config_option("webserver.toml")
def start(config_path: str | None) -> None:
    """Serve until SIGINT/SIGTERM."""
    daemon.run("bai-webserver", config_path, config_mod.load, serve, refusals=(StartUpError,), use_uvloop=True)
