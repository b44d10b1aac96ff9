"""Paths inside a folder: validation of what a caller names, confinement of what it resolves to.

Every relative path a caller gives (manager JSON, token claims, the client's ``dst_dir``) goes
through :func:`parse_relpath` before it touches the filesystem; every path used is then resolved
(symlinks followed) and checked to lie inside the folder at use time (:func:`confined`). Writes
that create or replace entries walk the directories with ``O_NOFOLLOW`` (:func:`open_dir`), so a
symlink swapped in between the check and the write cannot redirect them.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from .errors import InvalidPath

#: Where upload sessions keep their temp files, inside each folder; not writable by name.
UPLOAD_DIR = ".upload"
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _decoded_fixpoint(segment: str) -> str:
    """``%2e%2e``, ``%252e%252e``... decoded until nothing changes (bounded: each pass shrinks it)."""
    for _ in range(8):
        decoded = unquote(segment)
        if decoded == segment:
            break
        segment = decoded
    return segment


def check_name(name: str, what: str = "name") -> str:
    """One path segment (a file or directory name): no separators, dots, controls or reserved names."""
    if not name:
        raise InvalidPath(f"empty {what}")
    if _CONTROL.search(name):
        raise InvalidPath(f"{what} contains control characters")
    if "/" in name:
        raise InvalidPath(f"{what} must not contain '/'")
    if _decoded_fixpoint(name) in (".", ".."):
        raise InvalidPath(f"{what} must not be '.' or '..'")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InvalidPath(f"{what} is longer than {MAX_NAME_BYTES} bytes")
    return name


def parse_relpath(raw: str | None, what: str = "path", *, allow_root: bool = True,
                  allow_upload_dir: bool = False) -> PurePosixPath:
    """A caller's relative path, refused (400) if absolute, escaping (``..`` at any depth, raw or
    percent-encoded), carrying control characters or naming the reserved upload directory."""
    text = "" if raw is None else raw
    if len(text.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise InvalidPath(f"{what} is longer than {MAX_PATH_BYTES} bytes")
    if _CONTROL.search(text):
        raise InvalidPath(f"{what} contains control characters")
    if text.startswith("/") or _decoded_fixpoint(text).startswith("/"):
        raise InvalidPath(f"{what} must be relative")
    parts: list[str] = []
    for segment in text.split("/"):
        if segment in ("", "."):
            continue  # "a//b", "./a": harmless spellings of the same path
        parts.append(check_name(segment, what))
    if not parts and not allow_root:
        raise InvalidPath(f"{what} must name an entry inside the folder")
    if parts and parts[0] == UPLOAD_DIR and not allow_upload_dir:
        raise InvalidPath(f"{what} must not be inside {UPLOAD_DIR}/ (reserved for upload sessions)")
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def confined(root: Path, rel: PurePosixPath) -> Path:
    """``root/rel`` with symlinks resolved, refused (400) unless it stays inside ``root``.

    ``root`` must already be resolved. A missing tail is fine (``realpath`` is not strict), so
    this also vets where a new entry would go.
    """
    target = Path(os.path.realpath(root / rel))
    if target != root and root not in target.parents:
        raise InvalidPath("path leads outside the folder")
    return target


@contextmanager
def open_dir(root: Path, rel: PurePosixPath, *, create: bool,
             owner: tuple[int, int] | None = None) -> Iterator[int]:
    """A descriptor of directory ``root/rel`` reached one component at a time with ``O_NOFOLLOW``
    (so no symlink, wherever it appears, is followed), creating missing ones if ``create`` (owned
    by ``owner`` when given)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in rel.parts:
            if part == ".":
                continue
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    if owner is not None:
                        os.chown(part, *owner, dir_fd=fd, follow_symlinks=False)
                except FileExistsError:
                    pass  # made by a concurrent upload
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                # ELOOP: a symlink; ENOTDIR: a file where a directory is needed.
                raise InvalidPath(f"'{part}' is not a directory inside the folder") from exc
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


def is_regular_nofollow(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False
