"""The GraphQL reads and writes of virtual folders and quota scopes: ``vfolder``,
``vfolder_list`` (and the own / invited / project lists), ``quota_scope``, ``set_quota_scope``
and ``unset_quota_scope``.

Scoping: superadmins and monitors see every folder (``domain_name``, ``group_id``,
``access_key`` narrow it), domain admins their domain's, users the folders they reach (owned,
project, shared: beyond the original, whose users see only the folders they own). Quota scopes:
superadmins (and monitors, reading) any, domain admins those of their domain's users and
projects, users read their own (``user:<their uuid>``)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from bai.manager import errors
from bai.manager.querylang import QueryError
from bai.manager.services.context import ManagerContext
from bai.manager.store import vfolders as store
from bai.manager.store.keypairs import Requester

from . import access, proxies
from .access import Folder

_READ_ALL = frozenset({"superadmin", "monitor"})
_QSID = re.compile(r"^(user|project):([0-9a-fA-F-]{32,36})$")


@dataclass(frozen=True)
class Page:
    items: list[Folder]
    total_count: int


async def folder_page(ctx: ManagerContext, req: Requester, *, scope: str = "reach", limit: int, offset: int,
                      filter_: str | None = None, order: str | None = None, domain_name: str | None = None,
                      group_id: uuid.UUID | None = None, access_key: str | None = None) -> Page:
    """One page of folders as ``req`` may see them (see the module's scoping rules)."""
    types = await access.allowed_types(ctx)
    async with ctx.db.connect() as conn:
        reach = await access.reach_of(conn, req)
        owner_user: uuid.UUID | None = None
        if access_key is not None:
            owner = await store.keypair_owner(conn, access_key)
            if owner is None:
                return Page([], 0)
            if req.role not in _READ_ALL and (req.role != "admin" or owner.domain_name != req.domain_name) \
                    and access_key != req.access_key:
                raise errors.GenericForbidden()
            owner_user = owner.uuid
        if scope == "reach" and (req.role in _READ_ALL or req.role == "admin"):
            if req.role == "admin":
                if domain_name is not None and domain_name != req.domain_name:
                    raise errors.GenericForbidden()
                domain_name = req.domain_name
            base = store.list_query("any", req.user_uuid, None, domain_name=domain_name, group_id=group_id,
                                    owner_user=owner_user)
            admin_view = True
        else:
            if domain_name is not None and domain_name != req.domain_name:
                raise errors.GenericForbidden()
            base = store.list_query(scope, req.user_uuid, reach.project_ids, types=types, group_id=group_id,
                                    owner_user=owner_user)
            admin_view = False
        rows, total = await store.folder_page(conn, base, limit=limit, offset=offset, filter_=filter_, order=order)
    return Page([access.folder_of(r, reach, admin_view=admin_view) for r in rows], total)


async def folder(ctx: ManagerContext, req: Requester, folder_id: uuid.UUID) -> Folder | None:
    """``vfolder(id)``: a folder ``req`` reaches (admins: of their domain; superadmins and
    monitors: any), or None."""
    try:
        if req.role == "monitor":
            async with ctx.db.connect() as conn:
                rows = await store.any_folder(conn, req.user_uuid, folder_id=folder_id)
                reach = await access.reach_of(conn, req)
            return access.folder_of(rows[0], reach, admin_view=True) if rows else None
        return await access.by_id(ctx, req, folder_id, statuses=None, admin_reach=True)
    except errors.VFolderNotFound:
        return None


# ------------------------------------------------------------------ quota scopes


def parse_qsid(text: str) -> tuple[str, uuid.UUID]:
    match = _QSID.match(text or "")
    if not match:
        raise QueryError("quota_scope_id must be 'user:<uuid>' or 'project:<uuid>'")
    try:
        return match[1], uuid.UUID(match[2])
    except ValueError:
        raise QueryError("quota_scope_id must be 'user:<uuid>' or 'project:<uuid>'") from None


async def _check_scope(ctx: ManagerContext, req: Requester, host: str, qsid: str, *, write: bool) -> tuple[str, str]:
    kind, owner = parse_qsid(qsid)
    proxy, volume = proxies.split_host(host)
    async with ctx.db.connect() as conn:
        domain = await store.scope_owner_domain(conn, kind, owner)
    if domain is None:
        raise errors.ObjectNotFound(f"no {kind} for quota scope {qsid!r}")
    allowed = (req.role == "superadmin" or (req.role == "monitor" and not write)
               or (req.role == "admin" and domain == req.domain_name)
               or (not write and kind == "user" and owner == req.user_uuid))
    if not allowed:
        raise errors.GenericForbidden("this quota scope is not yours to " + ("change" if write else "read"))
    return proxy, volume


def _scope_obj(host: str, qsid: str, used: Any, limit: Any) -> dict[str, Any]:
    return {
        "id": f"QuotaScope:{host}/{qsid}", "quota_scope_id": qsid, "storage_host_name": host,
        "details": {"usage_bytes": used, "usage_count": None, "hard_limit_bytes": limit},
    }


async def quota_scope(ctx: ManagerContext, req: Requester, host: str, qsid: str) -> dict[str, Any]:
    proxy, volume = await _check_scope(ctx, req, host, qsid, write=False)
    reply = await proxies.call(ctx, proxy, "GET", "/quota-scope", {"volume": volume, "qsid": qsid},
                               not_found=errors.ObjectNotFound) or {}
    return _scope_obj(host, qsid, reply.get("used_bytes"), reply.get("limit_bytes"))


async def set_quota_scope(ctx: ManagerContext, req: Requester, host: str, qsid: str,
                          hard_limit_bytes: int | None) -> dict[str, Any]:
    if hard_limit_bytes is not None and hard_limit_bytes < 0:
        raise QueryError("hard_limit_bytes must not be negative")
    proxy, volume = await _check_scope(ctx, req, host, qsid, write=True)
    target = {"volume": volume, "qsid": qsid}
    options = {"limit_bytes": hard_limit_bytes}
    # PATCH makes the scope when it does not exist yet (the proxy's rule)
    await proxies.call(ctx, proxy, "PATCH", "/quota-scope", {**target, "options": options},
                       not_found=errors.ObjectNotFound)
    return await quota_scope(ctx, req, host, qsid)


async def unset_quota_scope(ctx: ManagerContext, req: Requester, host: str, qsid: str) -> dict[str, Any]:
    proxy, volume = await _check_scope(ctx, req, host, qsid, write=True)
    await proxies.call(ctx, proxy, "DELETE", "/quota-scope/quota", {"volume": volume, "qsid": qsid},
                       not_found=errors.ObjectNotFound)
    return await quota_scope(ctx, req, host, qsid)


# ------------------------------------------------------------------ storage volumes

#: Calls made for a volume listing; a proxy that hangs must not hold it long.
VOLUME_CALL_DEADLINE = 5.0


async def storage_volumes(ctx: ManagerContext, req: Requester, volume_id: str | None = None) -> list[dict[str, Any]]:
    """Every volume of every storage proxy that answers (``<proxy>:<volume>``), with its
    capabilities, hardware metadata, performance metric and usage (superadmins and monitors:
    it shows host paths)."""
    if req.role not in _READ_ALL:
        raise errors.GenericForbidden("superadmin privilege required")
    config = await proxies.volume_config(ctx)
    out: list[dict[str, Any]] = []
    for proxy in sorted(config.proxies):
        try:
            reply = await proxies.call(ctx, proxy, "GET", "/volumes", deadline=VOLUME_CALL_DEADLINE) or {}
        except errors.ApiError:
            continue
        for vol in reply.get("volumes") or []:
            if not isinstance(vol, dict):
                continue
            vid = f"{proxy}:{vol.get('name')}"
            if volume_id is not None and vid != volume_id:
                continue
            target = {"volume": vol.get("name")}
            extra: dict[str, Any] = {}
            for key, path in (("hardware_metadata", "/volume/hwinfo"), ("performance_metric", "/volume/performance-metric"),
                              ("usage", "/folder/fs-usage")):
                try:
                    extra[key] = await proxies.call(ctx, proxy, "GET", path, target, deadline=VOLUME_CALL_DEADLINE)
                except errors.ApiError:
                    extra[key] = None
            metric = extra["performance_metric"]
            out.append({
                "id": vid, "backend": vol.get("backend"), "fsprefix": vol.get("fsprefix"), "path": vol.get("path"),
                "capabilities": vol.get("capabilities") or [], "hardware_metadata": extra["hardware_metadata"],
                "performance_metric": metric.get("metric") if isinstance(metric, dict) else None,
                "usage": extra["usage"],
            })
    return out
