"""The manager as an operator sees it: its status (running, or frozen for maintenance), the
announcement, the scheduler's agent include/exclude switch and raw access to the shared config in
etcd. All writes are superadmin-only; the status is shared by every manager through etcd
(``manager/status``), and each manager keeps a copy it refreshes every few seconds so the check
on the hot path (session creation, GraphQL mutations) costs no round trip."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from bai.common.auth import API_VERSION
from bai.common.tasks import raise_if_cancelling
from bai.manager import errors
from bai.manager.services.context import ManagerContext
from bai.manager.services.privileges import require_superadmin_write
from bai.manager.store import agents as agent_store
from bai.manager.store import sessions as session_store
from bai.manager.store.keypairs import Requester

log = logging.getLogger(__name__)

STATUS_KEY = "manager/status"
ANNOUNCEMENT_KEY = "manager/announcement"
#: What ``PUT /manager/status`` accepts (the original also knows "preparing" and "terminated",
#: states a manager enters by itself, never by request).
SETTABLE_STATUSES = ("running", "frozen")
#: How often a manager rereads the shared status (another manager may have frozen the cluster).
STATUS_REFRESH_SECONDS = 5.0
#: Raw etcd access is confined to what the original's ``/config`` API is for: shared config.
CONFIG_ROOTS = ("config/", "volumes/", "manager/announcement")
#: The most keys one ``/config/set`` may write (a nested value is flattened into keys).
MAX_CONFIG_KEYS = 1000


class ServerFrozen(errors.ApiError):
    status, error_type, title = (503, errors.PROBS + "server-frozen",
                                 "The server is frozen due to maintenance. Please try again later.")


# ------------------------------------------------------------------ status

def ensure_not_frozen(ctx: ManagerContext) -> None:
    """New work (sessions, mutations, config changes) waits while the cluster is frozen; reads
    and running sessions go on."""
    if ctx.frozen:
        raise ServerFrozen()


async def load_status(ctx: ManagerContext) -> None:
    ctx.frozen = (await ctx.etcd.get(STATUS_KEY) or "running") == "frozen"


async def refresh_status_forever(ctx: ManagerContext) -> None:
    while not ctx.stopping.is_set():
        await asyncio.sleep(STATUS_REFRESH_SECONDS)
        try:
            await load_status(ctx)
        except Exception:
            raise_if_cancelling()
            log.warning("could not reread the manager status from etcd; keeping %s",
                        "frozen" if ctx.frozen else "running", exc_info=True)


async def status_report(ctx: ManagerContext) -> dict[str, Any]:
    """``GET /manager/status``: every registered manager and the cluster's active sessions."""
    nodes = await ctx.etcd.get_prefix("nodes/manager/")
    async with ctx.db.connect() as conn:
        active = await session_store.count_active(conn)
    status = "frozen" if ctx.frozen else "running"
    cfg = ctx.config.manager
    return {
        "nodes": [{
            "id": node_id, "num_proc": 1,
            "service_addr": cfg.service_addr if node_id == ctx.manager_id else None,
            "heartbeat_timeout": cfg.heartbeat_timeout, "ssl_enabled": False,
            "active_sessions": active, "status": status, "version": _version(),
            "api_version": API_VERSION,
        } for node_id in sorted(nodes)],
        "status": status,
        "active_sessions": active,
    }


async def set_status(ctx: ManagerContext, req: Requester, status: str, force_kill: bool) -> int:
    """Freeze or unfreeze every manager; freezing with ``force_kill`` also terminates every
    session still alive. Returns how many sessions were told to terminate."""
    require_superadmin_write(req)
    if status not in SETTABLE_STATUSES:
        raise errors.InvalidAPIParameters(f"status must be one of {', '.join(SETTABLE_STATUSES)}")
    if force_kill and status != "frozen":
        raise errors.InvalidAPIParameters("force_kill applies only when freezing")
    await ctx.etcd.put(STATUS_KEY, status)
    ctx.frozen = status == "frozen"
    log.warning("manager status set to %s by %s (force_kill=%s)", status, req.email, force_kill)
    if not force_kill:
        return 0
    # (imported here: session creation imports this module for ensure_not_frozen)
    from bai.manager.services.sessions import termination

    async with ctx.db.connect() as conn:
        alive = await session_store.active_sessions(conn)
    for row in alive:
        try:
            await termination.destroy(ctx, req, str(row.id), forced=True, owner_access_key=row.access_key)
        except errors.ApiError as exc:  # already on its way out, or gone meanwhile
            log.info("freeze: session %s (%s) not terminated: %s", row.name, row.id, exc)
    return len(alive)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bai")
    except PackageNotFoundError:
        return "0"


# ------------------------------------------------------------------ announcement

async def set_announcement(ctx: ManagerContext, req: Requester, enabled: bool, message: str | None) -> None:
    require_superadmin_write(req)
    if enabled:
        if not message or not message.strip():
            raise errors.InvalidAPIParameters("an enabled announcement needs a message")
        await ctx.etcd.put(ANNOUNCEMENT_KEY, message)
    else:
        await ctx.etcd.delete(ANNOUNCEMENT_KEY)


# ------------------------------------------------------------------ scheduler

async def scheduler_operation(ctx: ManagerContext, req: Requester, op: str, agent_ids: Sequence[str]) -> list[str]:
    """``include-agents`` / ``exclude-agents``: let the scheduler place new sessions on these
    agents again, or no longer (their running sessions stay). All named agents must exist;
    nothing changes otherwise. Returns the agents changed."""
    require_superadmin_write(req)
    ensure_not_frozen(ctx)
    if op not in ("include-agents", "exclude-agents"):
        raise errors.InvalidAPIParameters("op must be include-agents or exclude-agents")
    wanted = list(dict.fromkeys(agent_ids))
    if not wanted:
        raise errors.InvalidAPIParameters("args must name at least one agent")
    async with ctx.db.begin() as conn:
        known = await agent_store.existing_ids(conn, wanted)
        missing = [a for a in wanted if a not in known]
        if missing:
            raise errors.InvalidAPIParameters(f"unknown agents: {', '.join(missing)}")
        await agent_store.set_schedulable(conn, wanted, op == "include-agents")
    if op == "include-agents":
        ctx.request_schedule()
    return wanted


# ------------------------------------------------------------------ raw shared config

def _config_key(key: str) -> str:
    key = key.strip().strip("/")
    if not key or ".." in key.split("/") or not key.startswith(CONFIG_ROOTS):
        raise errors.InvalidAPIParameters(f"key must lie under one of {', '.join(CONFIG_ROOTS)}")
    return key


async def config_get(ctx: ManagerContext, req: Requester, key: str, prefix: bool) -> Any:
    require_superadmin_write(req)  # the shared config holds secrets (Redis password, RPC secret)
    key = _config_key(key)
    if not prefix:
        return await ctx.etcd.get(key)
    return _nest(await ctx.etcd.get_prefix(key + "/"))


async def config_set(ctx: ManagerContext, req: Requester, key: str, value: Any) -> None:
    require_superadmin_write(req)
    ensure_not_frozen(ctx)
    key = _config_key(key)
    if isinstance(value, Mapping):
        flat = _flatten(key, value)
        if len(flat) > MAX_CONFIG_KEYS:
            raise errors.InvalidAPIParameters(f"at most {MAX_CONFIG_KEYS} keys per call")
        for k, v in flat.items():
            await ctx.etcd.put(k, v)
    else:
        await ctx.etcd.put(key, str(value))


async def config_delete(ctx: ManagerContext, req: Requester, key: str, prefix: bool) -> None:
    require_superadmin_write(req)
    ensure_not_frozen(ctx)
    key = _config_key(key)
    if prefix:
        await ctx.etcd.delete_prefix(key + "/")
    await ctx.etcd.delete(key)


def _flatten(prefix: str, value: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not k or "/" in k:
            raise errors.InvalidAPIParameters(f"bad config key segment {k!r}")
        path = f"{prefix}/{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(path, v))
        elif v is None or isinstance(v, (list, tuple)):
            raise errors.InvalidAPIParameters(f"{path}: values are strings, numbers, booleans or nested objects")
        else:
            out[path] = str(v).lower() if isinstance(v, bool) else str(v)
    return out


def _nest(flat: Mapping[str, str]) -> dict[str, Any]:
    """``{"a/b": "1"}`` -> ``{"a": {"b": "1"}}``; a key that is both a value and a folder keeps
    its value under the empty sub-key, as the original's registry entries do."""
    root: dict[str, Any] = {}
    for path in sorted(flat):
        node = root
        parts = [p for p in path.split("/") if p]
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {} if child is None else {"": child}
            node = child
        if parts:
            leaf = parts[-1]
            if isinstance(node.get(leaf), dict):
                node[leaf][""] = flat[path]
            else:
                node[leaf] = flat[path]
    return root
