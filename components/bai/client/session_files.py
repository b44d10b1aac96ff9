"""Files in and out of a session's /home/work, sending what the official SDK 24.03 sends.

* :func:`upload` — ``POST /session/{ref}/upload``: multipart/form-data, one ``src`` part per file,
  its filename the path relative to ``basedir`` (default: the current directory)
* :func:`download` — ``POST /session/{ref}/download`` ``{"files": [...]}``: multipart/mixed of tar
  archives, extracted into ``dest`` (members that would land outside it are refused)
* :func:`list_files` — ``GET /session/{ref}/files`` with a JSON body ``{"path"}``
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from .exceptions import BackendAPIError, BackendClientError
from .request import APISession

__all__ = ("upload", "download", "list_files")

_CHUNK = 256 * 1024


def _params(owner_access_key: str | None) -> dict[str, str]:
    return {"owner_access_key": owner_access_key} if owner_access_key else {}


async def _raise_for_status(resp: aiohttp.ClientResponse) -> None:
    if resp.status // 100 != 2:
        raise BackendAPIError(resp.status, resp.reason or "", await resp.read())


def relative_paths(files: Sequence[str | Path], basedir: str | Path | None = None) -> list[tuple[Path, str]]:
    """``(local path, path in the session)`` for each file, relative to ``basedir``."""
    base = Path.cwd() if basedir is None else Path(basedir).resolve()
    out: list[tuple[Path, str]] = []
    for file in files:
        local = Path(file).resolve()
        try:
            out.append((local, local.relative_to(base).as_posix()))
        except ValueError:
            raise BackendClientError(f'File "{local}" is outside of the base directory "{base}".') from None
    return out


async def upload(api: APISession, ref: str, files: Sequence[str | Path], *, basedir: str | Path | None = None,
                 owner_access_key: str | None = None) -> None:
    """Upload ``files`` into the session's /home/work, keeping their paths relative to ``basedir``."""
    form = aiohttp.FormData()
    handles = []
    try:
        for local, remote in relative_paths(files, basedir):
            handle = local.open("rb")
            handles.append(handle)
            form.add_field("src", handle, filename=remote, content_type="application/octet-stream")
        url = api.build_url(f"/session/{ref}/upload", _params(owner_access_key))
        headers = api.make_headers("POST", url, "multipart/form-data")
        headers.pop("Content-Type", None)  # aiohttp writes it with the boundary
        try:
            async with api.http.post(url, data=form, headers=headers) as resp:
                await _raise_for_status(resp)
        except aiohttp.ClientError as e:
            raise BackendClientError(f"Uploading to the session has failed: {e}") from e
    finally:
        for handle in handles:
            handle.close()


def _extract(archive: str, dest: Path) -> list[str]:
    """Regular files and directories only, each confined to ``dest`` (no absolute names, no
    ``..``, no devices): what a server sends is not trusted. Links (a downloaded directory's
    symlinks) are left out rather than created."""
    names: list[str] = []
    root = dest.resolve()
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not parts or Path(member.name).is_absolute() or ".." in parts:
                raise tarfile.TarError(f"refused member {member.name!r}")
            target = root.joinpath(*parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.issym() or member.islnk():
                continue
            elif member.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                with source, target.open("wb") as out:
                    shutil.copyfileobj(source, out, _CHUNK)
            else:
                raise tarfile.TarError(f"refused member {member.name!r}: not a regular file")
            names.append(member.name)
    return names


async def download(api: APISession, ref: str, files: Sequence[str], dest: str | Path = ".", *,
                   owner_access_key: str | None = None) -> list[str]:
    """Download ``files`` (paths in the session) into ``dest``; returns the names written."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    url = api.build_url(f"/session/{ref}/download", _params(owner_access_key))
    headers = api.make_headers("POST", url, "application/json")
    names: list[str] = []
    loop = asyncio.get_running_loop()
    try:
        async with api.http.post(url, data=json.dumps({"files": list(files)}).encode(), headers=headers) as resp:
            await _raise_for_status(resp)
            reader = aiohttp.MultipartReader.from_response(resp)
            while (part := await reader.next()) is not None:
                if not isinstance(part, aiohttp.BodyPartReader):
                    raise BackendClientError("Malformed download answer")
                fd, tmp = tempfile.mkstemp(suffix=".tar")
                try:
                    with os.fdopen(fd, "wb") as out:
                        while chunk := await part.read_chunk(_CHUNK):
                            out.write(chunk)
                    names += await loop.run_in_executor(None, _extract, tmp, dest)
                finally:
                    os.unlink(tmp)
    except aiohttp.ClientError as e:
        raise BackendClientError(f"Downloading from the session has failed: {e}") from e
    except tarfile.TarError as e:
        raise BackendClientError(f"The downloaded archive is broken or unsafe: {e}") from e
    return names


async def list_files(api: APISession, ref: str, path: str = ".", *,
                     owner_access_key: str | None = None) -> dict[str, Any]:
    """``{"files": [{filename, mode, size, ctime, mtime, atime}], "errors", "abspath"}`` (``files``
    decoded from the JSON text the API answers)."""
    data = await api.request_json("GET", f"/session/{ref}/files", json_body={"path": path},
                                  params=_params(owner_access_key))
    if not isinstance(data, dict):
        raise BackendClientError("The API server returned a malformed file listing")
    try:
        entries = json.loads(data.get("files") or "[]")
    except ValueError as e:
        raise BackendClientError("The API server returned a malformed file listing") from e
    return {"files": entries, "errors": str(data.get("errors") or ""), "abspath": str(data.get("abspath") or path)}
