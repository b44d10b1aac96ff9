"""A directory streamed as a zip archive: a writer thread feeds a bounded queue the response
drains, so memory stays at a few chunks whatever the directory holds.

Only regular files and directories go in; symlinks are left out (one pointing outside the folder
must not pull outside bytes into the archive), and files are opened with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import asyncio
import os
import queue
import stat
import threading
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, cast

CHUNK = 1024 * 1024
QUEUE_CHUNKS = 8
_DONE = object()


class _QueueWriter:
    """The unseekable file object zipfile writes into; each write blocks while the queue is full."""

    def __init__(self, q: queue.Queue[object], cancelled: threading.Event) -> None:
        self._q = q
        self._cancelled = cancelled
        self._pos = 0

    def write(self, data: bytes) -> int:
        while True:
            if self._cancelled.is_set():
                raise _Cancelled()
            try:
                self._q.put(bytes(data), timeout=0.5)
                break
            except queue.Full:
                continue
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        pass


class _Cancelled(Exception):
    pass


def _write_zip(root: Path, out: _QueueWriter) -> None:
    with zipfile.ZipFile(cast(IO[bytes], out), mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            base = Path(dirpath)
            rel_dir = base.relative_to(root)
            dirnames.sort()
            if not dirnames and not filenames and base != root:
                zf.writestr(f"{rel_dir.as_posix()}/", b"")  # keep empty directories
            for name in sorted(filenames):
                path = base / name
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                except OSError:
                    continue  # a symlink (ELOOP), or gone
                with os.fdopen(fd, "rb") as src:
                    st = os.fstat(src.fileno())
                    if not stat.S_ISREG(st.st_mode):
                        continue
                    info = zipfile.ZipInfo.from_file(path, (rel_dir / name).as_posix())
                    info.compress_type = zipfile.ZIP_STORED
                    with zf.open(info, "w", force_zip64=st.st_size >= 2**31) as dst:
                        while chunk := src.read(CHUNK):
                            dst.write(chunk)


async def stream_directory(root: Path) -> AsyncIterator[bytes]:
    q: queue.Queue[object] = queue.Queue(maxsize=QUEUE_CHUNKS)
    cancelled = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            _write_zip(root, _QueueWriter(q, cancelled))
        except _Cancelled:
            return
        except BaseException as exc:  # handed to the response side
            failure.append(exc)
        while not cancelled.is_set():
            try:
                q.put(_DONE, timeout=0.5)
                return
            except queue.Full:
                continue

    writer = threading.Thread(target=run, name="zip-writer", daemon=True)
    writer.start()
    loop = asyncio.get_running_loop()

    def next_item() -> object:
        # Bounded wait, so a worker thread is never stuck here after the response is gone.
        try:
            return q.get(timeout=1.0)
        except queue.Empty:
            return None

    try:
        while True:
            item = await loop.run_in_executor(None, next_item)
            if item is None:
                continue
            if item is _DONE:
                break
            assert isinstance(item, bytes)
            yield item
        if failure:
            raise failure[0]
    finally:
        cancelled.set()
        while True:  # unblock the writer if it waits on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                break
