"""Files inside a folder: list, mkdir, rename, move, delete (forwarded to the storage proxy),
and the upload / download tokens a client takes to the proxy's client-facing API.

Reading needs the folder's ``ro``, writing ``rw``; uploads and downloads also need the
``upload-file`` / ``download-file`` volume-host permission. Paths are checked here before they
travel (relative, no ``..`` segment, no control characters), and the proxy confines them again
against the real filesystem (symlinks included)."""

from __future__ import annotations

import json
import stat
import unicodedata
from datetime import datetime
from typing import Any

from bai.manager import errors
from bai.manager.services.context import ManagerContext
from bai.manager.store.keypairs import Requester

from . import access, proxies
from .access import Folder

MAX_PATH_LENGTH = 4096
#: Most paths one mkdir or delete-files call takes.
MAX_PATHS = 50
MAX_DELETE_PATHS = 1000


def relpath(text: str, what: str = "path", *, allow_root: bool = True) -> str:
    """A path inside the folder as the client gave it, refused with 400 when it is absolute,
    climbs with ``..``, holds control characters or is the root where a file is needed."""
    problem = None
    parts = text.replace("\\", "/").split("/")
    if len(text) > MAX_PATH_LENGTH:
        problem = f"is longer than {MAX_PATH_LENGTH} characters"
    elif any(unicodedata.category(ch) == "Cc" for ch in text):
        problem = "must not contain control characters"
    elif text.startswith(("/", "\\")):
        problem = "must be relative to the folder"
    elif ".." in parts:
        problem = "must not contain '..' segments"
    elif not allow_root and all(p in ("", ".") for p in parts):
        problem = "must name something inside the folder"
    if problem is not None:
        raise errors.InvalidAPIParameters(f"invalid {what}: {problem}", {what: problem})
    return text or "."


def _target(folder: Folder) -> dict[str, Any]:
    return {"volume": folder.volume, "vfid": folder.vfid}


async def _writable(ctx: ManagerContext, req: Requester, name: str) -> Folder:
    return await access.resolve(ctx, req, name, need="rw")


def _iso(value: Any) -> str:
    return str(value) if value is not None else ""


def _timestamp(value: Any) -> float:
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return 0.0


def _mode(value: Any) -> int:
    if isinstance(value, int):
        return value
    try:
        return int(str(value), 8)
    except ValueError:
        return 0


async def list_files(ctx: ManagerContext, req: Requester, name: str, path: str) -> dict[str, Any]:
    """GET /folders/{name}/files (wire/35): ``items`` and the legacy ``files`` JSON text."""
    folder = await access.resolve(ctx, req, name)
    reply = await proxies.call(ctx, folder.proxy, "POST", "/folder/file/list",
                               {**_target(folder), "relpath": relpath(path)}) or {}
    items: list[dict[str, Any]] = []
    legacy: list[dict[str, Any]] = []
    for entry in reply.get("items") or []:
        st = entry.get("stat") or {}
        mode = _mode(st.get("mode"))
        size = int(st.get("size") or 0)
        items.append({"name": entry.get("name"), "type": entry.get("type"), "size": size,
                      "mode": oct(mode)[-3:], "created": _iso(st.get("created")), "modified": _iso(st.get("modified"))})
        legacy.append({"filename": entry.get("name"), "size": size, "mode": stat.filemode(mode),
                       "ctime": _timestamp(st.get("created")), "atime": 0, "mtime": _timestamp(st.get("modified"))})
    return {"items": items, "files": json.dumps(legacy)}


async def mkdir(ctx: ManagerContext, req: Requester, name: str, path: str | list[str], *, parents: bool,
                exist_ok: bool) -> tuple[int, Any]:
    """POST /folders/{name}/mkdir: the proxy's answer and status relayed (201, or 207 when some
    of several paths failed)."""
    paths = [path] if isinstance(path, str) else path
    if not paths or len(paths) > MAX_PATHS:
        raise errors.InvalidAPIParameters(f"path takes 1 to {MAX_PATHS} paths")
    checked = [relpath(p, allow_root=False) for p in paths]
    folder = await _writable(ctx, req, name)
    status, reply = await proxies.request(ctx, folder.proxy, "POST", "/folder/file/mkdir", {
        **_target(folder), "relpath": checked[0] if isinstance(path, str) else checked,
        "parents": parents, "exist_ok": exist_ok})
    return status, {"results": result_set(reply.get("results") if isinstance(reply, dict) else None)}


def result_set(results: Any) -> dict[str, list[dict[str, Any]]]:
    """The original's ResultSet (``{"success": [{"item", "msg"}], "failed": [...]}``, what the
    official client prints), from a proxy's per-path list (``[{"relpath", "status", "msg"}]``)
    or passed through when the proxy already answers one."""
    if isinstance(results, dict) and isinstance(results.get("success"), list):
        return {"success": list(results["success"]), "failed": list(results.get("failed") or [])}
    out: dict[str, list[dict[str, Any]]] = {"success": [], "failed": []}
    for entry in results if isinstance(results, list) else []:
        if isinstance(entry, dict):
            ok = entry.get("status") == "success"
            out["success" if ok else "failed"].append({"item": entry.get("relpath"), "msg": entry.get("msg")})
    return out


async def rename_file(ctx: ManagerContext, req: Requester, name: str, target_path: str, new_name: str) -> None:
    path = relpath(target_path, "target_path", allow_root=False)
    if not new_name or "/" in new_name or "\\" in new_name or new_name in (".", ".."):
        raise errors.InvalidAPIParameters("invalid new_name: must be a plain file name", {"new_name": "invalid"})
    relpath(new_name, "new_name", allow_root=False)
    folder = await _writable(ctx, req, name)
    await proxies.call(ctx, folder.proxy, "POST", "/folder/file/rename",
                       {**_target(folder), "relpath": path, "new_name": new_name})


async def move_file(ctx: ManagerContext, req: Requester, name: str, src: str, dst: str) -> None:
    src_path, dst_path = relpath(src, "src", allow_root=False), relpath(dst, "dst", allow_root=False)
    folder = await _writable(ctx, req, name)
    await proxies.call(ctx, folder.proxy, "POST", "/folder/file/move",
                       {**_target(folder), "src_relpath": src_path, "dst_relpath": dst_path})


async def delete_files(ctx: ManagerContext, req: Requester, name: str, files: list[str], recursive: bool) -> None:
    if not files or len(files) > MAX_DELETE_PATHS:
        raise errors.InvalidAPIParameters(f"files takes 1 to {MAX_DELETE_PATHS} paths")
    paths = [relpath(f, "files", allow_root=False) for f in files]
    folder = await _writable(ctx, req, name)
    await proxies.call(ctx, folder.proxy, "POST", "/folder/file/delete",
                       {**_target(folder), "relpaths": paths, "recursive": recursive})


async def _client_url(ctx: ManagerContext, folder: Folder, endpoint: str) -> str:
    info = await proxies.proxy_info(ctx, folder.proxy)
    if not info.client_api:
        raise errors.StorageProxyUnavailable(f"storage proxy {folder.proxy!r} has no client_api configured")
    return info.client_api.rstrip("/") + endpoint


async def _transfer_folder(ctx: ManagerContext, req: Requester, name: str, need: str, permission: str) -> Folder:
    """The folder a token is asked for, checked: its permission (``need``) and the volume-host
    ``permission``. These run once per file a client moves, so they share one connection in
    autocommit mode (only reads: no BEGIN/ROLLBACK round trips) that goes back to the pool
    before the proxy is called, and the host grants come from a cache of a few seconds."""
    async with ctx.db.connect() as conn:
        reads = await conn.execution_options(isolation_level="AUTOCOMMIT")
        folder = await access.resolve(ctx, req, name, need=need, conn=reads)
        await access.require_transfer_permission(ctx, req, folder.host, permission, folder.group, reads)
    return folder


async def request_upload(ctx: ManagerContext, req: Requester, name: str, path: str, size: int) -> dict[str, str]:
    """POST /folders/{name}/request-upload: a tus upload session at the proxy and its token."""
    target = relpath(path, allow_root=False)
    if size < 0:
        raise errors.InvalidAPIParameters("size must not be negative")
    folder = await _transfer_folder(ctx, req, name, "rw", "upload-file")
    reply = await proxies.call(ctx, folder.proxy, "POST", "/folder/file/upload",
                               {**_target(folder), "relpath": target, "size": size}) or {}
    return {"token": str(reply.get("token", "")), "url": await _client_url(ctx, folder, "/upload")}


async def request_download(ctx: ManagerContext, req: Requester, name: str, path: str,
                           archive: bool) -> dict[str, str]:
    """POST /folders/{name}/request-download: a download token for the proxy."""
    target = relpath(path)
    folder = await _transfer_folder(ctx, req, name, "ro", "download-file")
    reply = await proxies.call(ctx, folder.proxy, "POST", "/folder/file/download",
                               {**_target(folder), "relpath": target, "archive": archive,
                                "unmanaged_path": None}) or {}
    return {"token": str(reply.get("token", "")), "url": await _client_url(ctx, folder, "/download")}
