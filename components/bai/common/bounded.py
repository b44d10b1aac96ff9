"""Reading an HTTP answer whole, but never more than a limit: ``StreamReader.read(n)`` returns
what has arrived so far (up to n), not n bytes, so one call can cut a longer answer short."""

from __future__ import annotations

import aiohttp


async def read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body of ``resp`` up to ``limit + 1`` bytes: a result longer than ``limit`` means the
    answer was too large (the caller refuses it), never that it was silently truncated."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await resp.content.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
