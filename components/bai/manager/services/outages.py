"""Whether an error means a backing service (PostgreSQL, Redis, etcd) is unreachable right now, so the
api can answer 503 without knowing the drivers' exception classes."""

from __future__ import annotations

from bai.manager.store.db import is_transient

__all__ = ["is_transient"]
