"""The storage proxy's errors: each carries its HTTP status and problem type; the apps' middleware
turns any of them into an ``application/problem+json`` reply. Messages never name host paths."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from aiohttp import web

PROBS = "https://api.backend.ai/probs/storage/"


class StorageError(Exception):
    status: ClassVar[int] = 500
    error_type: ClassVar[str] = PROBS + "general-error"
    title: ClassVar[str] = "Storage proxy error."

    def __init__(self, msg: str | None = None, **extra: Any) -> None:
        super().__init__(msg or self.title)
        self.msg = msg
        self.extra = extra

    @property
    def http_status(self) -> int:
        return self.status

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.error_type, "title": self.title}
        if self.msg is not None:
            body["msg"] = self.msg
        body.update(self.extra)
        return body

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(status=self.http_status, body=json.dumps(self.body()).encode(),
                            content_type="application/problem+json", headers=headers)


class InvalidParams(StorageError):
    status, error_type, title = 400, PROBS + "invalid-api-params", "Invalid or missing API parameters."


class InvalidPath(InvalidParams):
    error_type, title = PROBS + "invalid-path", "Invalid path."


class VFolderNotFound(StorageError):
    # The original answers a missing folder with 400 "VFolder not found"; the manager relies on it.
    status, error_type, title = 400, PROBS + "vfolder-not-found", "VFolder not found"


class VolumeNotFound(StorageError):
    status, error_type, title = 404, PROBS + "volume-not-found", "Unknown volume"


class QuotaScopeNotFound(StorageError):
    status, error_type, title = 404, PROBS + "quota-scope-not-found", "Quota scope not found"


class FileNotFound(StorageError):
    status, error_type, title = 404, PROBS + "file-not-found", "File not found"


class NoSuchUploadSession(StorageError):
    status, error_type, title = 404, PROBS + "no-such-upload-session", "No such upload session"


class Unauthorized(StorageError):
    status, error_type, title = 403, PROBS + "unauthorized", "Unauthorized"


class Conflict(StorageError):
    status, error_type, title = 409, PROBS + "conflict", "Conflict"


class UploadOffsetMismatch(Conflict):
    error_type, title = PROBS + "upload-offset-mismatch", "Upload offset mismatch"


class TooLarge(StorageError):
    status, error_type, title = 413, PROBS + "too-large", "Request entity too large"


class QuotaExceeded(TooLarge):
    error_type, title = PROBS + "quota-exceeded", "Quota scope limit exceeded"


class ExecutionError(StorageError):
    status, error_type, title = 500, PROBS + "execution-error", "Storage operation failed"


class FilesystemError(StorageError):
    """An OSError, described by its errno only (its text would show host paths)."""

    error_type, title = PROBS + "filesystem-error", "Filesystem error"

    def __init__(self, status: int, msg: str) -> None:
        super().__init__(msg)
        self._status = status

    @property
    def http_status(self) -> int:
        return self._status
