"""The smaller session endpoints of the original's API: rename, status history, abuse report,
direct-access info, stopping a service, and re-reading an agent's kernels.

Each finds the session the usual way (name or id, ``owner_access_key`` for admins: see
:mod:`.lookup`), so a session the requester may not see is a 404 like everywhere else.
"""

from __future__ import annotations

from typing import Any

from bai.common.agent_rpc import AgentError
from bai.manager import errors
from bai.manager.store import agents as agent_store
from bai.manager.store import sessions as store
from bai.manager.store.keypairs import Requester

from ..context import ManagerContext
from .creation import check_session_name
from .lookup import get_one, resolve_owner, running_main

__all__ = ["SERVICE_STOPPED_EVENT", "abusing_report", "direct_access_info", "rename", "shutdown_service",
           "status_history", "sync_agent_registry"]

#: Broadcast after a service of a session was stopped: app proxies close the circuits to it.
SERVICE_STOPPED_EVENT = "session_service_stopped"


async def _live_or_ended(conn: Any, ref: str, access_key: str) -> Any:
    """The live session ``ref`` names or, when there is none, the ended one (the original also
    answers rename and status-history for ended sessions, so their errors say what they are)."""
    try:
        return await get_one(conn, ref, access_key)
    except errors.SessionNotFound:
        return await get_one(conn, ref, access_key, include_dead=True)


async def rename(ctx: ManagerContext, requester: Requester, ref: str, new_name: str,
                 owner_access_key: str | None) -> None:
    """``POST /session/{ref}/rename``: only a RUNNING session (else 400); the new name follows
    creation's rule and must not be another live session's of the same owner (400
    ``session-already-exists``, as creating a second session of that name is)."""
    check_session_name(new_name)
    owner = await resolve_owner(ctx, requester, owner_access_key)
    async with ctx.db.begin() as conn:
        row = await _live_or_ended(conn, ref, owner.access_key)
        if row.status != "RUNNING":
            raise errors.InvalidAPIParameters(f"Can't change name of not running session (status: {row.status}).")
        if row.name == new_name:
            return
        try:
            renamed = await store.rename_running(conn, row.id, new_name)
        except store.DuplicateSessionName:
            raise errors.SessionAlreadyExists(f"A live session named {new_name!r} already exists.") from None
        if not renamed:  # it left RUNNING meanwhile
            raise errors.InvalidAPIParameters("Can't change name of not running session.")


async def status_history(ctx: ManagerContext, requester: Requester, ref: str,
                         owner_access_key: str | None) -> dict[str, str]:
    """``GET /session/{ref}/status-history``: ``{STATUS: ISO-8601 time it was entered}``."""
    owner = await resolve_owner(ctx, requester, owner_access_key)
    async with ctx.db.connect() as conn:
        row = await _live_or_ended(conn, ref, owner.access_key)
    return dict(row.status_history or {})


async def abusing_report(ctx: ManagerContext, requester: Requester, ref: str,
                         owner_access_key: str | None) -> dict[str, Any]:
    """``GET /session/{ref}/abusing-report``: always ``{}`` -- no agent here runs an abuse
    detector, so none has anything to report (the session is still looked up: 404 if unknown)."""
    owner = await resolve_owner(ctx, requester, owner_access_key)
    async with ctx.db.connect() as conn:
        await get_one(conn, ref, owner.access_key)
    return {}


async def direct_access_info(ctx: ManagerContext, requester: Requester, ref: str,
                             owner_access_key: str | None) -> dict[str, Any]:
    """``GET /session/{ref}/direct-access-info``: ``{}``. The original fills it only for private
    (``system``) sessions such as SFTP ones, which cannot be created here."""
    owner = await resolve_owner(ctx, requester, owner_access_key)
    async with ctx.db.connect() as conn:
        await get_one(conn, ref, owner.access_key)
    return {}


async def shutdown_service(ctx: ManagerContext, requester: Requester, ref: str, service: str,
                           owner_access_key: str | None) -> None:
    """``POST /session/{ref}/shutdown-service``: stop service ``service`` in the main kernel
    (the runner ends the process that start-service began; nothing happens if it is not
    running) and have the app proxies close their circuits to it. 404 for a session the
    requester may not see or a service the session does not have, 400 when it is not running."""
    owner, row, main = await running_main(ctx, requester, ref, owner_access_key)
    found = next((sp for sp in main.service_ports or [] if isinstance(sp, dict) and sp.get("name") == service), None)
    if found is None:
        raise errors.ObjectNotFound(f"The session has no service {service!r}.", title="No such app service.")
    if found.get("protocol") != "preopen":  # a preopen port is served by the session's own code
        try:
            await ctx.agents.get(main.agent_addr).shutdown_service(str(main.id), service)
        except AgentError as exc:
            if exc.status == 404:
                raise errors.SessionNotFound(f"Session (id={ref}) has no kernel on its agent any more.") from exc
            if exc.status == 400:  # the agent's kernel lacks it (its agent and the database disagree)
                raise errors.ObjectNotFound(exc.msg or exc.title, title="No such app service.") from exc
            raise errors.InternalServerError(f"Cannot stop service {service!r}: {exc.msg or exc.title}") from exc
    await ctx.events.broadcast(SERVICE_STOPPED_EVENT, ctx.manager_id, sessionId=str(row.id), service=service,
                               kernelHost=main.kernel_host or "127.0.0.1",
                               kernelPorts=[int(p) for p in found.get("host_ports") or []])


async def sync_agent_registry(ctx: ManagerContext, agent_id: str) -> None:
    """``POST /session/_/sync-agent-registry`` (superadmins): reconcile the agent's kernels with
    the database now, as the periodic sync does (see :func:`..lifecycle.reconcile_agent`).
    404 for an unknown agent, 503 when it cannot be reached."""
    from ..lifecycle import LifecycleHandler, reconcile_agent  # lifecycle imports this package

    async with ctx.db.connect() as conn:
        agent = await agent_store.agent_row(conn, agent_id)
    if agent is None:
        raise errors.ObjectNotFound(f"No such agent: {agent_id}", title="No such agent.")
    if not agent.addr:
        raise errors.ServiceUnavailable(f"Agent {agent_id} has no address to reach it at.")
    try:
        await reconcile_agent(ctx, LifecycleHandler(ctx), agent_id, agent.addr)
    except (AgentError, OSError, TimeoutError) as exc:
        raise errors.ServiceUnavailable(f"Cannot reach agent {agent_id}: {exc}") from exc
