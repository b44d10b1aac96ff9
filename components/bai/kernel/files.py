"""Files in and out of the session, done by the runner inside the container (stdlib only).

The runner runs as the kernel's user, so it can do no more than user code could; on top of that
every path is confined to the work directory (``/home/work``): it must be relative to it (or
absolute under it), without ``..``, and it is walked one component at a time with
``O_NOFOLLOW`` from a directory descriptor, so a symlink anywhere on the way (one user code
planted pointing at ``/etc``, say) is refused rather than followed, whatever the container does
meanwhile. Uploads go to a temporary file next to the target and are renamed into place once
complete, so a failed upload leaves nothing behind.

Agent -> runner (``id``: the agent's transfer id, a short string):

* ``{"op": "file-list", "id", "path"}`` -> ``file-result`` with ``data: {"files": [{"filename",
  "mode", "size", "ctime", "mtime", "atime"}], "abspath"}`` (at most :data:`MAX_LIST_ENTRIES`).
* ``{"op": "file-put-begin", "id", "path"}`` -> ``file-result``; then any number of
  ``{"op": "file-put-data", "id", "data": base64}``, or ``{"op": "file-put-data", "id", "binary":
  true}`` followed by a binary frame with the bytes (:data:`.protocol.BINARY_FLAG`; no answer),
  and ``{"op": "file-put-end", "id"}``
  -> ``file-result`` with ``data: {"size"}`` once the file is in place (or an error; nothing is
  left), or ``{"op": "file-put-abort", "id"}`` (no answer).
* ``{"op": "file-get", "id", "path", "max_size", "archive"?}`` -> ``file-result`` with ``data:
  {"size", "archive"}``, then ``{"type": "file-data", "id", "data": base64}`` chunks (sent only
  while the connection's output backlog is small) and ``{"type": "file-end", "id"}``, or
  ``file-error`` if the file shrank meanwhile. Exactly ``size`` bytes are sent. A regular file is
  sent as its bytes (``archive: false``); with ``archive: true`` a directory is sent as a tar of it
  (``archive: true``; see :class:`_Archive`), ``size`` being the whole tar's, bounded by
  ``max_size`` like a file's. ``{"op": "file-get-cancel", "id"}`` stops one.

Runner -> agent: ``{"type": "file-result", "id", "ok": true, "data"}`` or ``{"type":
"file-result", "id", "ok": false, "error": kind, "msg"}``, ``kind`` one of ``refused`` (outside
the work directory, through a symlink, not a regular file/directory), ``not-found``,
``too-large``, ``busy``, ``io``.
"""

from __future__ import annotations

import base64
import binascii
import collections
import collections.abc
import errno
import json
import os
import stat
import struct
import tarfile
from collections.abc import Callable
from typing import Any

#: Raw bytes per ``file-data``/``file-put-data`` record: 512 KiB is 683 KiB of base64, under the 1 MiB frame cap.
CHUNK = 512 * 1024
#: Raw bytes per upload frame (agent -> runner frames are binary and may be far larger).
UPLOAD_CHUNK = 2**20
#: Downloads pause while this much output waits to be sent to the agent.
MAX_BACKLOG = 2 * 2**20
MAX_LIST_ENTRIES = 4000
#: Transfers of each direction in progress at once.
MAX_TRANSFERS = 8
_TMP_PREFIX = ".bai-upload-"
#: Entries of one directory archive (their headers are held in memory until sent).
MAX_ARCHIVE_ENTRIES = 10000


def data_frame(key: str, value: str, tid: str, raw: bytes) -> bytes:
    """A whole frame ``{key: value, "id": tid, "data": base64(raw)}``, built without running the
    base64 text through the JSON encoder (it needs no escaping; the encoder is the slow part)."""
    body = (f'{{"{key}":"{value}","id":{json.dumps(tid)},"data":"'.encode() + base64.b64encode(raw) + b'"}')
    return struct.pack(">I", len(body)) + body


class FileOpError(Exception):
    def __init__(self, kind: str, msg: str) -> None:
        super().__init__(msg)
        self.kind = kind
        self.msg = msg


def _oserror(exc: OSError, path: str) -> FileOpError:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return FileOpError("refused", f"{path}: a symbolic link or a non-directory is on the way")
    if exc.errno == errno.ENOENT:
        return FileOpError("not-found", f"{path}: no such file or directory")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return FileOpError("refused", f"{path}: {os.strerror(exc.errno)}")
    return FileOpError("io", f"{path}: {exc.strerror or exc}")


def split_path(path: str, work_dir: str) -> list[str]:
    """The components of ``path`` below the work directory; refused when it leaves it."""
    if not isinstance(path, str) or "\x00" in path or len(path) > 4096:
        raise FileOpError("refused", "invalid path")
    rel = path
    if path.startswith("/"):
        if path != work_dir and not path.startswith(work_dir.rstrip("/") + "/"):
            raise FileOpError("refused", f"{path}: only paths under {work_dir} are allowed")
        rel = path[len(work_dir):]
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise FileOpError("refused", f"{path}: '..' is not allowed")
    return parts


def _open_dir(work_dir: str, parts: list[str], *, create: bool = False) -> int:
    """A descriptor of the directory ``parts`` names, walked without following any symlink."""
    fd = os.open(work_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Upload:
    def __init__(self, dir_fd: int, name: str, tmp: str, fd: int) -> None:
        self.dir_fd, self.name, self.tmp, self.fd = dir_fd, name, tmp, fd
        self.error: FileOpError | None = None

    def discard(self) -> None:
        """Close everything; the temporary file goes unless it was renamed into place."""
        for action in (lambda: os.close(self.fd) if self.fd >= 0 else None,
                       lambda: os.unlink(self.tmp, dir_fd=self.dir_fd) if self.tmp else None,
                       lambda: os.close(self.dir_fd)):
            try:
                action()
            except OSError:
                pass
        self.fd = -1


class _Download:
    def __init__(self, tid: str, fd: int, size: int) -> None:
        self.tid, self.fd, self.remaining = tid, fd, size

    def read(self, limit: int) -> bytes:
        return os.read(self.fd, limit)

    def close(self) -> None:
        os.close(self.fd)


def _open_below(root_fd: int, parts: tuple[str, ...], *, directory: bool) -> int:
    """``parts`` under the directory ``root_fd``, walked without following any symlink."""
    fd = os.dup(root_fd)
    try:
        for i, part in enumerate(parts):
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            if directory or i < len(parts) - 1:
                flags |= os.O_DIRECTORY
            nxt = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Archive(_Download):
    """A directory sent as a tar (GNU format), built while it is sent.

    The tree is walked once up front, from the directory's descriptor and following no symlink,
    to know every entry and so the archive's exact size: regular files and directories as such,
    symlinks as link entries (never followed), devices, FIFOs and sockets left out. Each file is
    opened again (``O_NOFOLLOW`` at every step) only when its turn comes, and exactly the size
    seen by the walk is sent; one that shrank or was swapped for something else meanwhile breaks
    the transfer off with an error rather than sending a wrong archive."""

    def __init__(self, tid: str, root_fd: int, name: str, max_size: int | None) -> None:
        super().__init__(tid, root_fd, 0)
        #: (header, path below the root, size) per entry; path None: nothing follows the header.
        self.entries: collections.deque[tuple[bytes, tuple[str, ...] | None, int]] = collections.deque()
        self._pending = b""
        self._file_fd = -1
        self._walk(name, max_size)
        self._source = self._pieces()
        self.remaining += 2 * tarfile.BLOCKSIZE  # the end-of-archive marker

    def _add(self, header: bytes, path: tuple[str, ...] | None, size: int, max_size: int | None) -> None:
        if len(self.entries) >= MAX_ARCHIVE_ENTRIES:
            raise FileOpError("too-large", f"more than {MAX_ARCHIVE_ENTRIES} entries in the directory")
        self.entries.append((header, path, size))
        self.remaining += len(header) + size + (-size % tarfile.BLOCKSIZE)
        if max_size is not None and self.remaining + 2 * tarfile.BLOCKSIZE > max_size:
            raise FileOpError("too-large", f"the directory's archive has more than {max_size} bytes")

    @staticmethod
    def _header(arcname: str, st: os.stat_result, kind: bytes, size: int = 0, link: str = "") -> bytes:
        info = tarfile.TarInfo(arcname)
        info.type, info.size, info.linkname = kind, size, link
        info.mode, info.uid, info.gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
        info.mtime = int(st.st_mtime)
        return info.tobuf(format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape")

    def _walk(self, name: str, max_size: int | None) -> None:
        self._add(self._header(name, os.fstat(self.fd), tarfile.DIRTYPE), None, 0, max_size)
        todo: list[tuple[str, ...]] = [()]
        while todo:
            rel = todo.pop()
            dir_fd = _open_below(self.fd, rel, directory=True)
            try:
                with os.scandir(dir_fd) as it:
                    listed = sorted(it, key=lambda e: e.name)
                subdirs: list[tuple[str, ...]] = []
                for entry in listed:
                    if entry.name.startswith(_TMP_PREFIX):
                        continue  # an upload in progress is not a file yet
                    try:
                        st = entry.stat(follow_symlinks=False)
                        path = (*rel, entry.name)
                        arcname = "/".join((name, *path))
                        if stat.S_ISREG(st.st_mode):
                            self._add(self._header(arcname, st, tarfile.REGTYPE, st.st_size), path, st.st_size,
                                      max_size)
                        elif stat.S_ISDIR(st.st_mode):
                            self._add(self._header(arcname, st, tarfile.DIRTYPE), None, 0, max_size)
                            subdirs.append(path)
                        elif stat.S_ISLNK(st.st_mode):
                            link = os.readlink(entry.name, dir_fd=dir_fd)
                            self._add(self._header(arcname, st, tarfile.SYMTYPE, link=link), None, 0, max_size)
                    except FileNotFoundError:
                        continue  # gone since it was listed
                todo.extend(reversed(subdirs))
            finally:
                os.close(dir_fd)

    def _pieces(self) -> collections.abc.Iterator[bytes]:
        while self.entries:
            header, path, size = self.entries.popleft()
            yield header
            if path is None:
                continue
            self._open_file(path)
            left = size
            while left:
                data = os.read(self._file_fd, min(left, CHUNK))
                if not data:
                    raise OSError(errno.EIO, f"{'/'.join(path)} shrank while the directory was archived")
                left -= len(data)
                yield data
            os.close(self._file_fd)
            self._file_fd = -1
            yield b"\0" * (-size % tarfile.BLOCKSIZE)
        yield b"\0" * (2 * tarfile.BLOCKSIZE)

    def read(self, limit: int) -> bytes:
        out = bytearray(self._pending)
        while len(out) < limit:
            piece = next(self._source, None)
            if piece is None:
                break
            out += piece
        data, self._pending = bytes(out[:limit]), bytes(out[limit:])
        return data

    def close(self) -> None:
        if self._file_fd >= 0:
            os.close(self._file_fd)
            self._file_fd = -1
        os.close(self.fd)

    def _open_file(self, path: tuple[str, ...]) -> None:
        try:
            fd = _open_below(self.fd, path, directory=False)
        except OSError as exc:
            raise OSError(errno.EIO, f"{'/'.join(path)} changed while the directory was archived") from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EIO, f"{'/'.join(path)} changed while the directory was archived")
        os.set_blocking(fd, True)
        self._file_fd = fd


class FileOps:
    """The runner's file transfers. ``send`` queues a record (or a whole frame) to the agent;
    ``backlog`` is how many bytes wait to be sent (None: not connected)."""

    def __init__(self, work_dir: str, send: Callable[[dict[str, Any] | bytes], None],
                 backlog: Callable[[], int | None]) -> None:
        self.work_dir = work_dir.rstrip("/") or "/"
        self._send = send
        self._backlog = backlog
        self._uploads: dict[str, _Upload] = {}
        self._downloads: collections.deque[_Download] = collections.deque()
        self._pumping = False
        #: The upload the next binary frame belongs to.
        self._binary_for: str | None = None

    def reset(self) -> None:
        """The agent connection changed: every transfer in progress is abandoned."""
        for upload in self._uploads.values():
            upload.discard()
        self._uploads.clear()
        while self._downloads:
            self._downloads.popleft().close()

    def handle(self, message: dict[str, Any]) -> None:
        op, tid = message.get("op"), str(message.get("id", ""))[:64]
        try:
            if op == "file-list":
                self._result(tid, self._list(str(message.get("path", "."))))
            elif op == "file-put-begin":
                self._put_begin(tid, str(message.get("path", "")), message.get("mode"), message.get("dir_mode"))
                self._result(tid, {})
            elif op == "file-put-data" and message.get("binary") is True:
                self._binary_for = tid
            elif op == "file-put-data":
                self._put_data(tid, message.get("data"))
            elif op == "file-put-bytes":
                target, self._binary_for = self._binary_for, None
                data = message.get("data")
                if target is not None and isinstance(data, bytes):
                    self._write(target, data)
            elif op == "file-put-end":
                self._result(tid, {"size": self._put_end(tid)})
            elif op == "file-put-abort":
                upload = self._uploads.pop(tid, None)
                if upload is not None:
                    upload.discard()
            elif op == "file-get":
                self._get(tid, str(message.get("path", "")), message.get("max_size"), message.get("archive") is True)
            elif op == "file-get-cancel":
                for download in [d for d in self._downloads if d.tid == tid]:
                    self._downloads.remove(download)
                    download.close()
        except FileOpError as exc:
            self._send({"type": "file-result", "id": tid, "ok": False, "error": exc.kind, "msg": exc.msg})

    def _result(self, tid: str, data: dict[str, Any]) -> None:
        self._send({"type": "file-result", "id": tid, "ok": True, "data": data})

    # --- listing ------------------------------------------------------------------------------

    def _list(self, path: str) -> dict[str, Any]:
        parts = split_path(path, self.work_dir)
        try:
            fd = _open_dir(self.work_dir, parts)
        except OSError as exc:
            raise _oserror(exc, path) from None
        entries: list[dict[str, Any]] = []
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    if len(entries) >= MAX_LIST_ENTRIES:
                        break
                    if entry.name.startswith(_TMP_PREFIX):
                        continue  # an upload in progress (or being aborted) is not a file yet
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    entries.append({"filename": entry.name, "mode": stat.filemode(st.st_mode), "size": st.st_size,
                                    "ctime": st.st_ctime, "mtime": st.st_mtime, "atime": st.st_atime})
        except OSError as exc:
            raise _oserror(exc, path) from None
        finally:
            os.close(fd)
        entries.sort(key=lambda e: e["filename"])
        return {"files": entries, "abspath": "/".join([self.work_dir, *parts]) if parts else self.work_dir}

    # --- uploads ------------------------------------------------------------------------------

    def _put_begin(self, tid: str, path: str, mode: Any = None, dir_mode: Any = None) -> None:
        """``dir_mode``: the permission the file's directory gets (one below the home, never the
        home itself), e.g. 0700 for ``.ssh``."""
        parts = split_path(path, self.work_dir)
        if not parts:
            raise FileOpError("refused", f"{path}: not a file path")
        if mode is not None and (type(mode) is not int or not 0 <= mode <= 0o777):
            raise FileOpError("refused", f"{path}: invalid file mode")
        if dir_mode is not None and (type(dir_mode) is not int or not 0o700 <= dir_mode <= 0o777 or len(parts) < 2):
            raise FileOpError("refused", f"{path}: invalid directory mode")
        if tid in self._uploads or len(self._uploads) >= MAX_TRANSFERS:
            raise FileOpError("busy", "too many uploads at once")
        try:
            dir_fd = _open_dir(self.work_dir, parts[:-1], create=True)
        except OSError as exc:
            raise _oserror(exc, path) from None
        if dir_mode is not None:  # the directory just walked to (no symlink followed), whatever the umask
            try:
                os.fchmod(dir_fd, dir_mode)
            except OSError as exc:
                os.close(dir_fd)
                raise _oserror(exc, path) from None
        tmp = f"{_TMP_PREFIX}{tid}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=dir_fd)
        except OSError as exc:
            os.close(dir_fd)
            raise _oserror(exc, path) from None
        self._uploads[tid] = _Upload(dir_fd, parts[-1], tmp, fd)
        if mode is not None:  # exactly this mode, whatever the umask (dotfiles: agent/dotfiles.py)
            try:
                os.fchmod(fd, mode)
            except OSError as exc:
                self._uploads.pop(tid).discard()
                raise _oserror(exc, path) from None

    def _put_data(self, tid: str, data: Any) -> None:
        try:
            raw = base64.b64decode(data if isinstance(data, str) else "", validate=True)
        except (binascii.Error, ValueError):
            upload = self._uploads.get(tid)
            if upload is not None and upload.error is None:
                upload.error = FileOpError("io", "corrupt upload data")
            return
        self._write(tid, raw)

    def _write(self, tid: str, raw: bytes) -> None:
        upload = self._uploads.get(tid)
        if upload is None or upload.error is not None:
            return
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(upload.fd, view):]
        except OSError as exc:
            upload.error = _oserror(exc, upload.name)

    def _put_end(self, tid: str) -> int:
        upload = self._uploads.pop(tid, None)
        if upload is None:
            raise FileOpError("io", "no such upload")
        try:
            if upload.error is not None:
                raise upload.error
            try:
                size = os.fstat(upload.fd).st_size
                os.close(upload.fd)
                upload.fd = -1
                # rename(2) replaces a symlink at the target itself, never what it points to.
                os.rename(upload.tmp, upload.name, src_dir_fd=upload.dir_fd, dst_dir_fd=upload.dir_fd)
            except OSError as exc:
                if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                    raise FileOpError("refused", f"{upload.name}: a directory is in the way") from None
                raise _oserror(exc, upload.name) from None
            upload.tmp = ""
            return size
        finally:
            upload.discard()

    # --- downloads ----------------------------------------------------------------------------

    def _get(self, tid: str, path: str, max_size: Any, archive: bool) -> None:
        parts = split_path(path, self.work_dir)
        if not parts:
            raise FileOpError("refused", f"{path}: not a file")
        if len(self._downloads) >= MAX_TRANSFERS:
            raise FileOpError("busy", "too many downloads at once")
        try:
            dir_fd = _open_dir(self.work_dir, parts[:-1])
        except OSError as exc:
            raise _oserror(exc, path) from None
        try:
            # O_NONBLOCK: opening a FIFO user code planted must not hang the runner.
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            raise _oserror(exc, path) from None
        finally:
            os.close(dir_fd)
        st = os.fstat(fd)
        if archive and stat.S_ISDIR(st.st_mode):
            try:
                tar = _Archive(tid, fd, parts[-1], max_size if isinstance(max_size, int) else None)
            except FileOpError as exc:
                os.close(fd)
                raise FileOpError(exc.kind, f"{path}: {exc.msg}") from None
            except OSError as exc:
                os.close(fd)
                raise _oserror(exc, path) from None
            self._result(tid, {"size": tar.remaining, "archive": True})
            self._downloads.append(tar)
            self.pump()
            return
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise FileOpError("refused", f"{path}: not a regular file")
        if isinstance(max_size, int) and st.st_size > max_size:
            os.close(fd)
            raise FileOpError("too-large", f"{path}: {st.st_size} bytes (at most {max_size})")
        os.set_blocking(fd, True)
        # its permission bits travel with it: a one-file tar keeps them (id_container stays 0600)
        self._result(tid, {"size": st.st_size, "archive": False, "mode": stat.S_IMODE(st.st_mode)})
        self._downloads.append(_Download(tid, fd, st.st_size))
        self.pump()

    def pump(self) -> None:
        """Send download chunks while the connection's backlog is small (called again as it drains)."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._downloads:
                backlog = self._backlog()
                if backlog is None or backlog >= MAX_BACKLOG:
                    return
                download = self._downloads[0]
                try:
                    data = download.read(min(CHUNK, download.remaining)) if download.remaining else b""
                except OSError as exc:
                    data, error = b"", f"read failed: {exc.strerror}"
                else:
                    error = "the file shrank while it was read" if download.remaining and not data else ""
                if data:
                    download.remaining -= len(data)
                    self._send(data_frame("type", "file-data", download.tid, data))
                if error or not download.remaining:
                    self._downloads.popleft()
                    download.close()
                    self._send({"type": "file-error", "id": download.tid, "msg": error} if error
                               else {"type": "file-end", "id": download.tid})
        finally:
            self._pumping = False
