"""tus upload sessions kept on disk, so a restarted proxy resumes them.

A session is one temp file ``<folder>/.upload/<session>``; its size is the upload's offset. A
PATCH appends in bounded chunks after checking the client's ``Upload-Offset``, the token's size
and the quota scope's room; the completed file is moved into place with one ``os.replace`` (so
concurrent uploads to one path leave one complete file: the last one to finish). An upload
refused for its size or the quota loses its temp file: nothing partial stays behind.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import (
    Conflict,
    InvalidParams,
    NoSuchUploadSession,
    QuotaExceeded,
    TooLarge,
    UploadOffsetMismatch,
)
from .paths import UPLOAD_DIR, confined, open_dir
from .vfid import VFolderID
from .volume import Volume

#: Bytes gathered from the request before one write; an upload holds at most two of them.
WRITE_CHUNK = 1024 * 1024
SWEEP_INTERVAL = 60.0
#: Tails up to this size are written without a thread hop.
INLINE_WRITE = 64 * 1024


def _write_all(fd: int, data: bytes | bytearray) -> int:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return len(data)


class _Appender:
    """Appends chunks on a worker thread while the next one is read: one write in flight, so the
    network and the disk overlap and memory stays at two chunks."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.accepted = 0  # bytes handed to the writer (written once drained)
        self._inflight: asyncio.Future[int] | None = None

    async def push(self, data: bytes | bytearray) -> None:
        await self.drain()
        self._inflight = asyncio.get_running_loop().run_in_executor(None, _write_all, self.fd, data)
        self.accepted += len(data)

    async def drain(self) -> None:
        if self._inflight is not None:
            await self._inflight
            self._inflight = None

    def close_after(self, tail: bytes) -> None:
        """Write ``tail`` after the write in flight, then close; without waiting (the caller may be
        cancelled), so it runs when that write is done. A failed write drops the tail: appending
        it after a short write would put bytes at the wrong offset."""
        inflight = self._inflight

        def finish(_: object = None) -> None:
            try:
                failed = inflight is not None and (inflight.cancelled() or inflight.exception() is not None)
                if tail and not failed:
                    _write_all(self.fd, tail)
            finally:
                os.close(self.fd)
        if inflight is not None and not inflight.done():
            inflight.add_done_callback(finish)
        else:
            finish()


@dataclass(frozen=True)
class UploadTarget:
    volume: Volume
    vfid: VFolderID
    root: Path  # the folder, resolved
    relpath: PurePosixPath  # where the file goes, inside the folder
    session: str
    size: int

    @property
    def temp(self) -> Path:
        return self.root / UPLOAD_DIR / self.session


def _open_temp(target: UploadTarget, flags: int) -> int:
    """The session's temp file, reached without following any symlink (a session may have
    replaced the upload dir with one)."""
    try:
        with open_dir(target.root, PurePosixPath(UPLOAD_DIR), create=False) as dir_fd:
            fd = os.open(target.session, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except (FileNotFoundError, InvalidParams):
        raise NoSuchUploadSession() from None
    except OSError as exc:  # ELOOP: the temp file is a symlink
        raise NoSuchUploadSession() from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NoSuchUploadSession()
    return fd


def _offset_of(target: UploadTarget) -> int:
    fd = _open_temp(target, os.O_RDONLY)
    try:
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def _refuse_directory_target(root: Path, relpath: PurePosixPath) -> None:
    target = confined(root, relpath)
    if target.is_dir():
        raise Conflict(f"'{relpath}' is a directory")


class UploadSessions:
    def __init__(self, session_expire: float, max_upload_size: int) -> None:
        self._expire = session_expire
        self.max_upload_size = max_upload_size
        self._locks: dict[str, asyncio.Lock] = {}
        self._swept: dict[Path, float] = {}

    async def create(self, volume: Volume, vfid: VFolderID, relpath: PurePosixPath, size: int) -> str:
        """A new session for ``size`` bytes to ``relpath``; a zero-byte upload completes at once
        (tus clients send no PATCH for it)."""
        if size > self.max_upload_size:
            raise TooLarge(f"the file is larger than this proxy's max-upload-size ({self.max_upload_size} bytes)")
        root = volume.existing_folder(vfid)
        room = await volume.room_left(vfid)
        if room is not None and size > room:
            raise QuotaExceeded(f"the upload of {size} bytes would exceed the quota scope's limit "
                                f"({max(room, 0)} bytes left)")
        session = uuid.uuid4().hex

        def prepare() -> None:
            _refuse_directory_target(root, relpath)
            upload_dir = root / UPLOAD_DIR
            try:
                upload_dir.mkdir(mode=0o700)
            except FileExistsError:
                if upload_dir.is_symlink() or not upload_dir.is_dir():
                    raise InvalidParams(f"{UPLOAD_DIR} in the folder is not a directory") from None
                self._sweep_stale(upload_dir)
            fd = os.open(upload_dir / session, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            try:
                if volume.owner is not None:
                    os.fchown(fd, *volume.owner)
            finally:
                os.close(fd)
        prepare()  # a few metadata calls: cheaper inline than a thread hop (~0.5 ms on a busy box)
        if size == 0:
            await self._complete(UploadTarget(volume, vfid, root, relpath, session, 0))
        return session

    def _sweep_stale(self, upload_dir: Path) -> None:
        """Sessions whose tokens have expired can never be resumed: drop their temp files (at
        most once a minute per folder, so busy folders are not scanned per upload)."""
        now = time.monotonic()
        if now - self._swept.get(upload_dir, -SWEEP_INTERVAL) < SWEEP_INTERVAL:
            return
        if len(self._swept) > 10_000:
            self._swept.clear()
        self._swept[upload_dir] = now
        cutoff = time.time() - self._expire
        with os.scandir(upload_dir) as entries:
            for entry in entries:
                try:
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                except OSError:
                    continue

    def offset(self, target: UploadTarget) -> int:
        return _offset_of(target)

    async def append(self, target: UploadTarget, client_offset: int | None, length: int | None,
                     body: AsyncIterator[bytes]) -> int:
        """Append ``body`` at the session's offset; the new offset. Completes the upload when it
        reaches the declared size."""
        # One PATCH per session at a time; the lock goes when the session ends.
        async with self._locks.setdefault(target.session, asyncio.Lock()):
            return await self._append_locked(target, client_offset, length, body)

    async def _append_locked(self, target: UploadTarget, client_offset: int | None, length: int | None,
                             body: AsyncIterator[bytes]) -> int:
        offset = _offset_of(target)
        if client_offset is not None and client_offset != offset:
            raise UploadOffsetMismatch(f"Upload-Offset is {client_offset} but the server has {offset} bytes")
        if offset >= target.size:
            await self._complete(target)
            return offset
        if length is not None and offset + length > target.size:
            await self._abort(target)
            raise TooLarge(f"the request carries more than the declared upload size ({target.size} bytes)")
        room = await target.volume.room_left(target.vfid)
        if room is not None and length is not None and length > room:
            await self._abort(target)
            raise QuotaExceeded(f"the upload would exceed the quota scope's limit ({max(room, 0)} bytes left); "
                                "the partial upload was removed")
        scope_dir = target.volume.scope_dir(target.vfid)
        pending = bytearray()
        writer = _Appender(_open_temp(target, os.O_WRONLY | os.O_APPEND))
        try:
            async for piece in body:
                pending += piece
                if offset + writer.accepted + len(pending) > target.size:
                    raise TooLarge(f"the request carries more than the declared upload size ({target.size} bytes)")
                if room is not None and writer.accepted + len(pending) > room:
                    raise QuotaExceeded("the upload exceeded the quota scope's limit; the partial upload was removed")
                if len(pending) >= WRITE_CHUNK:
                    await writer.push(pending)  # handed over: a new buffer follows
                    if scope_dir is not None:
                        target.volume.usage.wrote(scope_dir, len(pending))
                    pending = bytearray()
            await writer.drain()
        except (TooLarge, QuotaExceeded):
            await writer.drain()
            writer.close_after(b"")
            await self._abort(target)
            raise
        except BaseException:
            # The body ended early (connection lost, cancelled): keep what arrived, in order, so
            # the client resumes from HEAD's offset.
            writer.close_after(bytes(pending))
            raise
        # The last piece and, when it completes the upload, the move into place: one thread hop
        # at most (most small files are one piece).
        completes = offset + writer.accepted + len(pending) >= target.size
        last = bytes(pending)

        def finish() -> None:
            try:
                if last:
                    _write_all(writer.fd, last)
            finally:
                os.close(writer.fd)
            if completes:
                _place(target)
        if completes:
            self._locks.pop(target.session, None)
        # Small tails inline: a page-cache write and a rename cost less than a thread hop.
        if len(last) <= INLINE_WRITE:
            finish()
        else:
            await asyncio.to_thread(finish)
        if scope_dir is not None:
            target.volume.usage.wrote(scope_dir, len(last))
        return offset + writer.accepted + len(last)

    async def _abort(self, target: UploadTarget) -> None:
        self._locks.pop(target.session, None)
        await asyncio.to_thread(target.temp.unlink, missing_ok=True)

    async def _complete(self, target: UploadTarget) -> None:
        self._locks.pop(target.session, None)
        await asyncio.to_thread(_place, target)


def _place(target: UploadTarget) -> None:
    """Move the finished temp file to its place, atomically, through directories opened without
    following symlinks (created as needed). A target that cannot take it loses the upload."""
    with open_dir(target.root, PurePosixPath(UPLOAD_DIR), create=False) as upload_fd, \
            open_dir(target.root, target.relpath.parent, create=True, owner=target.volume.owner) as dir_fd:
        try:
            os.replace(target.session, target.relpath.name, src_dir_fd=upload_fd, dst_dir_fd=dir_fd)
        except IsADirectoryError:
            target.temp.unlink(missing_ok=True)
            raise Conflict(f"'{target.relpath}' is a directory; the upload was removed") from None
        except OSError as exc:
            target.temp.unlink(missing_ok=True)
            raise Conflict(f"the upload cannot be placed at '{target.relpath}': {exc.strerror}") from None
