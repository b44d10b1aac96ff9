"""``bai-storage-proxy start [--config PATH]``."""

from __future__ import annotations

import click

from bai.common import daemon

from . import config as config_mod
from .server import StartUpError, serve


@click.group()
def main() -> None:
    """bai storage proxy: virtual folders, uploads and downloads."""


@main.command()
@daemon.config_option("storage-proxy.toml")
def start(config_path: str | None) -> None:
    """Serve the manager-facing and client-facing APIs until SIGINT/SIGTERM."""
    daemon.run("bai-storage-proxy", config_path, config_mod.load, serve, refusals=(StartUpError,))
