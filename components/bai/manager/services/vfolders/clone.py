"""Cloning a folder (``POST /folders/{name}/clone``): a new user folder of the caller, filled by
the storage proxy (``POST /folder/clone``) in a background task whose progress
``GET /events/background-task`` streams.

The new folder's row is written at once with status ``cloning`` (so its name is taken and it is
counted against ``max_vfolder_count``), the source goes to ``cloning`` too (a second clone or a
delete waits for it); when the copy is done both are ``ready``. A copy that fails leaves the
target in ``error`` (its owner deletes it) and the source ``ready`` again."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from bai.manager import errors
from bai.manager.services import bgtasks
from bai.manager.services.context import ManagerContext
from bai.manager.services.manager_admin import ensure_not_frozen
from bai.manager.store import vfolders as vf_store
from bai.manager.store.keypairs import Requester

from . import access, proxies
from .folders import SLOW_CALL_DEADLINE, USAGE_MODES, check_name

#: A clone copies a whole tree: it may take much longer than other proxy calls.
CLONE_DEADLINE = max(SLOW_CALL_DEADLINE, 3600.0)


@dataclass(frozen=True)
class CloneRequest:
    target_name: str
    target_host: str | None = None
    usage_mode: str = "general"
    permission: str = "rw"
    cloneable: bool = False


async def _settle(ctx: ManagerContext, source_id: uuid.UUID, target_id: uuid.UUID, target_status: str) -> None:
    async with ctx.db.begin() as conn:
        await vf_store.set_status(conn, target_id, target_status, only_from={"cloning"})
        await vf_store.set_status(conn, source_id, "ready", only_from={"cloning"})


async def clone(ctx: ManagerContext, req: Requester, name: str, params: CloneRequest) -> dict[str, Any]:
    ensure_not_frozen(ctx)
    check_name(params.target_name, "target_name")
    if params.usage_mode not in USAGE_MODES:
        raise errors.InvalidAPIParameters(f"usage_mode must be one of {', '.join(USAGE_MODES)}")
    if params.permission not in access.PERMISSIONS:
        raise errors.InvalidAPIParameters(f"permission must be one of {', '.join(access.PERMISSIONS)}")
    if "user" not in await access.allowed_types(ctx):
        raise errors.InvalidAPIParameters("user vfolders are not enabled on this cluster")
    target_id = uuid.uuid4()
    async with ctx.db.begin() as conn:
        source = await access.resolve(ctx, req, name, conn=conn)
        if not source.cloneable and not source.is_owner:
            raise errors.GenericForbidden("The source vfolder is not permitted to be cloned.")
        target_host = params.target_host or source.host
        target_proxy, target_volume = proxies.split_host(target_host)
        if target_proxy != source.proxy:
            raise errors.InvalidAPIParameters("proxy name of source and target vfolders must be equal.")
        await access.require_host_permission(ctx, req, target_host, "create-vfolder", conn=conn)
        max_count, _ = await vf_store.user_policy_limits(conn, req.user_uuid)
        count = await vf_store.owned_count(conn, user=req.user_uuid, lock=True)
        if max_count > 0 and count >= max_count:
            raise errors.InvalidAPIParameters(
                f"You cannot create more vfolders: the resource policy allows {max_count}.")
        if await vf_store.name_taken(conn, params.target_name, user=req.user_uuid):
            raise errors.VFolderAlreadyExists(f"a vfolder named {params.target_name!r} already exists")
        if not await vf_store.set_status(conn, source.id, "cloning", only_from={"ready"}):
            raise errors.VFolderOperationFailed(f"The source vfolder is {source.status}, not ready: try again later.")
        quota_scope_id = f"user:{req.user_uuid}"
        await vf_store.insert_folder(conn, {
            "id": target_id, "host": target_host, "quota_scope_id": quota_scope_id, "name": params.target_name,
            "usage_mode": params.usage_mode, "permission": params.permission, "creator": req.email,
            "ownership_type": "user", "user": req.user_uuid, "group": None, "cloneable": params.cloneable,
            "status": "cloning",
        })
    body = {"src_volume": source.volume, "src_vfid": source.vfid, "dst_volume": target_volume,
            "dst_vfid": f"{quota_scope_id}/{target_id.hex}", "options": {}}

    async def run(progress: bgtasks.Progress) -> str:
        await progress.update(total=1, message=f"cloning {source.name} to {params.target_name}")
        try:
            await proxies.call(ctx, source.proxy, "POST", "/folder/clone", body, deadline=CLONE_DEADLINE,
                               not_found=errors.VFolderNotFound)
        except BaseException:  # failed, or the manager is stopping: the copy is not to be trusted
            await asyncio.shield(_settle(ctx, source.id, target_id, "error"))
            raise
        await _settle(ctx, source.id, target_id, "ready")
        await progress.update(increment=1, message="cloned")
        return f"cloned {source.name} to {params.target_name}"

    try:
        task_id = await bgtasks.of(ctx).start(run, owner=req.access_key, name="vfolder-clone")
    except BaseException:
        async with ctx.db.begin() as conn:  # nothing will copy: undo what the request wrote
            await vf_store.delete_folder_row(conn, target_id)
            await vf_store.set_status(conn, source.id, "ready", only_from={"cloning"})
        raise
    return {
        "id": target_id.hex, "name": params.target_name, "host": target_host, "usage_mode": params.usage_mode,
        "permission": params.permission, "creator": req.email, "ownership_type": "user",
        "user": str(req.user_uuid), "group": None, "cloneable": params.cloneable, "bgtask_id": str(task_id),
    }
