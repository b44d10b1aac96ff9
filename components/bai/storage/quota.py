"""Quota scopes on a plain filesystem: the limit is a small JSON file in the scope's directory;
the usage is computed by walking the scope (bounded) and reused briefly, plus what uploads have
written since, so a busy upload does not walk the scope on every chunk."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

#: The scope's limit, next to the two-hex-digit folder fan-out directories.
LIMIT_FILE = ".bai-quota-scope.json"
#: A walk visits at most this many entries; past it the usage is as counted so far.
MAX_WALK_ENTRIES = 5_000_000


@dataclass(frozen=True)
class Usage:
    file_count: int
    used_bytes: int


def walk_usage(root: Path) -> Usage:
    """Files and their apparent bytes under ``root`` (symlinks not followed, not counted as bytes)."""
    files = size = seen = 0
    stack = [str(root)]
    while stack and seen < MAX_WALK_ENTRIES:
        top = stack.pop()
        try:
            with os.scandir(top) as entries:
                for entry in entries:
                    seen += 1
                    if top == str(root) and entry.name == LIMIT_FILE:
                        continue  # the scope's own bookkeeping
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            files += 1
                            size += entry.stat(follow_symlinks=False).st_size
                        else:
                            files += 1
                    except OSError:
                        continue  # removed while walking
        except OSError:
            continue
    return Usage(files, size)


def read_limit(scope_dir: Path) -> int | None:
    try:
        data = json.loads((scope_dir / LIMIT_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    limit = data.get("limit_bytes") if isinstance(data, dict) else None
    return limit if isinstance(limit, int) and limit > 0 else None


def write_limit(scope_dir: Path, limit_bytes: int | None) -> None:
    """Atomically: a crash leaves the old limit or the new one, never half a file."""
    target = scope_dir / LIMIT_FILE
    if not limit_bytes or limit_bytes <= 0:
        target.unlink(missing_ok=True)
        return
    tmp = scope_dir / f"{LIMIT_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"limit_bytes": int(limit_bytes)}))
    os.replace(tmp, target)


@dataclass
class _Cached:
    used_bytes: int
    at: float
    written_since: int = 0


class UsageCache:
    """Per scope directory: the last walk's bytes and what uploads wrote after it."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._cache: dict[Path, _Cached] = {}
        self._locks: dict[Path, asyncio.Lock] = {}

    async def used_bytes(self, scope_dir: Path) -> int:
        cached = self._cache.get(scope_dir)
        if cached is not None and time.monotonic() - cached.at <= self._ttl:
            return cached.used_bytes + cached.written_since
        lock = self._locks.setdefault(scope_dir, asyncio.Lock())
        async with lock:  # one walk per scope at a time; the others reuse its result
            cached = self._cache.get(scope_dir)
            if cached is None or time.monotonic() - cached.at > self._ttl:
                usage = await asyncio.to_thread(walk_usage, scope_dir)
                cached = self._cache[scope_dir] = _Cached(usage.used_bytes, time.monotonic())
            return cached.used_bytes + cached.written_since

    def wrote(self, scope_dir: Path, nbytes: int) -> None:
        if (cached := self._cache.get(scope_dir)) is not None:
            cached.written_since += nbytes

    def forget(self, scope_dir: Path) -> None:
        self._cache.pop(scope_dir, None)
