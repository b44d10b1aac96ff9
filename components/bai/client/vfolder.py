"""Virtual folders: the manager's ``/folders`` API as the official SDK 24.03 calls it (same
methods, paths and bodies), plus uploads and downloads through the storage proxy
(:mod:`bai.client.transfer`).

Every call takes an open :class:`~bai.client.request.APISession`. Folder names go into URL paths,
so a name that would change the path (``/``, ``.`` or ``..``) is refused here, before any
request.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import aiohttp

from .exceptions import BackendClientError
from .request import APISession
from .transfer import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_RETRIES,
    DownloadStateStore,
    TransferError,
    UploadRefused,
    UploadSessionGone,
    UploadStateStore,
    download_to,
    storage_url,
    tus_offset,
    tus_upload,
)

__all__ = (
    "PERMISSIONS",
    "folder_path",
    "remote_path_of",
    "local_dest_of",
    "walk_sources",
    "UploadItem",
    "UploadResult",
    "DownloadResult",
    "list_hosts",
    "list_allowed_types",
    "create",
    "info",
    "delete",
    "get_id",
    "purge",
    "restore",
    "delete_trash",
    "rename",
    "update_options",
    "list_files",
    "mkdir",
    "rename_file",
    "move_file",
    "delete_files",
    "request_upload",
    "request_download",
    "invite",
    "invitations",
    "sent_invitations",
    "accept_invitation",
    "delete_invitation",
    "update_invitation",
    "share",
    "unshare",
    "leave",
    "clone",
    "list_shared",
    "update_shared",
    "upload_file",
    "download_file",
)

PERMISSIONS = ("ro", "rw", "wd")


def folder_path(name: str, *rest: str) -> str:
    """``/folders/<name>/<rest>``; names that are not one plain path segment are refused."""
    if not name or "/" in name or name in (".", "..") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise BackendClientError(f"Invalid virtual folder name: {name!r}")
    return "/".join(["/folders", name, *rest])


async def _json(api: APISession, method: str, path: str, body: Any = None, *,
                params: dict[str, str] | None = None) -> Any:
    if body is None:
        return await api.request_json(method, path, params=params)
    return await api.request_json(method, path, json_body=body, params=params)


async def _no_content(api: APISession, method: str, path: str, body: Any = None) -> None:
    if body is None:
        await api.request(method, path)
    else:
        await api.request(method, path, json_body=body)


# ---------------------------------------------------------------------------------------------
# folders


async def list_hosts(api: APISession, group_id: str | None = None) -> dict[str, Any]:
    params = {"group_id": group_id} if group_id else None
    return dict(await _json(api, "GET", "/folders/_/hosts", params=params) or {})


async def list_allowed_types(api: APISession) -> list[str]:
    return list(await _json(api, "GET", "/folders/_/allowed_types") or [])


async def create(api: APISession, name: str, host: str | None = None, *, unmanaged_path: str | None = None,
                 group: str | None = None, usage_mode: str = "general", permission: str = "rw",
                 cloneable: bool = False) -> dict[str, Any]:
    body = {
        "name": name, "host": host, "unmanaged_path": unmanaged_path, "group": group,
        "usage_mode": usage_mode, "permission": permission, "cloneable": cloneable,
    }
    return dict(await _json(api, "POST", "/folders", body))


async def info(api: APISession, name: str) -> dict[str, Any]:
    return dict(await _json(api, "GET", folder_path(name)))


async def delete(api: APISession, name: str) -> None:
    """Move the folder to the trash bin (``delete-pending``)."""
    await _no_content(api, "DELETE", folder_path(name))


async def get_id(api: APISession, name: str) -> str:
    """The folder's ID (hex) by name, as ``GET /folders/_/id`` answers it."""
    folder_path(name)  # validate
    data = await _json(api, "GET", "/folders/_/id", {"name": name})
    try:
        return uuid.UUID(str(data["id"])).hex
    except (TypeError, KeyError, ValueError) as e:
        raise BackendClientError("The API server answered no folder ID") from e


async def _id_of(api: APISession, name_or_id: str) -> str:
    """A folder ID as given (hex or hyphenated UUID: several trashed folders may share a name),
    else the ID of the folder of that name."""
    try:
        return uuid.UUID(name_or_id).hex
    except ValueError:
        return await get_id(api, name_or_id)


async def purge(api: APISession, name: str) -> None:
    await _no_content(api, "POST", "/folders/purge", {"id": await _id_of(api, name)})


async def restore(api: APISession, name: str) -> None:
    await _no_content(api, "POST", "/folders/restore-from-trash-bin", {"id": await _id_of(api, name)})


async def delete_trash(api: APISession, name: str) -> None:
    await _no_content(api, "POST", "/folders/delete-from-trash-bin", {"id": await _id_of(api, name)})


async def rename(api: APISession, name: str, new_name: str) -> None:
    await _no_content(api, "POST", folder_path(name, "rename"), {"new_name": new_name})


async def update_options(api: APISession, name: str, *, permission: str | None = None,
                         cloneable: bool | None = None) -> None:
    await _no_content(api, "POST", folder_path(name, "update-options"),
                      {"cloneable": cloneable, "permission": permission})


async def clone(api: APISession, name: str, target_name: str, *, target_host: str | None = None,
                usage_mode: str = "general", permission: str = "rw") -> dict[str, Any]:
    body = {"target_name": target_name, "target_host": target_host, "usage_mode": usage_mode,
            "permission": permission}
    return dict(await _json(api, "POST", folder_path(name, "clone"), body))


# ---------------------------------------------------------------------------------------------
# files


async def list_files(api: APISession, name: str, path: str = ".") -> dict[str, Any]:
    return dict(await _json(api, "GET", folder_path(name, "files"), params={"path": str(path)}))


async def mkdir(api: APISession, name: str, paths: str | Sequence[str], *, parents: bool = False,
                exist_ok: bool = False) -> Any:
    body = {"path": paths if isinstance(paths, str) else list(paths), "parents": parents, "exist_ok": exist_ok}
    reply = await _json(api, "POST", folder_path(name, "mkdir"), body)
    return reply.get("results", reply) if isinstance(reply, dict) else reply


async def rename_file(api: APISession, name: str, target_path: str, new_name: str) -> None:
    await _no_content(api, "POST", folder_path(name, "rename-file"),
                      {"target_path": target_path, "new_name": new_name})


async def move_file(api: APISession, name: str, src: str, dst: str) -> None:
    await _no_content(api, "POST", folder_path(name, "move-file"), {"src": src, "dst": dst})


async def delete_files(api: APISession, name: str, files: Sequence[str], *, recursive: bool = False) -> None:
    await _no_content(api, "DELETE", folder_path(name, "delete-files"),
                      {"files": list(files), "recursive": recursive})


async def request_upload(api: APISession, name: str, path: str, size: int) -> dict[str, Any]:
    return _token_reply(await _json(api, "POST", folder_path(name, "request-upload"),
                                    {"path": path, "size": int(size)}))


async def request_download(api: APISession, name: str, path: str, *, archive: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"path": path}
    if archive:
        body["archive"] = True
    return _token_reply(await _json(api, "POST", folder_path(name, "request-download"), body))


def _token_reply(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict) or not data.get("token") or not data.get("url"):
        raise BackendClientError("The API server answered no transfer token and url")
    return data


# ---------------------------------------------------------------------------------------------
# sharing


async def invite(api: APISession, name: str, perm: str, emails: Sequence[str]) -> dict[str, Any]:
    return dict(await _json(api, "POST", folder_path(name, "invite"), {"perm": perm, "user_ids": list(emails)}))


async def invitations(api: APISession) -> list[dict[str, Any]]:
    data = await _json(api, "GET", "/folders/invitations/list")
    return list((data or {}).get("invitations") or [])


async def sent_invitations(api: APISession) -> list[dict[str, Any]]:
    data = await _json(api, "GET", "/folders/invitations/list-sent")
    return list((data or {}).get("invitations") or [])


async def accept_invitation(api: APISession, inv_id: str) -> None:
    await _no_content(api, "POST", "/folders/invitations/accept", {"inv_id": inv_id})


async def delete_invitation(api: APISession, inv_id: str) -> None:
    """Reject (as the invitee) or cancel (as the inviter) an invitation."""
    await _no_content(api, "DELETE", "/folders/invitations/delete", {"inv_id": inv_id})


async def update_invitation(api: APISession, inv_id: str, perm: str) -> dict[str, Any]:
    return dict(await _json(api, "POST", f"/folders/invitations/update/{uuid.UUID(inv_id)}", {"perm": perm})
                or {})


async def share(api: APISession, name: str, perm: str, emails: Sequence[str]) -> dict[str, Any]:
    return dict(await _json(api, "POST", folder_path(name, "share"), {"permission": perm, "emails": list(emails)}))


async def unshare(api: APISession, name: str, emails: Sequence[str]) -> dict[str, Any]:
    return dict(await _json(api, "DELETE", folder_path(name, "unshare"), {"emails": list(emails)}))


async def leave(api: APISession, name: str, shared_user_uuid: str | None = None) -> dict[str, Any]:
    return dict(await _json(api, "POST", folder_path(name, "leave"), {"shared_user_uuid": shared_user_uuid})
                or {})


async def list_shared(api: APISession, vfolder_id: str | None = None) -> list[dict[str, Any]]:
    params = {"vfolder_id": vfolder_id} if vfolder_id else None
    data = await _json(api, "GET", "/folders/_/shared", params=params)
    return list((data or {}).get("shared") or [])


async def update_shared(api: APISession, vfolder_id: str, user_id: str, perm: str | None) -> dict[str, Any]:
    return dict(await _json(api, "POST", "/folders/_/shared",
                            {"vfolder": vfolder_id, "user": user_id, "perm": perm}) or {})


# ---------------------------------------------------------------------------------------------
# local <-> remote paths


def remote_path_of(source: Path, base: Path) -> str:
    """The path inside the folder for a local ``source``: its path relative to ``base``
    (``-b``, default the working directory), in POSIX form. Sources outside ``base`` are refused
    rather than silently flattened."""
    src = Path(os.path.abspath(base / source))
    root = Path(os.path.abspath(base))
    try:
        rel = src.relative_to(root)
    except ValueError:
        raise BackendClientError(
            f"{source} is outside the base directory {root}; pass -b/--base-dir to upload it"
        ) from None
    if not rel.parts:
        raise BackendClientError(f"{source} is the base directory itself; name the files to upload")
    return PurePosixPath(*rel.parts).as_posix()


def local_dest_of(remote: str, base: Path) -> Path:
    """Where a download of the folder path ``remote`` lands under ``base``; a path that would
    escape ``base`` (absolute, ``..``) is refused."""
    pure = PurePosixPath(remote)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts or remote.strip() in ("", "."):
        if remote.strip() in ("", ".", "/"):
            return Path(os.path.abspath(base))
        raise BackendClientError(f"Invalid path to download: {remote!r} (it must stay inside the folder)")
    return Path(os.path.abspath(base)).joinpath(*pure.parts)


@dataclass(frozen=True)
class UploadItem:
    local: Path
    remote: str
    size: int


def walk_sources(sources: Sequence[Path], base: Path, *, recursive: bool) -> tuple[list[str], list[UploadItem]]:
    """The directories to create (parents first) and the files to upload for ``sources``.

    Directories need ``recursive``; symlinked directories are not followed (no loops), symlinked
    files are uploaded as their content; other special files are refused.
    """
    dirs: list[str] = []
    files: list[UploadItem] = []

    def add_file(path: Path) -> None:
        st = path.stat()
        if not _is_regular(st.st_mode):
            raise BackendClientError(f"{path} is not a regular file")
        files.append(UploadItem(path, remote_path_of(path, base), st.st_size))

    for src in sources:
        path = Path(os.path.abspath(base / src))  # absolute: remote_path_of joins no base again
        if not path.exists():
            raise BackendClientError(f"{src}: no such file or directory")
        if path.is_dir():
            if not recursive:
                raise BackendClientError(f"{src} is a directory; use -r/--recursive to upload directories")
            dirs.append(remote_path_of(path, base))
            for root, subdirs, names in _walk(path):
                subdirs.sort()
                for d in subdirs:
                    dirs.append(remote_path_of(root / d, base))
                for n in sorted(names):
                    add_file(root / n)
        else:
            add_file(path)
    return dirs, files


def _walk(top: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    for root, subdirs, names in os.walk(top, followlinks=False):
        # a symlink to a directory shows in subdirs; it is neither walked nor created
        real_dirs = [d for d in subdirs if not os.path.islink(os.path.join(root, d))]
        subdirs[:] = real_dirs
        yield Path(root), subdirs, names


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


# ---------------------------------------------------------------------------------------------
# transfers


@dataclass
class UploadResult:
    path: str
    size: int
    resumed_from: int


@dataclass
class DownloadResult:
    path: str
    dest: str
    size: int
    archive: bool


def _identity(api: APISession) -> str:
    return f"{api.config.endpoint}|{api.config.access_key}"


async def upload_file(
    api: APISession,
    name: str,
    item: UploadItem,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    state: UploadStateStore | None = None,
    progress: Callable[[int], None] | None = None,
) -> UploadResult:
    """Upload one file (tus); an unfinished earlier upload of the same file and target is
    resumed from the proxy's offset. The state file is removed once the upload completes."""
    store = state if state is not None else UploadStateStore()
    key = store.key_for(_identity(api), name, item.remote, item.local)
    saved = store.load(key)
    offset = 0
    url = None
    if saved and saved.get("size") == item.size:
        url = storage_url(str(saved["url"]), str(saved["token"]), api.config.storage_proxy_address_map)
        try:
            offset, length = await tus_offset(api.http, url)
            if length is not None and length != item.size:
                url, offset = None, 0
        except (UploadSessionGone, TransferError, aiohttp.ClientError, TimeoutError):
            url, offset = None, 0  # the proxy does not know it (any more): start afresh
        if url is None:
            store.remove(key)
    resumed_from = offset
    if url is None:
        ticket = await request_upload(api, name, item.remote, item.size)
        store.save(key, {"url": ticket["url"], "token": ticket["token"], "size": item.size,
                         "folder": name, "path": item.remote})
        url = storage_url(str(ticket["url"]), str(ticket["token"]), api.config.storage_proxy_address_map)
    try:
        await tus_upload(api.http, url, item.local, size=item.size, offset=offset, chunk_size=chunk_size,
                         progress=progress)
    except UploadRefused:
        store.remove(key)  # the proxy dropped the session: nothing left to resume
        raise
    store.remove(key)
    return UploadResult(item.remote, item.size, resumed_from)


async def download_file(
    api: APISession,
    name: str,
    remote: str,
    dest: Path,
    *,
    archive: bool = False,
    state: DownloadStateStore | None = None,
    retries: int = DEFAULT_RETRIES,
    progress: Callable[[int, int | None], None] | None = None,
) -> DownloadResult:
    """Download one file (or, with ``archive``, a directory as a zip) to ``dest``; an existing
    ``dest`` is never overwritten."""
    if await asyncio.to_thread(dest.exists):
        raise BackendClientError(f"The target file already exists: {dest}")
    await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
    ticket = await request_download(api, name, remote, archive=archive)
    url = storage_url(str(ticket["url"]), str(ticket["token"]), api.config.storage_proxy_address_map)
    if archive:
        url = url.update_query({"archive": "true"})
    store = state if state is not None else DownloadStateStore()
    key = store.key_for(_identity(api), name, remote, dest)
    size = await download_to(api.http, url, dest, state=store, state_key=key, retries=retries, progress=progress)
    return DownloadResult(remote, str(dest), size, archive)
