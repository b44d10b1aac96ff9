"""Running code in a session: find the main kernel's agent (route), execute on it, read its
logs, count queries."""

from __future__ import annotations

import uuid
from typing import Any

from bai.common.agent_rpc import LOG_TAIL_BYTES, LOG_TAIL_LINES, AgentError, KernelNotFound
from bai.manager import errors
from bai.manager.store import sessions as store
from bai.manager.store.keypairs import Requester

from ..context import ManagerContext
from .activity import touch
from .lookup import get_one, resolve_owner
from .queries import query_counter

__all__ = ["count_query", "execute", "logs", "route"]


async def route(ctx: ManagerContext, requester: Requester, ref: str) -> Any:
    """Where the requester's session ``ref`` runs its main kernel; 404 or 400 (not running) else."""
    if "\x00" in ref:  # as in get_one
        raise errors.SessionNotFound(f"Session (id={ref!r}) does not exist.")
    async with ctx.db.connect() as conn:
        found = await store.main_kernel_route(conn, ref, requester.access_key)
        if found is None:
            await get_one(conn, ref, requester.access_key)  # raises the precise 404
            raise errors.SessionNotFound(f"Session (id={ref}) does not exist.")
    if found.status != "RUNNING" or not found.agent_addr:
        raise errors.InvalidAPIParameters(f"The session is not running (status: {found.session_status}).")
    return found


async def execute(ctx: ManagerContext, route: Any, *, mode: str, run_id: str | None, code: str,
                  opts: dict[str, Any] | None, flush_timeout: float) -> dict[str, Any]:
    """One execute call on the kernel ``route`` names (see :func:`route`)."""
    touch(ctx, route.session_id)  # in memory: the idle timeout's activity
    try:
        return await ctx.agents.get(route.agent_addr).execute(
            str(route.session_id), str(route.kernel_id), run_id, mode,  # type: ignore[arg-type]
            code, opts or {}, flush_timeout)
    except KernelNotFound:
        # The kernel vanished under us: the original answers a synthetic finished/130.
        return {"runId": run_id, "status": "finished", "exitCode": 130, "options": None,
                "files": [], "console": []}
    except AgentError as exc:
        if exc.status == 400:
            raise errors.InvalidAPIParameters(exc.msg or exc.title) from exc
        if exc.status == 503:
            # Unreachable even after waiting for it (bai.common.agent_rpc.RECONNECTING_METHODS):
            # its process is restarting or down, and the kernel may well still run: retry.
            raise errors.ServiceUnavailable(
                "The session's agent cannot be reached right now (it may be restarting); retry shortly.",
                data={"agent-details": exc.to_json()}, headers={"Retry-After": "2"}) from exc
        raise errors.KernelExecutionFailed(exc.msg, data={"agent-details": exc.to_json()}) from exc


async def logs(ctx: ManagerContext, requester: Requester, ref: str, owner_access_key: str | None = None) -> str:
    """The tail of the main kernel's log: at most LOG_TAIL_LINES lines and LOG_TAIL_BYTES
    bytes (the agent never reads a whole log into memory, nor do we). For a session that has
    ended (or is not running), the log its agent kept when the container was removed ("" if none).
    Admins may read another keypair's (``owner_access_key``), as for the session's info."""
    requester = await resolve_owner(ctx, requester, owner_access_key)
    try:
        found = await route(ctx, requester, ref)
    except errors.InvalidAPIParameters:
        found = None  # not running: the log kept when it ended, if any
    except errors.SessionNotFound:
        found = None  # ended, perhaps
    if found is None:
        async with ctx.db.connect() as conn:
            row = await get_one(conn, ref, requester.access_key, include_dead=True)
            kept = await store.container_log(conn, row.id)
        return kept or ""
    try:
        return await ctx.agents.get(found.agent_addr).get_logs(
            str(found.kernel_id), tail_lines=LOG_TAIL_LINES, max_bytes=LOG_TAIL_BYTES)
    except AgentError as exc:
        raise errors.InternalServerError(exc.msg) from exc


async def task_logs(ctx: ManagerContext, requester: Requester, task_id: uuid.UUID) -> str:
    """``logs`` of a batch task named by one of its kernels' ids or by its session's id (the
    original's ``GET /session/_/logs?taskId=``, which reads them from a ``.logs`` folder we do not
    keep; the container log is the same output). A kernel other than the main one gives the main
    kernel's log."""
    async with ctx.db.connect() as conn:
        session_id = await store.session_of_kernel(conn, task_id)
    return await logs(ctx, requester, str(session_id or task_id))


def count_query(ctx: ManagerContext, session_id: uuid.UUID) -> None:
    """One more execute on the session: counted in memory, written in batches (:mod:`.queries`)."""
    query_counter(ctx).note(session_id)
