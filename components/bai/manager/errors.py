"""The manager's error family. Each class carries its HTTP status and problem type; one
middleware turns any ApiError into an ``application/problem+json`` response."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from aiohttp import web

PROBS = "https://api.backend.ai/probs/"


class ApiError(Exception):
    status: ClassVar[int] = 500
    error_type: ClassVar[str] = PROBS + "general-error"
    title: ClassVar[str] = "General Backend API Error."

    def __init__(self, msg: str | None = None, data: Any = None, *, title: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(msg or self.title)
        self.msg = msg
        self.data = data
        self._title = title
        #: Extra response headers (e.g. ``Retry-After``).
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.error_type, "title": self._title or self.title}
        if self.msg is not None:
            body["msg"] = self.msg
        if self.data is not None:
            body["data"] = self.data
        return body

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(
            status=self.status,
            body=json.dumps(self.body()).encode(),
            content_type="application/problem+json",
            headers={**self.headers, **(headers or {})},
        )


class URLNotFound(ApiError, LookupError):
    status, error_type, title = 404, PROBS + "url-not-found", "Unknown URL path."


class ObjectNotFound(ApiError, LookupError):
    status, error_type, title = 404, PROBS + "object-not-found", "No such resource."


class SessionNotFound(ObjectNotFound):
    title = "No such session."


class ImageNotFound(ObjectNotFound):
    title = "No such environment image."


class KernelNotFound(ObjectNotFound):
    title = "No such kernel."


class ScalingGroupNotFound(ObjectNotFound):
    title = "No such scaling group."


class DomainNotFound(ObjectNotFound):
    title = "No such domain."


class GroupNotFound(ObjectNotFound):
    title = "No such user group (project)."


class TaskTemplateNotFound(ObjectNotFound):
    error_type, title = PROBS + "task-template-not-found", "No such task template."


class TooManySessionsMatched(ApiError, LookupError):
    status, error_type, title = 404, PROBS + "too-many-sessions-matched", "Too many sessions matched."


class GenericBadRequest(ApiError, ValueError):
    status, error_type, title = 400, PROBS + "generic-bad-request", "Bad request."


class InvalidAPIParameters(ApiError, ValueError):
    status, error_type, title = 400, PROBS + "invalid-api-params", "Missing or invalid API parameters."


class InvalidAuthParameters(ApiError, ValueError):
    status, error_type, title = 400, PROBS + "invalid-auth-params", "Missing or invalid authorization parameters."


class SessionAlreadyExists(ApiError):
    status, error_type, title = 400, PROBS + "session-already-exists", "The session already exists but you requested not to reuse existing one."


class AuthorizationFailed(ApiError):
    status, error_type, title = 401, PROBS + "auth-failed", "Credential/signature mismatch."


class GenericForbidden(ApiError, PermissionError):
    status, error_type, title = 403, PROBS + "generic-forbidden", "Forbidden operation."


class InsufficientPrivilege(ApiError, PermissionError):
    status, error_type, title = 403, PROBS + "insufficient-privilege", "Insufficient privilege."


class MethodNotAllowed(ApiError):
    status, error_type, title = 405, PROBS + "method-not-allowed", "HTTP Method Not Allowed."


class RequestTooLarge(ApiError):
    status, error_type, title = 413, PROBS + "request-too-large", "The request body is too large."


class QuotaExceeded(ApiError):
    status, error_type, title = 412, PROBS + "quota-exceeded", "You have reached your resource limit."


class RateLimitExceeded(ApiError):
    status, error_type, title = 429, PROBS + "rate-limit-exceeded", "You have reached your API query rate limit."


class TooManyRequests(ApiError):
    """Refused for now; ``Retry-After`` (seconds) says when to come back."""

    status, error_type, title = 429, PROBS + "too-many-requests", "Too many requests."

    def __init__(self, retry_after: int, msg: str | None = None) -> None:
        super().__init__(msg, {"retry_after": retry_after}, headers={"Retry-After": str(retry_after)})


class TooManyFailedAttempts(TooManyRequests):
    """Login or sign-up throttled (the original webserver's answer to repeated failed logins)."""

    title = "Too many failed login attempts."


class SignupDisabled(GenericForbidden):
    title = "Sign-up is disabled on this server."


class ServerMisconfigured(ApiError):
    status, error_type, title = 500, PROBS + "server-misconfigured", "Service misconfigured."


class InternalServerError(ApiError):
    status, error_type, title = 500, PROBS + "internal-server-error", "Internal server error."


class KernelCreationFailed(ApiError):
    status, error_type, title = 500, PROBS + "kernel-creation-failed", "Kernel creation has failed."


class KernelExecutionFailed(ApiError):
    status, error_type, title = 500, PROBS + "kernel-execution-failed", "Executing user code in the kernel has failed."


class KernelDestructionFailed(ApiError):
    status, error_type, title = 500, PROBS + "kernel-destruction-failed", "Destroying the kernel has failed."


class KernelRestartFailed(ApiError):
    status, error_type, title = 500, PROBS + "kernel-restart-failed", "Restarting kernel has failed."


class ServiceUnavailable(ApiError):
    status, error_type, title = 503, PROBS + "service-unavailable", "Serivce unavailable."


class InstanceNotAvailable(ApiError):
    status, error_type, title = 503, PROBS + "instance-not-available", "There is no available instance."


# ------------------------------------------------------------------ virtual folders (the original's types)

class VFolderNotFound(ObjectNotFound):
    error_type, title = PROBS + "vfolder-not-found", "No such virtual folder."


class TooManyVFoldersFound(ApiError, LookupError):
    status, error_type, title = 404, PROBS + "too-many-vfolders", "There are two or more matching vfolders."


class VFolderAlreadyExists(ApiError):
    status, error_type, title = 400, PROBS + "vfolder-already-exists", "The virtual folder already exists with the same name."


class VFolderCreationFailed(ApiError):
    status, error_type, title = 400, PROBS + "vfolder-creation-failed", "Virtual folder creation has failed."


class VFolderOperationFailed(ApiError):
    status, error_type, title = 400, PROBS + "vfolder-operation-failed", "Virtual folder operation has failed."


class VFolderPermissionError(ApiError, PermissionError):
    """The caller reaches the folder but lacks the permission (ro/rw/wd) or ownership the call needs."""

    status, error_type, title = 403, PROBS + "vfolder-permission-error", "The virtual folder does not permit the specified permission."


class VFolderHostNotAllowed(GenericForbidden):
    """A volume-host permission (create-vfolder, upload-file, ...) is not granted to the caller."""

    title = "The operation is not allowed on this storage host."


class VFolderFileNotFound(ObjectNotFound):
    title = "No such file or directory in the virtual folder."


class VFolderFileConflict(ApiError):
    status, error_type, title = 409, PROBS + "vfolder-operation-failed", "The target already exists in the virtual folder."


class StorageProxyUnavailable(ServiceUnavailable):
    title = "The storage proxy is unavailable."


class StorageProxyFailed(ApiError):
    status, error_type, title = 502, PROBS + "storage-proxy-error", "The storage proxy failed to complete the operation."
