"""The web UI's files, served from memory: each file is read once (again when its size or mtime
changes, so UI work shows on reload), with a strong ETag and a gzip copy for text types.

Paths are confined to their root (no ``..``, no dot files, symlinks resolved and checked); files
above ``MAX_FILE`` and caches above ``MAX_CACHE`` total are refused/evicted rather than held.
``index.html`` answers ``/`` and every other path the UI routes itself (single-page app).
Caching: names under ``assets/`` are meant to carry a content hash and are cached for a year;
everything else is revalidated (``no-cache`` + ETag, 304 when unchanged).
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from .errors import NotFound

MAX_FILE = 32 * 2**20
MAX_CACHE = 128 * 2**20
COMPRESSIBLE = ("text/", "application/javascript", "application/json", "image/svg+xml", "application/wasm",
                "text/javascript")
IMMUTABLE_DIR = "assets/"


@dataclass(frozen=True)
class _Entry:
    stamp: tuple[int, int]
    body: bytes
    gz: bytes | None
    etag: str
    content_type: str


def _compressed(body: bytes, ctype: str) -> bytes | None:
    return gzip.compress(body, compresslevel=6, mtime=0) if ctype.startswith(COMPRESSIBLE) and len(body) > 1024 else None


def _answer(request: web.Request, entry: _Entry, cache_control: str) -> web.Response:
    headers = {"ETag": entry.etag, "Vary": "Accept-Encoding", "Cache-Control": cache_control}
    inm = request.headers.get("If-None-Match")
    if inm is not None and entry.etag in (t.strip() for t in inm.split(",")):
        return web.Response(status=304, headers=headers)
    body = entry.body
    if entry.gz is not None and "gzip" in request.headers.get("Accept-Encoding", "").lower():
        body = entry.gz
        headers["Content-Encoding"] = "gzip"
    headers["Content-Type"] = entry.content_type
    return web.Response(body=body, headers=headers)  # (aiohttp sends no body for HEAD, keeps the length)


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


class MemoryFile:
    """One generated file (built once, kept in memory), answered like a static one."""

    def __init__(self, body: bytes, content_type: str) -> None:
        self.entry = _Entry((len(body), 0), body, _compressed(body, content_type), _etag(body), content_type)

    def response(self, request: web.Request) -> web.Response:
        return _answer(request, self.entry, "no-cache")


class StaticFiles:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, _Entry] = {}
        self._cached_bytes = 0

    def _resolve(self, rel: str) -> Path:
        if not rel or "\\" in rel or "\x00" in rel or rel.startswith("/"):
            raise NotFound()
        parts = rel.split("/")
        if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise NotFound()
        try:
            root = self.root.resolve(strict=True)
            path = (root / rel).resolve(strict=True)
        except (OSError, RuntimeError):
            raise NotFound() from None
        if not path.is_relative_to(root) or not path.is_file():
            raise NotFound()
        return path

    def _load(self, rel: str) -> _Entry:
        path = self._resolve(rel)
        try:
            st = path.stat()
        except OSError:
            raise NotFound() from None
        stamp = (st.st_size, st.st_mtime_ns)
        entry = self._cache.get(rel)
        if entry is not None and entry.stamp == stamp:
            return entry
        if st.st_size > MAX_FILE:
            raise NotFound("the file is too large to serve")
        try:
            body = path.read_bytes()
        except OSError:
            raise NotFound() from None
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
            ctype += "; charset=utf-8"
        gz = _compressed(body, ctype)
        entry = _Entry(stamp, body, gz, _etag(body), ctype)
        old = self._cache.pop(rel, None)
        self._cached_bytes -= len(old.body) + len(old.gz or b"") if old else 0
        size = len(body) + len(gz or b"")
        while self._cache and self._cached_bytes + size > MAX_CACHE:
            _, evicted = self._cache.popitem()
            self._cached_bytes -= len(evicted.body) + len(evicted.gz or b"")
        self._cache[rel] = entry
        self._cached_bytes += size
        return entry

    def exists(self, rel: str) -> bool:
        try:
            self._resolve(rel)
        except NotFound:
            return False
        return True

    def response(self, request: web.Request, rel: str) -> web.Response:
        entry = self._load(rel)
        return _answer(request, entry, "public, max-age=31536000, immutable" if rel.startswith(IMMUTABLE_DIR)
                       else "no-cache")


def ensure_mimetypes() -> None:
    """JavaScript modules and maps are served with the types browsers insist on."""
    mimetypes.add_type("text/javascript", ".js")
    mimetypes.add_type("text/javascript", ".mjs")
    mimetypes.add_type("application/json", ".map")
    mimetypes.add_type("text/css", ".css")
    mimetypes.add_type("image/svg+xml", ".svg")
    mimetypes.add_type("font/woff2", ".woff2")
