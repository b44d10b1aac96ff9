"""Terminals (``GET /stream/session/{ref}/pty``): where the session's main kernel runs, the
agent's terminal on it, and what a terminal's frames do besides (activity, kernel restart)."""

from __future__ import annotations

import uuid
from typing import Any

from bai.common.agent_rpc import AgentError
from bai.common.agent_terminal import AgentTerminal, TerminalError
from bai.manager import errors
from bai.manager.store.keypairs import Requester

from ..context import ManagerContext
from . import execution
from .activity import touch
from .lookup import resolve_owner

__all__ = ["TerminalError", "note_activity", "open_terminal", "restart_kernel", "route"]


async def route(ctx: ManagerContext, requester: Requester, ref: str, owner_access_key: str | None) -> Any:
    """The running main kernel of the requester's session ``ref`` (admins: of ``owner_access_key``'s,
    as for its info); 404, or 400 when it is not running."""
    owner = await resolve_owner(ctx, requester, owner_access_key)
    return await execution.route(ctx, owner, ref)


async def open_terminal(ctx: ManagerContext, found: Any, rows: int, cols: int) -> AgentTerminal:
    touch(ctx, found.session_id)
    return await ctx.agents.get(found.agent_addr).open_terminal(str(found.kernel_id), rows, cols)


async def restart_kernel(ctx: ManagerContext, found: Any) -> None:
    """The terminal's ``restart``: the kernel's fresh user-code process, as a session restart."""
    try:
        await ctx.agents.get(found.agent_addr).restart_kernel(str(found.kernel_id))
    except AgentError as exc:
        raise errors.KernelExecutionFailed(exc.msg or exc.title) from exc


def note_activity(ctx: ManagerContext, session_id: uuid.UUID) -> None:
    touch(ctx, session_id)
