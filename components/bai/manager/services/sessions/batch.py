"""What ends or resets a session from the inside: a batch session's result, and a restart.

A batch session's startup command runs in its main kernel once the kernel is up (the agent
hands it to the runner). When it exits the agent sends ``session_success`` (exit code 0) or
``session_failure``; the session's and kernels' ``result`` is then SUCCESS or FAILURE, listeners
get the event with its ``exitCode``, and the session ends by itself (reason ``task-finished`` or
``task-failed``). A session destroyed first keeps result UNDEFINED: the result is recorded only
while the session is RUNNING, and once.

Restart (``PATCH /session/{ref}``) replaces each kernel's user-code process in the same
container: the session goes RESTARTING and back to RUNNING; variables are gone. One left
RESTARTING (its manager stopped half-way) is put back to RUNNING by the stuck-session sweep.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime
from typing import Any

from bai.common.agent_rpc import AgentError
from bai.common.types import KernelStatus, SessionStatus
from bai.manager import errors
from bai.manager.store import sessions as store
from bai.manager.store.keypairs import Requester

from ..context import ManagerContext
from .lookup import get_one, resolve_owner
from .payloads import broadcast_session
from .termination import terminate

__all__ = ["finish_batch", "recover_stuck_restarts", "restart"]

log = logging.getLogger(__name__)


async def finish_batch(ctx: ManagerContext, session_id: uuid.UUID, exit_code: int) -> bool:
    """Record a batch session's result, announce it and end the session. False (nothing done)
    when the session is not running any more or already has its result."""
    success = exit_code == 0
    async with ctx.db.begin() as conn:
        if not await store.set_batch_result(conn, session_id, "SUCCESS" if success else "FAILURE"):
            return False
        row = await store.get(conn, session_id)
        kernels = await store.kernels_of(conn, session_id)
    reason = "task-finished" if success else "task-failed"
    log.info("batch session %s ended with exit code %d", session_id, exit_code)
    await broadcast_session(ctx, "session_success" if success else "session_failure", row,
                            reason=reason, exitCode=exit_code)
    await terminate(ctx, row, kernels, reason)
    return True


async def restart(ctx: ManagerContext, requester: Requester, ref: str, owner_access_key: str | None) -> None:
    """``PATCH /session/{ref}``: a fresh user-code process in each kernel, same containers."""
    owner = await resolve_owner(ctx, requester, owner_access_key)
    async with ctx.db.begin() as conn:
        row = await get_one(conn, ref, owner.access_key)
        if not await store.set_session_status(conn, row.id, SessionStatus.RESTARTING, only_from=["RUNNING"],
                                              info="restarting"):
            raise errors.InvalidAPIParameters(f"The session is not running (status: {row.status}).")
        kernels = [k for k in await store.kernels_of(conn, row.id) if k.status == "RUNNING" and k.agent_addr]
        for k in kernels:
            await store.set_kernel_status(conn, k.id, KernelStatus.RESTARTING, only_from=["RUNNING"],
                                          info="restarting")
    results = await asyncio.gather(*[ctx.agents.get(k.agent_addr).restart_kernel(str(k.id)) for k in kernels],
                                   return_exceptions=True)
    # Back to RUNNING whatever happened: the containers are up either way (a kernel whose
    # runner is gone meets the usual reconciliation).
    async with ctx.db.begin() as conn:
        for k in kernels:
            await store.set_kernel_status(conn, k.id, KernelStatus.RUNNING, only_from=["RESTARTING"], info="")
        await store.set_session_status(conn, row.id, SessionStatus.RUNNING, only_from=["RESTARTING"], info="")
    failed: list[tuple[Any, BaseException]] = [(k, r) for k, r in zip(kernels, results, strict=True)
                                               if isinstance(r, BaseException)]
    for k, exc in failed:
        log.warning("restarting kernel %s of session %s failed: %r", k.id, row.id, exc)
    if failed:
        exc = failed[0][1]
        detail = exc.msg if isinstance(exc, AgentError) else repr(exc)
        raise errors.KernelRestartFailed(detail)


async def recover_stuck_restarts(ctx: ManagerContext, entered_before: datetime) -> list[uuid.UUID]:
    """Sessions left RESTARTING since before ``entered_before`` (the manager that restarted them
    stopped half-way) go back to RUNNING, with their kernels: the containers never stopped, and a
    runner that is really gone meets the usual reconciliation. Returns them."""
    async with ctx.db.connect() as conn:
        stuck = await store.stuck_sessions(conn, ["RESTARTING"], entered_before)
    recovered = []
    for row in stuck:
        async with ctx.db.begin() as conn:
            for k in await store.kernels_of(conn, row.id):
                await store.set_kernel_status(conn, k.id, KernelStatus.RUNNING, only_from=["RESTARTING"],
                                              info="restart-timeout")
            if await store.set_session_status(conn, row.id, SessionStatus.RUNNING, only_from=["RESTARTING"],
                                              info="restart-timeout"):
                recovered.append(row.id)
    for sid in recovered:
        log.warning("session %s was left restarting: back to RUNNING", sid)
    return recovered
