"""A running session's files (upload, download, list), completion and interrupt.

Everything goes to the session's main kernel through its agent, and there through the kernel
runner, which does the file I/O inside the container as the kernel's user, confined to
``/home/work`` and following no symlink (:mod:`bai.kernel.files`). The manager checks paths too,
so that an obviously bad one is refused before any byte moves: relative to ``/home/work`` or
absolute under it, no ``..``, no NUL or other control characters.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from bai.common.agent_rpc import AgentError
from bai.manager import errors
from bai.manager.store.keypairs import Requester

from ..context import ManagerContext
from . import execution
from .lookup import resolve_owner

__all__ = ["MAX_DOWNLOAD_FILES", "MAX_UPLOAD_FILES", "SessionFiles", "TransferFailed", "check_path"]

WORK_DIR = "/home/work"
#: As the original: files of one upload request, paths of one download request.
MAX_UPLOAD_FILES = 20
MAX_DOWNLOAD_FILES = 5
#: The largest file one download sends.
MAX_DOWNLOAD_SIZE = 2**36


class TransferFailed(Exception):
    """A download broke off after its first bytes went out: only aborting tells the client."""


def check_path(path: str) -> str:
    """``path`` as the runner is sent it; refused (400) when it cannot be under /home/work."""
    if not path or len(path) > 4096 or any(ord(c) < 32 or c == "\x7f" for c in path):
        raise errors.InvalidAPIParameters(f"Invalid path: {path[:200]!r}")
    if path.startswith("/") and path != WORK_DIR and not path.startswith(WORK_DIR + "/"):
        raise errors.InvalidAPIParameters(f"Only paths under {WORK_DIR} are allowed: {path[:200]!r}")
    if ".." in path.split("/"):
        raise errors.InvalidAPIParameters(f"'..' is not allowed in a path: {path[:200]!r}")
    return path


def _api_error(exc: AgentError) -> errors.ApiError:
    msg = exc.msg or exc.title
    if exc.status == 400:
        return errors.InvalidAPIParameters(msg)
    if exc.status == 404:
        return errors.ObjectNotFound(msg, title="No such file or directory.")
    if exc.status == 413:
        return errors.RequestTooLarge(msg)
    if exc.status == 429:
        return errors.RateLimitExceeded(msg, title="Too many file transfers in this session at once.")
    return errors.KernelExecutionFailed(msg, data={"agent-details": exc.to_json()})


class SessionFiles:
    def __init__(self, ctx: ManagerContext) -> None:
        self.ctx = ctx

    async def route(self, requester: Requester, ref: str, owner_access_key: str | None) -> Any:
        """Where the session runs its main kernel (404/403 as for its info, 400 when not running)."""
        owner = await resolve_owner(self.ctx, requester, owner_access_key)
        return await execution.route(self.ctx, owner, ref)

    async def interrupt(self, route: Any) -> None:
        try:
            await self.ctx.agents.get(route.agent_addr).interrupt_kernel(str(route.kernel_id))
        except AgentError as exc:
            raise _api_error(exc) from exc

    async def complete(self, route: Any, code: str, options: dict[str, Any]) -> dict[str, Any]:
        """The original's completion result: ``{"status": "finished", "completions": [...]}``."""
        try:
            found = await self.ctx.agents.get(route.agent_addr).get_completions(str(route.kernel_id), code, options)
        except AgentError as exc:
            raise _api_error(exc) from exc
        return {"status": "finished", "completions": found}

    async def list(self, route: Any, path: str) -> dict[str, Any]:
        """The original's shape: ``files`` is a JSON *string* of ``{"filename", "mode", "size",
        "ctime", "mtime", "atime"}`` objects; ``errors`` is empty; ``abspath`` the given path."""
        try:
            listing = await self.ctx.agents.get(route.agent_addr).list_files(str(route.kernel_id), check_path(path))
        except AgentError as exc:
            raise _api_error(exc) from exc
        return {"files": json.dumps(listing.get("files", [])), "errors": "", "abspath": path}

    async def upload(self, route: Any, path: str, body: AsyncIterator[bytes]) -> int:
        try:
            return await self.ctx.agents.get(route.agent_addr).upload_file(str(route.kernel_id), check_path(path), body)
        except AgentError as exc:
            raise _api_error(exc) from exc

    @contextlib.asynccontextmanager
    async def download(self, route: Any, path: str, *, archive: bool = False
                       ) -> AsyncIterator[tuple[int, AsyncIterator[bytes]]]:
        """``(size, chunks)`` of the file (``archive``: a tar of the file or directory, as the
        original's download answers); errors before the first byte are API errors, later ones
        TransferFailed."""
        agent = self.ctx.agents.get(route.agent_addr)
        try:
            async with agent.download_file(str(route.kernel_id), check_path(path), MAX_DOWNLOAD_SIZE,
                                           archive=archive) as (size, chunks):

                async def guarded() -> AsyncIterator[bytes]:
                    try:
                        async for chunk in chunks:
                            yield chunk
                    except AgentError as exc:
                        raise TransferFailed(exc.msg) from exc

                yield size, guarded()
        except AgentError as exc:
            raise _api_error(exc) from exc
