"""What ``session_*`` and ``kernel_*`` broadcasts carry (the original's SSE payloads), and the
calls that send them; every module that moves a session or kernel announces it through here."""

from __future__ import annotations

from typing import Any

from ..context import ManagerContext

__all__ = ["broadcast_kernel", "broadcast_session", "kernel_event_args", "session_event_args"]


def session_event_args(session: dict[str, Any] | Any, **extra: Any) -> dict[str, Any]:
    """A ``session_*`` broadcast's arguments, from a session row or the dict it was inserted from."""
    get = session.get if isinstance(session, dict) else (lambda k, d=None: getattr(session, k, d))
    return {"sessionId": str(get("id")), "sessionName": get("name"), "ownerAccessKey": get("access_key"),
            "reason": extra.pop("reason", None), "exitCode": extra.pop("exitCode", None), **extra}


def kernel_event_args(kernel: Any, reason: str | None, exit_code: int | None) -> dict[str, Any]:
    """What a ``kernel_*`` broadcast carries: the SSE payload of the original, in its key order."""
    return {"reason": reason, "sessionName": kernel.session_name, "ownerAccessKey": kernel.access_key,
            "sessionId": str(kernel.session_id), "exitCode": exit_code, "kernelId": str(kernel.id),
            "clusterRole": kernel.cluster_role, "clusterIdx": kernel.cluster_idx}


async def broadcast_session(ctx: ManagerContext, name: str, session: dict[str, Any] | Any, **extra: Any) -> None:
    await ctx.events.broadcast(name, ctx.manager_id, **session_event_args(session, **extra))


async def broadcast_kernel(ctx: ManagerContext, name: str, kernel: Any, reason: str | None,
                           exit_code: int | None = None) -> None:
    await ctx.events.broadcast(name, ctx.manager_id, **kernel_event_args(kernel, reason, exit_code))
