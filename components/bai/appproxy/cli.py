"""``bai-app-proxy start [--config PATH]``."""

from __future__ import annotations

import click

from bai.common import daemon

from . import config as config_mod
from .server import StartUpError, serve


@click.group()
def main() -> None:
    """bai app proxy: a session's web apps and TCP services, per user."""


@main.command()
@daemon.config_option("app-proxy.toml")
def start(config_path: str | None) -> None:
    """Serve the coordinator API and the circuits until SIGINT/SIGTERM."""
    # uvloop: the circuits' per-request cost is mostly the event loop's and the transports' own
    # (measured by bench/app_proxy.py).
    daemon.run("bai-app-proxy", config_path, config_mod.load, serve, refusals=(StartUpError,), use_uvloop=True)
