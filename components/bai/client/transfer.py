"""Byte transfers with the storage proxy's client-facing API: tus 1.0.0 uploads and ranged
downloads, both resumable.

The manager hands out ``{token, url}`` (``request-upload`` / ``request-download``); the bytes then
go straight to the storage proxy at ``url?token=...``, authorised by that short-lived JWT alone.

* Upload (tus core protocol, no creation extension: the manager's call created the session):
  ``HEAD`` answers ``Upload-Offset`` (bytes the proxy holds) and ``Upload-Length``;
  ``PATCH`` appends one chunk (``Content-Type: application/offset+octet-stream``,
  ``Upload-Offset``) and answers ``204`` with the new offset. The next chunk is read from disk
  while the current one is on the wire; at most two chunks are in memory.
* Resumption: the token and url are kept in a small state file (:class:`UploadStateStore`) keyed
  by the identity, folder, remote path, size and mtime of the source, so a second run of the
  same upload asks the proxy for its offset and sends only the rest. Network errors and 5xx
  answers (a proxy restart) are retried within the run from the proxy's offset.
* Download: streamed to ``<dest>.bai-part`` and renamed when complete; a dropped connection or a
  later run resumes the partial file with ``Range``, checked against the strong ``ETag`` (or
  ``If-Range: Last-Modified``) the first answer gave, so a file changed on the server meanwhile
  is fetched whole again instead of being spliced.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import aiohttp
from yarl import URL

from .exceptions import BackendClientError

__all__ = (
    "TUS_VERSION",
    "DEFAULT_CHUNK_SIZE",
    "TransferError",
    "UploadRefused",
    "UploadSessionGone",
    "UploadStateStore",
    "DownloadStateStore",
    "cache_root",
    "tus_offset",
    "tus_upload",
    "download_to",
    "partial_path",
    "storage_url",
)

TUS_VERSION: Final = "1.0.0"
#: the official SDK's DEFAULT_CHUNK_SIZE
DEFAULT_CHUNK_SIZE: Final = 16 * 2**20
#: read size of a download stream (bytes written per step)
DOWNLOAD_READ_SIZE: Final = 2**20
#: attempts per chunk / per download after a network error or a 5xx answer
DEFAULT_RETRIES: Final = 8
#: how much of an error body we read and show
_ERROR_BODY_LIMIT: Final = 4096
#: a state file older than this is stale whatever it says (tokens live about a day)
STATE_MAX_AGE_S: Final = 7 * 86400

Progress = Callable[[int], None]
"""Called with the number of bytes done so far (absolute, may go back after a retry)."""


class TransferError(BackendClientError):
    """An upload or download that cannot go on (the reason is in the message)."""


class UploadRefused(TransferError):
    """The proxy refused the upload for good (quota, size, permissions): not worth resuming."""


class UploadSessionGone(UploadRefused):
    """The proxy no longer knows the upload session (finished, aborted or swept)."""


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/backend.ai`` (``~/.cache/backend.ai`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "backend.ai"


def storage_url(url: str, token: str, address_map: Mapping[str, str] | None = None) -> URL:
    """The proxy url with the token as a query parameter, after ``BACKEND_OVERRIDE_STORAGE_PROXY``
    (exact url -> replacement, as the official SDK maps them)."""
    if address_map:
        if url not in address_map:
            raise BackendClientError(
                "Overriding storage proxy addresses are given, but no url matches with any of "
                f"them (the manager answered {url})."
            )
        url = address_map[url]
    return URL(url).update_query({"token": token})


def _retry_delay(attempt: int) -> float:
    # 0.2, 0.4, 0.8 ... capped at 5 s: a restarting proxy is back within the attempts.
    return float(min(5.0, 0.2 * 2 ** (attempt - 1)))


async def _error_text(resp: aiohttp.ClientResponse) -> str:
    """A short human reason from an error answer (problem+json title/msg, else text)."""
    body = b""
    try:
        # read() answers what has arrived so far: gather up to the limit
        while len(body) < _ERROR_BODY_LIMIT:
            piece = await resp.content.read(_ERROR_BODY_LIMIT - len(body))
            if not piece:
                break
            body += piece
    except (aiohttp.ClientError, TimeoutError):
        pass
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300] or (resp.reason or f"HTTP {resp.status}")
    if isinstance(data, dict):
        parts = [str(data[k]) for k in ("title", "msg", "detail") if data.get(k)]
        if parts:
            return ": ".join(dict.fromkeys(parts))
    return text[:300]


# ---------------------------------------------------------------------------------------------
# resumption state


class _StateStore:
    """Small JSON files, one per transfer, under ``cache_root()/<kind>``; written atomically and
    private (they hold bearer tokens)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @staticmethod
    def key(*parts: object) -> str:
        return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:40]

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def load(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or time.time() - float(data.get("saved_at", 0)) > STATE_MAX_AGE_S:
            self.remove(key)
            return None
        return data

    def save(self, key: str, data: Mapping[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({**data, "saved_at": time.time()}, f)
            os.replace(tmp, self._path(key))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def remove(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()


class UploadStateStore(_StateStore):
    """Where an unfinished upload's ``{url, token}`` waits for the next run."""

    def __init__(self, root: Path | None = None) -> None:
        super().__init__(root if root is not None else cache_root() / "uploads")

    def key_for(self, identity: str, folder: str, remote_path: str, source: Path) -> str:
        st = source.stat()
        return self.key("upload", identity, folder, remote_path, st.st_size, st.st_mtime_ns)


class DownloadStateStore(_StateStore):
    """The validators (``ETag``, ``Last-Modified``) of a partial download, keyed by its destination."""

    def __init__(self, root: Path | None = None) -> None:
        super().__init__(root if root is not None else cache_root() / "downloads")

    def key_for(self, identity: str, folder: str, remote_path: str, dest: Path) -> str:
        return self.key("download", identity, folder, remote_path, dest.absolute())


# ---------------------------------------------------------------------------------------------
# tus upload


def _tus_headers() -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION}


async def tus_offset(http: aiohttp.ClientSession, url: URL) -> tuple[int, int | None]:
    """``HEAD`` the upload: ``(Upload-Offset, Upload-Length)``; an unknown session raises
    :class:`UploadSessionGone`."""
    async with http.head(url, headers={**_tus_headers(), "Cache-Control": "no-store"}) as resp:
        if resp.status in (404, 410):
            raise UploadSessionGone(f"The upload session is gone ({await _error_text(resp)})")
        if resp.status // 100 != 2:
            raise TransferError(f"The storage proxy refused the upload status query "
                                f"(HTTP {resp.status}): {await _error_text(resp)}")
        try:
            offset = int(resp.headers["Upload-Offset"])
        except (KeyError, ValueError) as e:
            raise TransferError("The storage proxy answered no valid Upload-Offset") from e
        length = resp.headers.get("Upload-Length")
        return offset, (int(length) if length and length.isdigit() else None)


class _Retryable(Exception):
    """A failure worth another attempt (network error, 5xx, offset conflict)."""


async def _patch(http: aiohttp.ClientSession, url: URL, data: bytes, offset: int) -> int:
    headers = {
        **_tus_headers(),
        "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream",
    }
    try:
        async with http.patch(url, data=data, headers=headers) as resp:
            if resp.status // 100 == 2:
                try:
                    return int(resp.headers["Upload-Offset"])
                except (KeyError, ValueError) as e:
                    raise TransferError("The storage proxy answered no valid Upload-Offset") from e
            reason = await _error_text(resp)
            if resp.status >= 500 or resp.status == 409:
                raise _Retryable(f"HTTP {resp.status}: {reason}")
            if resp.status in (404, 410):
                raise UploadSessionGone(f"The upload session is gone (HTTP {resp.status}: {reason})")
            raise UploadRefused(f"The storage proxy refused the upload (HTTP {resp.status}): {reason}")
    except (aiohttp.ClientError, TimeoutError) as e:
        raise _Retryable(str(e) or e.__class__.__name__) from e


async def tus_upload(
    http: aiohttp.ClientSession,
    url: URL,
    source: Path,
    *,
    size: int,
    offset: int = 0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    retries: int = DEFAULT_RETRIES,
    progress: Progress | None = None,
) -> int:
    """Send ``source[offset:size]`` in chunks; returns the final offset (= ``size``).

    A 4xx answer raises :class:`UploadRefused` (the upload cannot go on); network errors and 5xx
    answers are retried from the proxy's offset up to ``retries`` times in a row, then raise
    :class:`TransferError` (the upload can be resumed later). A source that shrinks while being
    read fails the upload instead of sending short data.
    """
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    if size == 0:
        # A proxy may complete an empty upload when the session is made (tus clients send no
        # PATCH for it); one that keeps the session open gets one empty PATCH to finish it.
        try:
            await tus_offset(http, url)
        except UploadSessionGone:
            return 0
    loop = asyncio.get_running_loop()
    fd = os.open(source, os.O_RDONLY)
    pending: asyncio.Future[bytes] | None = None
    try:
        def read_at(pos: int) -> bytes:
            want = min(chunk_size, size - pos)
            data = os.pread(fd, want, pos) if want > 0 else b""
            if len(data) != want:
                raise TransferError(f"{source} changed while it was being uploaded")
            return data

        if progress:
            progress(offset)
        failures = 0
        pending = loop.run_in_executor(None, read_at, offset)
        sent_any = False
        while offset < size or (size == 0 and not sent_any):
            data = await pending
            next_pos = offset + len(data)
            # read ahead while this chunk is on the wire
            pending = loop.run_in_executor(None, read_at, min(next_pos, size))
            try:
                new_offset = await _patch(http, url, data, offset)
            except _Retryable as e:
                failures += 1
                if failures > retries:
                    raise TransferError(f"Uploading {source.name} failed after {retries} retries: {e}") from e
                await asyncio.sleep(_retry_delay(failures))
                with contextlib.suppress(_Retryable, aiohttp.ClientError, TimeoutError):
                    offset, _ = await tus_offset(http, url)
                with contextlib.suppress(Exception):
                    await pending
                pending = loop.run_in_executor(None, read_at, min(offset, size))
                continue
            failures = 0
            sent_any = True
            if new_offset != next_pos:
                # the proxy holds a different amount than we think: continue from its offset
                with contextlib.suppress(Exception):
                    await pending
                pending = loop.run_in_executor(None, read_at, min(new_offset, size))
            offset = new_offset
            if progress:
                progress(offset)
        return offset
    finally:
        # the read-ahead must finish before its descriptor is closed (also when interrupted)
        if pending is not None:
            with contextlib.suppress(Exception):
                await pending
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# download


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".bai-part")


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/200"
    if not value or not value.startswith("bytes "):
        return None
    first = value[6:].partition("-")[0]
    return int(first) if first.isdigit() else None


async def download_to(
    http: aiohttp.ClientSession,
    url: URL,
    dest: Path,
    *,
    state: DownloadStateStore | None = None,
    state_key: str | None = None,
    retries: int = DEFAULT_RETRIES,
    progress: Callable[[int, int | None], None] | None = None,
) -> int:
    """Stream ``url`` into ``dest`` (through ``dest.bai-part``); returns the byte count.

    A partial file left by an earlier run (or by a dropped connection) is continued when the
    server still has the very same file: its strong ``ETag`` must match the one remembered, or,
    from a server without ETags, ``If-Range`` with the remembered ``Last-Modified`` decides.
    Anything else starts over, so a changed file is never spliced. ``progress`` gets
    ``(done, total or None)``.
    """
    part = partial_path(dest)
    saved = state.load(state_key) if state is not None and state_key is not None else None
    if not saved or not await asyncio.to_thread(part.exists):
        saved = None
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(part.unlink)

    def remember(validators: dict[str, Any] | None) -> None:
        # written as soon as an answer starts, so that even Ctrl-C leaves a resumable file
        if state is not None and state_key is not None:
            if validators:
                state.save(state_key, validators)
            else:
                state.remove(state_key)

    failures = 0
    while True:
        try:
            total = await _download_once(http, url, part, saved, progress, remember)
        except _Resumable as e:
            saved = e.validators
            remember(saved)
            failures += 1
            if failures > retries:
                raise TransferError(f"Downloading {dest.name} failed after {retries} retries: {e}") from e
            await asyncio.sleep(_retry_delay(failures))
            continue
        await asyncio.to_thread(os.replace, part, dest)
        if state is not None and state_key is not None:
            state.remove(state_key)
        return total


class _Resumable(_Retryable):
    """A download that broke off; ``validators`` say which file the partial bytes belong to."""

    def __init__(self, msg: str, validators: dict[str, Any] | None) -> None:
        super().__init__(msg)
        self.validators = validators


def _validators(resp: aiohttp.ClientResponse, total: int | None) -> dict[str, Any] | None:
    etag = resp.headers.get("ETag")
    last_modified = resp.headers.get("Last-Modified")
    if total is None or (not etag and not last_modified) or (etag or "").startswith("W/"):
        return None  # a stream we cannot identify again is not resumable
    return {"etag": etag, "last_modified": last_modified, "total": total}


async def _download_once(
    http: aiohttp.ClientSession,
    url: URL,
    part: Path,
    saved: dict[str, Any] | None,
    progress: Callable[[int, int | None], None] | None,
    remember: Callable[[dict[str, Any] | None], None],
) -> int:
    start = (await asyncio.to_thread(part.stat)).st_size if saved else 0
    headers: dict[str, str] = {}
    if start:
        headers["Range"] = f"bytes={start}-"
        if saved and not saved.get("etag") and saved.get("last_modified"):
            headers["If-Range"] = str(saved["last_modified"])
    validators: dict[str, Any] | None = saved
    done = 0
    try:
        async with http.get(url, headers=headers) as resp:
            if resp.status == 416 and start:
                # the partial file does not fit the server's file any more: start over
                raise _Resumable("the partial file does not match the server's file", None)
            if resp.status >= 500:
                raise _Resumable(f"HTTP {resp.status}: {await _error_text(resp)}", saved)
            if resp.status // 100 != 2:
                raise TransferError(f"The storage proxy refused the download (HTTP {resp.status}): "
                                    f"{await _error_text(resp)}")
            resumed = (
                resp.status == 206
                and _content_range_start(resp.headers.get("Content-Range")) == start
                and saved is not None
                and (not saved.get("etag") or resp.headers.get("ETag") == saved["etag"])
            )
            if resp.status == 206 and not resumed:
                raise _Resumable("the server's file changed since the partial download", None)
            mode, done = ("ab", start) if resumed else ("wb", 0)
            length = resp.headers.get("Content-Length")
            total = done + int(length) if length and length.isdigit() else None
            validators = saved if resumed else _validators(resp, total)
            if not resumed:
                remember(validators)
            if progress:
                progress(done, total)
            # disk writes run in a thread so that a slow disk never stalls the event loop
            f = await asyncio.to_thread(open, part, mode)
            try:
                async for chunk in resp.content.iter_chunked(DOWNLOAD_READ_SIZE):
                    await asyncio.to_thread(f.write, chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
            finally:
                await asyncio.to_thread(f.close)
            if total is not None and done != total:
                raise _Resumable(f"the stream ended after {done} of {total} bytes", validators)
            return done
    except (aiohttp.ClientError, TimeoutError) as e:
        raise _Resumable(str(e) or e.__class__.__name__, validators if done else saved) from e
