"""``bai-agent start [--config PATH]``."""

from __future__ import annotations

import click

from bai.common import daemon

from . import config as config_mod
from .server import serve


@click.group()
def main() -> None:
    """bai agent: runs kernel containers for the manager."""


@main.command()
@daemon.config_option("agent.toml")
def start(config_path: str | None) -> None:
    """Run the agent until SIGINT/SIGTERM."""
    daemon.run("bai-agent", config_path, config_mod.load, serve)
