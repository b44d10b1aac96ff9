"""Folder lifecycle: create (quota scope, resource-policy limits, host permission, one
transaction with the storage proxy's create), list, info, rename, options, trash, restore,
delete from the trash, purge; storage hosts and ownership types; usage.

Every write checks the caller's reach (services/vfolders/access.py) first: a folder outside it
is "not found". A write that needs the storage proxy calls it inside the database transaction,
so when the proxy fails nothing is left in the database."""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass
from typing import Any

from bai.manager import errors
from bai.manager.services.context import ManagerContext
from bai.manager.store import vfolders as store
from bai.manager.store.keypairs import Requester

from . import access, proxies
from .access import Folder

#: Longest folder name at create and rename (the column allows 128: deleted ones get suffixes).
MAX_NAME_LENGTH = 64
RESERVED_NAMES = frozenset({".terminfo", ".jupyter", ".tmux.conf", ".ssh", "/bin", "/boot", "/dev", "/etc",
                            "/lib", "/lib64", "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv",
                            "/sys", "/tmp", "/usr", "/var", "/home"})
RESERVED_PATTERNS = (re.compile(r"^\.[a-z0-9]+rc$"), re.compile(r"^\.[a-z0-9]+_profile$"))
USAGE_MODES = ("general", "model", "data")
#: Statuses GET /folders shows (a deleted folder's row is history, not a folder).
LISTED_STATUSES = store.ALL_STATUSES - {"delete-complete"}
#: Proxy calls that walk or delete a whole tree get longer than the default deadline.
SLOW_CALL_DEADLINE = 600.0
#: Listing hosts asks every proxy: one that hangs must not hold the listing long.
HOSTS_CALL_DEADLINE = 5.0


def check_name(name: str, what: str = "name") -> None:
    """400 unless ``name`` can be a folder name: 1-64 characters, no control or format
    characters, no slash, not ``.``/``..``, no surrounding blanks, not reserved (it is also the
    mount point /home/work/NAME inside sessions)."""
    problem = None
    if not name or len(name) > MAX_NAME_LENGTH:
        problem = f"must be 1 to {MAX_NAME_LENGTH} characters long"
    elif any(unicodedata.category(ch)[0] == "C" for ch in name):
        problem = "must not contain control characters"
    elif "/" in name or "\\" in name:
        problem = "must not contain a slash"
    elif name in (".", ".."):
        problem = "must not be '.' or '..'"
    elif name != name.strip():
        problem = "must not begin or end with blanks"
    elif name in RESERVED_NAMES or f"/{name}" in RESERVED_NAMES or any(p.match(name) for p in RESERVED_PATTERNS):
        problem = f"{name!r} is a reserved name"
    if problem is not None:
        raise errors.InvalidAPIParameters(f"invalid vfolder {what}: {problem}", {what: problem})


def _uuid_text(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def created_reply(folder: Any, creator: str) -> dict[str, Any]:
    """POST /folders' answer (wire/11)."""
    return {
        "id": folder.id.hex, "name": folder.name, "quota_scope_id": folder.quota_scope_id, "host": folder.host,
        "usage_mode": folder.usage_mode, "permission": folder.permission, "max_size": 0, "creator": creator,
        "ownership_type": folder.ownership_type, "user": _uuid_text(folder.user), "group": _uuid_text(folder.group),
        "cloneable": folder.cloneable, "status": folder.status,
    }


def list_entry(f: Folder) -> dict[str, Any]:
    """One item of GET /folders (wire/13)."""
    return {
        "name": f.name, "id": f.id.hex, "quota_scope_id": f.quota_scope_id, "host": f.host, "status": f.status,
        "usage_mode": f.usage_mode, "created_at": str(f.created_at), "is_owner": f.is_owner,
        "permission": f.permission, "user": _uuid_text(f.user), "group": _uuid_text(f.group),
        "creator": f.creator, "user_email": f.user_email, "group_name": f.group_name,
        "ownership_type": f.ownership_type, "type": f.ownership_type, "cloneable": f.cloneable,
        "max_files": f.max_files, "max_size": None, "cur_size": f.cur_size,
    }


# ------------------------------------------------------------------ create


@dataclass(frozen=True)
class CreateRequest:
    name: str
    host: str | None = None
    usage_mode: str = "general"
    permission: str = "rw"
    group: str | None = None
    unmanaged_path: str | None = None
    cloneable: bool = False


async def create(ctx: ManagerContext, req: Requester, params: CreateRequest) -> dict[str, Any]:
    check_name(params.name)
    if params.usage_mode not in USAGE_MODES:
        raise errors.InvalidAPIParameters(f"usage_mode must be one of {', '.join(USAGE_MODES)}")
    if params.permission not in access.PERMISSIONS:
        raise errors.InvalidAPIParameters(f"permission must be one of {', '.join(access.PERMISSIONS)}")
    if params.unmanaged_path is not None:
        if req.role not in ("admin", "superadmin"):
            raise errors.GenericForbidden("only admins may register unmanaged folders")
        raise errors.InvalidAPIParameters("unmanaged folders are not supported by this storage backend")
    config = await proxies.volume_config(ctx)
    host = params.host or config.default_host
    if not host:
        raise errors.InvalidAPIParameters("no host given and no default vfolder host is configured")
    proxy, volume = proxies.split_host(host)
    if proxy not in config.proxies:
        raise errors.InvalidAPIParameters(f"unknown storage host {host!r}")
    ownership = "group" if params.group else "user"
    if ownership not in config.types:
        raise errors.InvalidAPIParameters(f"{ownership} vfolders are not enabled on this cluster")
    async with ctx.db.begin() as conn:
        group_id: uuid.UUID | None = None
        if params.group:
            project = await store.project_in_domain(conn, req.domain_name, params.group)
            if project is None:
                raise errors.GroupNotFound(f"no project {params.group!r} in domain {req.domain_name!r}")
            if req.role not in ("admin", "superadmin"):
                raise errors.GenericForbidden("only admins may create project folders")
            if params.name.startswith(".") and params.name != ".local":
                raise errors.InvalidAPIParameters("project folders cannot be dot-prefixed (except .local)")
            group_id = project.id
            max_count, max_scope_size = await store.project_policy_limits(conn, group_id)
            quota_scope_id = f"project:{group_id}"
        else:
            max_count, max_scope_size = await store.user_policy_limits(conn, req.user_uuid)
            quota_scope_id = f"user:{req.user_uuid}"
        await access.require_host_permission(ctx, req, host, "create-vfolder", group_id, conn=conn)
        owner = {"user": req.user_uuid} if group_id is None else {"group": group_id}
        count = await store.owned_count(conn, **owner, lock=True)
        if max_count > 0 and count >= max_count:
            raise errors.InvalidAPIParameters(
                f"You cannot create more vfolders: the resource policy allows {max_count}.")
        if await store.name_taken(conn, params.name, **owner):
            raise errors.VFolderAlreadyExists(f"a vfolder named {params.name!r} already exists")
        folder_id = uuid.uuid4()
        row = await store.insert_folder(conn, {
            "id": folder_id, "host": host, "quota_scope_id": quota_scope_id, "name": params.name,
            "usage_mode": params.usage_mode, "permission": params.permission, "creator": req.email,
            "ownership_type": ownership, "user": owner.get("user"), "group": owner.get("group"),
            "cloneable": params.cloneable, "status": "ready",
        })
        options: dict[str, Any] = {}
        if max_scope_size > 0:
            options["initial_max_size_for_quota_scope"] = max_scope_size
        # Inside the transaction: a proxy that fails leaves no row behind.
        await proxies.call(ctx, proxy, "POST", "/folder/create",
                           {"volume": volume, "vfid": f"{quota_scope_id}/{folder_id.hex}", "options": options},
                           not_found=errors.VFolderCreationFailed)
    return created_reply(row, req.email)


# ------------------------------------------------------------------ reads


async def list_folders(ctx: ManagerContext, req: Requester, *, group_id: uuid.UUID | None = None,
                       owner_user_email: str | None = None) -> list[dict[str, Any]]:
    types = await access.allowed_types(ctx)
    async with ctx.db.connect() as conn:
        if owner_user_email is not None:
            if req.role not in ("admin", "superadmin"):
                raise errors.GenericForbidden("only admins may list another user's folders")
            owner = await store.user_by_email(conn, owner_user_email)
            if owner is None or (req.role == "admin" and owner.domain_name != req.domain_name):
                raise errors.ObjectNotFound("no such user")
            reach = await access.reach_of_user(conn, owner.uuid, owner.role, owner.domain_name)
        else:
            reach = await access.reach_of(conn, req)
        folders = await access.reachable_by(conn, reach, types, statuses=LISTED_STATUSES)
    if group_id is not None:  # that project's folders and the user's own
        folders = [f for f in folders if f.group is None or f.group == group_id]
    return [list_entry(f) for f in folders]


async def info(ctx: ManagerContext, req: Requester, name: str) -> dict[str, Any]:
    folder = await access.resolve(ctx, req, name)
    usage = await proxies.call(ctx, folder.proxy, "GET", "/folder/usage", {"volume": folder.volume, "vfid": folder.vfid},
                               not_found=errors.VFolderNotFound) or {}
    num_files = int(usage.get("file_count") or 0)
    return {
        "name": folder.name, "id": folder.id.hex, "host": folder.host, "quota_scope_id": folder.quota_scope_id,
        "status": folder.status, "numFiles": num_files, "num_files": num_files,
        "used_bytes": int(usage.get("used_bytes") or 0), "created": str(folder.created_at),
        "created_at": str(folder.created_at), "last_used": None if folder.last_used is None else str(folder.last_used),
        "user": _uuid_text(folder.user), "group": _uuid_text(folder.group), "type": folder.ownership_type,
        "is_owner": folder.is_owner, "permission": folder.permission, "usage_mode": folder.usage_mode,
        "cloneable": folder.cloneable, "max_size": folder.max_size, "cur_size": folder.cur_size,
    }


#: ``_/id`` looks among live folders first, then the trash, then the deleted (purge finds those).
_ID_LOOKUP_ORDER = (store.LIVE_STATUSES, {store.TRASH_STATUS}, {"delete-ongoing", "delete-error"},
                    {"delete-complete"})


async def id_by_name(ctx: ManagerContext, req: Requester, name: str) -> dict[str, str]:
    for statuses in _ID_LOOKUP_ORDER:
        found = await access.reachable(ctx, req, statuses=statuses, name=name)
        if len(found) > 1:
            raise errors.TooManyVFoldersFound(f"{len(found)} virtual folders named {name!r} are reachable")
        if found:
            return {"id": found[0].id.hex, "name": found[0].name}
    raise errors.InvalidAPIParameters(f"no virtual folder named {name!r}")


# ------------------------------------------------------------------ changes


async def rename(ctx: ManagerContext, req: Requester, name: str, new_name: str) -> None:
    check_name(new_name, "new_name")
    async with ctx.db.begin() as conn:
        folder = await access.resolve(ctx, req, name, owner_only=True, conn=conn)
        await access.require_host_permission(ctx, req, folder.host, "modify-vfolder", folder.group, conn=conn)
        if new_name == folder.name:
            return
        owner = {"user": folder.user} if folder.user is not None else {"group": folder.group}
        await store.owned_count(conn, **owner, lock=True)  # serialise with creations of this owner
        if await store.name_taken(conn, new_name, **owner):
            raise errors.VFolderAlreadyExists(f"a vfolder named {new_name!r} already exists")
        await store.update_folder(conn, folder.id, {"name": new_name})


async def update_options(ctx: ManagerContext, req: Requester, name: str, *, permission: str | None,
                         cloneable: bool | None) -> None:
    if permission is not None and permission not in access.PERMISSIONS:
        raise errors.InvalidAPIParameters(f"permission must be one of {', '.join(access.PERMISSIONS)}")
    async with ctx.db.begin() as conn:
        folder = await access.resolve(ctx, req, name, owner_only=True, conn=conn)
        await access.require_host_permission(ctx, req, folder.host, "modify-vfolder", folder.group, conn=conn)
        values: dict[str, Any] = {}
        if permission is not None:
            values["permission"] = permission
        if cloneable is not None:
            values["cloneable"] = cloneable
        if values:
            await store.update_folder(conn, folder.id, values)


async def move_to_trash(ctx: ManagerContext, req: Requester, *, name: str | None = None,
                        folder_id: uuid.UUID | None = None) -> None:
    """DELETE /folders/{name} and DELETE /folders: the folder goes to the trash (status
    delete-pending); its shares and pending invitations go with it."""
    async with ctx.db.begin() as conn:
        if name is not None:
            folder = await access.resolve(ctx, req, name, conn=conn)
        else:
            assert folder_id is not None
            folder = await access.by_id(ctx, req, folder_id, statuses=store.LIVE_STATUSES, conn=conn)
        if not folder.is_owner:
            raise errors.InvalidAPIParameters("Cannot delete the vfolder that is not owned by myself.")
        await access.require_host_permission(ctx, req, folder.host, "delete-vfolder", folder.group, conn=conn)
        if not await store.set_status(conn, folder.id, store.TRASH_STATUS, only_from=store.LIVE_STATUSES):
            raise errors.VFolderOperationFailed("the folder is no longer live")
        await store.drop_shares(conn, folder.id)


async def _trashed(ctx: ManagerContext, req: Requester, folder_id: uuid.UUID, conn: Any) -> Folder:
    folder = await access.by_id(ctx, req, folder_id, statuses={store.TRASH_STATUS}, admin_reach=True, conn=conn)
    if not folder.is_owner and folder.via != "admin":
        raise errors.VFolderPermissionError("only the folder's owner or an admin may do this")
    return folder


async def restore(ctx: ManagerContext, req: Requester, folder_id: uuid.UUID) -> None:
    async with ctx.db.begin() as conn:
        folder = await _trashed(ctx, req, folder_id, conn)
        owner = {"user": folder.user} if folder.user is not None else {"group": folder.group}
        await store.owned_count(conn, **owner, lock=True)
        if await store.name_taken(conn, folder.name, **owner):
            raise errors.VFolderAlreadyExists(
                f"a live vfolder named {folder.name!r} exists: rename it before restoring this one")
        await store.set_status(conn, folder.id, "ready", only_from={store.TRASH_STATUS})


async def delete_forever(ctx: ManagerContext, req: Requester, folder_id: uuid.UUID) -> None:
    """POST /folders/delete-from-trash-bin: the proxy deletes the data, the row stays as
    delete-complete (purge removes it). A proxy that cannot be reached leaves it in the trash."""
    async with ctx.db.begin() as conn:
        folder = await _trashed(ctx, req, folder_id, conn)
        await access.require_host_permission(ctx, req, folder.host, "delete-vfolder", folder.group, conn=conn)
        if await store.mounted_by_live_session(conn, folder.vfid):  # its data is in use: keep it
            raise errors.VFolderOperationFailed(
                "a session that mounts this folder is still running: destroy it first")
        if not await store.set_status(conn, folder.id, "delete-ongoing", only_from={store.TRASH_STATUS}):
            raise errors.VFolderOperationFailed("the folder is no longer in the trash")
    try:
        await proxies.call(ctx, folder.proxy, "POST", "/folder/delete", {"volume": folder.volume, "vfid": folder.vfid},
                           deadline=SLOW_CALL_DEADLINE, not_found=errors.VFolderNotFound)
    except errors.StorageProxyUnavailable:
        async with ctx.db.begin() as conn:
            await store.set_status(conn, folder.id, store.TRASH_STATUS, only_from={"delete-ongoing"})
        raise
    except errors.ApiError as exc:
        gone = isinstance(exc, errors.VFolderOperationFailed) and "not found" in str(exc.msg or "").lower()
        if not gone:  # already gone is what we wanted; anything else is recorded
            async with ctx.db.begin() as conn:
                await store.set_status(conn, folder.id, "delete-error", only_from={"delete-ongoing"})
            raise
    async with ctx.db.begin() as conn:
        await store.set_status(conn, folder.id, "delete-complete", only_from={"delete-ongoing"})


async def purge(ctx: ManagerContext, req: Requester, folder_id: uuid.UUID) -> None:
    """POST /folders/purge (admins): the row of a deleted folder goes away."""
    if req.role not in ("admin", "superadmin"):
        raise errors.GenericForbidden("only admins may purge folders")
    async with ctx.db.begin() as conn:
        folder = await access.by_id(ctx, req, folder_id, statuses=None, admin_reach=True, conn=conn)
        if folder.status not in store.PURGABLE_STATUSES:
            raise errors.InvalidAPIParameters(
                f"the folder is {folder.status}: only deleted folders (delete-complete, delete-error) can be purged")
        await store.delete_folder_row(conn, folder.id)


# ------------------------------------------------------------------ hosts, types, usage


async def _volumes(ctx: ManagerContext, proxy: str) -> dict[str, dict[str, Any]]:
    reply = await proxies.call(ctx, proxy, "GET", "/volumes", deadline=HOSTS_CALL_DEADLINE)
    vols = reply.get("volumes") if isinstance(reply, dict) else None
    return {str(v.get("name")): v for v in vols or [] if isinstance(v, dict)}


async def hosts(ctx: ManagerContext, req: Requester, group_id: uuid.UUID | None = None) -> dict[str, Any]:
    """GET /folders/_/hosts: the hosts the caller holds any permission on that a proxy serves;
    a proxy that does not answer is left out of volume_info (the listing still works)."""
    config = await proxies.volume_config(ctx)
    granted = await access.allowed_hosts(ctx, req, group_id)
    allowed = sorted(h for h, perms in granted.items() if perms and h.partition(":")[0] in config.proxies)
    volume_info: dict[str, Any] = {}
    by_proxy: dict[str, dict[str, dict[str, Any]]] = {}
    for host in allowed:
        proxy, _, volume = host.partition(":")
        if proxy not in by_proxy:
            try:
                by_proxy[proxy] = await _volumes(ctx, proxy)
            except errors.ApiError:
                by_proxy[proxy] = {}
        vol = by_proxy[proxy].get(volume)
        if vol is None:
            continue
        usage: dict[str, Any] = {}
        if config.exposed_volume_info:
            try:
                fs = await proxies.call(ctx, proxy, "GET", "/folder/fs-usage", {"volume": volume},
                                        deadline=HOSTS_CALL_DEADLINE) or {}
                used, capacity = int(fs.get("used_bytes") or 0), int(fs.get("capacity_bytes") or 0)
                figures = {"used_bytes": used, "capacity_bytes": capacity,
                           "percentage": (used / capacity * 100) if capacity else 0.0}
                usage = {k: figures[k] for k in config.exposed_volume_info if k in figures}
            except (errors.ApiError, ValueError, TypeError):
                usage = {}
        volume_info[host] = {
            "backend": vol.get("backend"), "capabilities": vol.get("capabilities") or [], "usage": usage,
            "sftp_scaling_groups": list(config.proxies[proxy].sftp_scaling_groups),
        }
    default = config.default_host if config.default_host in allowed else None
    return {"default": default, "allowed": allowed, "volume_info": volume_info}


async def all_hosts(ctx: ManagerContext, req: Requester) -> dict[str, Any]:
    """GET /folders/_/all-hosts (superadmins): every volume of every proxy that answers."""
    if req.role != "superadmin":
        raise errors.GenericForbidden("superadmin privilege required")
    config = await proxies.volume_config(ctx)
    every: list[str] = []
    for proxy in sorted(config.proxies):
        try:
            every.extend(f"{proxy}:{v}" for v in sorted(await _volumes(ctx, proxy)))
        except errors.ApiError:
            continue
    return {"default": config.default_host, "allowed": every}


async def usage(ctx: ManagerContext, req: Requester, host: str, folder_id: uuid.UUID, *, bytes_only: bool) -> Any:
    """GET /folders/_/usage and /_/used-bytes (superadmins)."""
    if req.role != "superadmin":
        raise errors.GenericForbidden("superadmin privilege required")
    folder = await access.by_id(ctx, req, folder_id, statuses=None, admin_reach=True)
    if folder.host != host:
        raise errors.VFolderNotFound(f"no virtual folder with ID {folder_id.hex} on {host!r}")
    path = "/folder/used-bytes" if bytes_only else "/folder/usage"
    return await proxies.call(ctx, folder.proxy, "GET", path, {"volume": folder.volume, "vfid": folder.vfid},
                              not_found=errors.VFolderNotFound)


async def folder_quota(ctx: ManagerContext, req: Requester, host: str, folder_id: uuid.UUID,
                       size_bytes: int | None = None) -> Any:
    """GET / POST /folders/_/quota (the folder's owner or an admin): the legacy per-folder quota,
    which the proxy answers with the folder's quota scope (setting it is obsolete since v7)."""
    folder = await access.by_id(ctx, req, folder_id, statuses=store.LIVE_STATUSES, admin_reach=True)
    if not folder.is_owner and folder.via != "admin":
        raise errors.VFolderPermissionError("only the folder's owner or an admin may do this")
    if folder.host != host:
        raise errors.VFolderNotFound(f"no virtual folder with ID {folder_id.hex} on {host!r}")
    target = {"volume": folder.volume, "vfid": folder.vfid}
    if size_bytes is None:
        return await proxies.call(ctx, folder.proxy, "GET", "/volume/quota", target, not_found=errors.VFolderNotFound)
    await proxies.call(ctx, folder.proxy, "PATCH", "/volume/quota", {**target, "size_bytes": size_bytes},
                       not_found=errors.VFolderNotFound)
    return {"size_bytes": size_bytes}


async def performance_metric(ctx: ManagerContext, req: Requester, host: str) -> Any:
    """GET /folders/_/perf-metric (superadmins): the volume's metric object from its proxy."""
    if req.role != "superadmin":
        raise errors.GenericForbidden("superadmin privilege required")
    proxy, volume = proxies.split_host(host)
    await proxies.proxy_info(ctx, proxy)
    return await proxies.call(ctx, proxy, "GET", "/volume/performance-metric", {"volume": volume},
                              not_found=errors.VFolderNotFound)


async def change_ownership(ctx: ManagerContext, req: Requester, folder_id: uuid.UUID, user_email: str) -> None:
    """POST /folders/_/change-ownership (superadmins): a user folder gets another owner in the
    same domain. Its data stays where it is (its quota scope ID does not change), as the original."""
    if req.role != "superadmin":
        raise errors.GenericForbidden("superadmin privilege required")
    async with ctx.db.begin() as conn:
        folder = await access.by_id(ctx, req, folder_id, statuses=store.LIVE_STATUSES, admin_reach=True, conn=conn)
        if folder.ownership_type != "user" or folder.user is None:
            raise errors.InvalidAPIParameters("only user folders change owners")
        target = await store.user_by_email(conn, user_email)
        if target is None:
            raise errors.ObjectNotFound("no such user")
        if target.uuid == folder.user:
            return
        await store.owned_count(conn, user=target.uuid, lock=True)
        if await store.name_taken(conn, folder.name, user=target.uuid):
            raise errors.VFolderAlreadyExists(f"{user_email} already has a vfolder named {folder.name!r}")
        await store.update_folder(conn, folder.id, {"user": target.uuid})
        await store.drop_share_of(conn, folder.id, target.uuid)  # the owner needs no grant
