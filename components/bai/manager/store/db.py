"""Engine creation; every query module takes an AsyncConnection from here."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bai.manager.config import DBConfig


def create_engine(cfg: DBConfig) -> AsyncEngine:
    return create_async_engine(
        cfg.dsn,
        pool_size=cfg.pool_size,
        max_overflow=cfg.max_overflow,
        pool_pre_ping=False,
        json_serializer=_dumps,
    )


def _dumps(value: object) -> str:
    import json

    return json.dumps(value, default=str)
