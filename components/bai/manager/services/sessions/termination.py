"""Ending sessions: a user's destroy, and the final-status machinery every ending goes through
(closing a session and its kernels in one transaction, then announcing it), shared by destroy,
the agents' events (lifecycle) and the stuck-session sweep."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from bai.common.agent_rpc import KernelNotFound
from bai.common.tasks import raise_if_cancelling
from bai.common.types import KernelStatus, SessionStatus
from bai.manager import errors
from bai.manager.store import agents as agent_store
from bai.manager.store import sessions as store
from bai.manager.store.db import is_deadlock
from bai.manager.store.keypairs import Requester

from .. import cluster_networks
from ..context import ManagerContext
from .lookup import get_one, resolve_owner
from .payloads import broadcast_kernel, broadcast_session

__all__ = ["CLOSE_ATTEMPTS", "cancel", "cancel_whole", "close", "destroy", "destroy_kernel", "finish_termination", "terminate"]

log = logging.getLogger(__name__)

#: Attempts at closing a session's rows when PostgreSQL picks that transaction to break a deadlock.
CLOSE_ATTEMPTS = 3


async def destroy(ctx: ManagerContext, requester: Requester, ref: str, *, forced: bool,
                  owner_access_key: str | None) -> dict[str, Any]:
    """``DELETE /session/{ref}``: cancel a pending session, or terminate a started one and
    answer its main kernel's last statistics."""
    owner = await resolve_owner(ctx, requester, owner_access_key)
    async with ctx.db.connect() as conn:
        row = await get_one(conn, ref, owner.access_key)
        kernels = await store.kernels_of(conn, row.id)
    status = SessionStatus(row.status)
    if status == SessionStatus.PENDING:
        await cancel(ctx, row.id, "user-requested")
        return {"stats": {"status": "cancelled"}}
    if status == SessionStatus.PULLING or (
        status in (SessionStatus.SCHEDULED, SessionStatus.PREPARING, SessionStatus.TERMINATING,
                   SessionStatus.ERROR) and not forced):
        raise errors.GenericForbidden(f"Cannot destroy a session in {status.value} state without forced=true.")
    stats = await terminate(ctx, row, kernels, "user-requested")
    return {"stats": stats or {"status": "terminated"}}


async def terminate(ctx: ManagerContext, row: Any, kernels: list[Any], reason: str) -> dict[str, Any]:
    """End a started session: TERMINATING (announced), its kernels destroyed on their agents,
    then TERMINATED. Returns the main kernel's last statistics (``{}`` if none came back)."""
    terminating = []
    async with ctx.db.begin() as conn:
        await store.set_session_status(conn, row.id, SessionStatus.TERMINATING, info=reason)
        for k in kernels:
            if await store.set_kernel_status(conn, k.id, KernelStatus.TERMINATING,
                                             only_from=["SCHEDULED", "PREPARING", "PULLING", "RUNNING",
                                                        "RESTARTING", "ERROR"]):
                terminating.append(k)
    await broadcast_session(ctx, "session_terminating", row, reason=reason)
    for k in terminating:  # the exit code is not known yet: -1, as the original sends
        await broadcast_kernel(ctx, "kernel_terminating", k, reason, -1)
    stats: dict[str, Any] = {}
    results = await asyncio.gather(*[destroy_kernel(ctx, k, reason) for k in kernels],
                                   return_exceptions=True)
    for k, res in zip(kernels, results, strict=True):
        if isinstance(res, BaseException):
            log.warning("destroying kernel %s failed: %r", k.id, res)
        elif k.cluster_role == "main":
            stats = res
    await finish_termination(ctx, row.id, reason)
    return stats


async def destroy_kernel(ctx: ManagerContext, kernel: Any, reason: str) -> dict[str, Any]:
    """Ask the kernel's agent to destroy it; its last statistics, ``{}`` when it was never placed.
    Touches no row: closing the session is :func:`close`'s job."""
    if not kernel.agent_addr:
        return {}
    try:
        return await ctx.agents.get(kernel.agent_addr).destroy_kernel(
            str(kernel.id), str(kernel.session_id), reason)
    except KernelNotFound:
        return {"status": "terminated"}


async def finish_termination(ctx: ManagerContext, session_id: uuid.UUID, reason: str,
                             exit_codes: dict[uuid.UUID, int | None] | None = None) -> None:
    """Mark every kernel TERMINATED, release their slots and close the session.
    ``exit_codes`` holds what agents reported for some kernels (for the kernel_terminated event)."""
    live = [s.value for s in KernelStatus if s not in (KernelStatus.TERMINATED, KernelStatus.CANCELLED)]
    await close(ctx, session_id, SessionStatus.TERMINATED, KernelStatus.TERMINATED, reason,
                kernels_from=live, exit_codes=exit_codes,
                sessions_from=["TERMINATING", "RUNNING", "ERROR", "PREPARING", "SCHEDULED",
                               "RUNNING_DEGRADED", "RESTARTING"])


async def cancel(ctx: ManagerContext, session_id: uuid.UUID, reason: str,
                 data: dict[str, Any] | None = None, *, started_kernels_too: bool = False) -> None:
    """A session that never started: CANCELLED, with its slots released. With
    ``started_kernels_too`` its kernels that had already started (a session of several kernels
    whose other kernel failed) are CANCELLED with it, in the same transaction."""
    not_started = ["PENDING", "SCHEDULED", "PREPARING", "PULLING"]
    await close(ctx, session_id, SessionStatus.CANCELLED, KernelStatus.CANCELLED, reason, data=data,
                kernels_from=not_started, sessions_from=not_started,
                kernels_with_session_from=["RUNNING"] if started_kernels_too else [])


async def cancel_whole(ctx: ManagerContext, session_id: uuid.UUID, reason: str,
                       data: dict[str, Any] | None = None, *, failed_kernel: str | None = None) -> None:
    """A session whose start failed, all of it: :func:`cancel`, then -- a session of several
    kernels starts whole or not at all -- the kernels that had started meanwhile end with it
    (CANCELLED, their slots released) and every placed kernel but ``failed_kernel`` (which its
    agent has already discarded) is removed from its agent."""
    await cancel(ctx, session_id, reason, data, started_kernels_too=True)
    async with ctx.db.connect() as conn:
        sess = await store.get(conn, session_id)
        if sess is None or sess.status != SessionStatus.CANCELLED.value:
            return  # it was not ours to cancel (it ended otherwise, or it is running)
        kernels = await store.kernels_of(conn, session_id)
    placed = [k for k in kernels if k.agent_addr and str(k.id) != failed_kernel]
    for k, res in zip(placed, await asyncio.gather(*(destroy_kernel(ctx, k, reason) for k in placed),
                                                   return_exceptions=True), strict=True):
        if isinstance(res, BaseException):  # the periodic reconciliation removes it later
            log.warning("removing kernel %s of cancelled session %s: %r", k.id, session_id, res)


async def close(
    ctx: ManagerContext, session_id: uuid.UUID, status: SessionStatus, kernel_status: KernelStatus,
    reason: str, *, kernels_from: list[str], sessions_from: list[str], data: dict[str, Any] | None = None,
    exit_codes: dict[uuid.UUID, int | None] | None = None, kernels_with_session_from: Sequence[str] = (),
) -> None:
    """Move a session and its kernels to a final status in one transaction, release their
    agents' slots, then wake waiters, tell listeners and let the scheduler use the room.

    Listeners get ``kernel_<status>`` for each kernel moved here, then ``session_<status>``:
    whoever moves the rows announces them, so each kernel is announced once and before its
    session, however agent events and API calls race."""
    for attempt in range(1, CLOSE_ATTEMPTS + 1):
        try:
            async with ctx.db.begin() as conn:
                # The session row first, as the scheduler's prepare step takes it; PostgreSQL
                # breaks a cycle with a path that locks in another order by failing one side,
                # and this side then simply runs again.
                await store.lock_session(conn, session_id)
                kernels = await store.kernels_of(conn, session_id)
                moved = [k for k in kernels
                         if await store.set_kernel_status(conn, k.id, kernel_status, info=reason,
                                                          only_from=kernels_from)]
                changed = await store.set_session_status(conn, session_id, status, info=reason, data=data,
                                                         only_from=sessions_from)
                if changed and kernels_with_session_from:  # these move only along with the session
                    moved += [k for k in kernels if k not in moved and await store.set_kernel_status(
                        conn, k.id, kernel_status, info=reason, only_from=list(kernels_with_session_from))]
                for agent in {k.agent for k in kernels if k.agent}:
                    await agent_store.refresh_occupied(conn, agent)
                row = await store.get(conn, session_id)
            break
        except Exception as exc:
            if attempt == CLOSE_ATTEMPTS or not is_deadlock(exc):
                raise
            log.info("closing session %s met a deadlock; running it again", session_id)
    try:
        for k in moved:
            exit_code: int | None = None
            if kernel_status == KernelStatus.TERMINATED:
                code = (exit_codes or {}).get(k.id)
                exit_code = -1 if code is None else code  # -1: unknown, as in the original
            await broadcast_kernel(ctx, f"kernel_{kernel_status.value.lower()}", k, reason, exit_code)
        if changed and row is not None:
            await broadcast_session(ctx, f"session_{status.value.lower()}", row, reason=reason)
    finally:  # wake waiters after the broadcasts, so clients that act on it never overtake them
        if changed and row is not None:
            ctx.waiters.notify(session_id, status.value)
            ctx.request_schedule()
            if row.cluster_mode == "multi-node" and row.cluster_size > 1:
                await _drop_overlay(ctx, session_id)


async def _drop_overlay(ctx: ManagerContext, session_id: uuid.UUID) -> None:
    """A multi-node session's overlay network goes with it (in the background: its kernels may
    still be detaching); only where the overlay is enabled."""
    try:
        networks = cluster_networks.of(ctx)
        if (await networks.overlay()).enabled:
            networks.remove_later(session_id)
    except Exception as exc:
        raise_if_cancelling()
        log.warning("session %s: cannot schedule the removal of its overlay network: %r", session_id, exc)
