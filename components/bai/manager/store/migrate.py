"""Schema migrations through Alembic, configured in code (no alembic.ini to ship)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(dsn: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", dsn.replace("%", "%%"))
    return cfg


def upgrade(dsn: str, revision: str = "heads") -> None:
    # "heads": revisions written side by side (one per feature, each revising the same parent)
    # all apply; a merge revision joins them later.
    command.upgrade(alembic_config(dsn), revision)


def current(dsn: str) -> None:
    command.current(alembic_config(dsn), verbose=True)
