"""Loading a related field for a whole page at once (one query per page, not per item)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class PageBatch(Generic[K]):
    """Calls ``load(keys)`` (a mapping key -> value) on the first ``get`` and serves every item
    of the page from that one answer."""

    def __init__(self, load: Callable[[Sequence[K]], Awaitable[dict[K, Any]]], keys: Sequence[K],
                 default: Any = None) -> None:
        self._load = load
        self._keys = list(dict.fromkeys(keys))
        self._default = default
        self._lock = asyncio.Lock()
        self._found: dict[K, Any] | None = None

    async def get(self, key: K) -> Any:
        async with self._lock:
            if self._found is None:
                self._found = await self._load(self._keys)
        return self._found.get(key, self._default)
