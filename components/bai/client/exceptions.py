"""Client-side exception types (dependency-free, so the CLI can import them cheaply)."""

from __future__ import annotations

import json
from typing import Any

__all__ = (
    "BackendError",
    "BackendAPIError",
    "BackendClientError",
    "APIVersionWarning",
    "PROBLEM_BASE",
)

PROBLEM_BASE = "https://api.backend.ai/probs/"


class BackendError(Exception):
    """Base of every error raised by the bai client."""

    def __str__(self) -> str:
        return repr(self)


class BackendAPIError(BackendError):
    """An error response (non-2xx/3xx) from the API server.

    ``data`` is the parsed ``application/problem+json`` body (``type``, ``title``, ``msg``,
    ``data``, ...). A body that is not JSON is wrapped as a ``generic-error`` problem whose
    ``content`` holds the raw text, as the official SDK does.
    """

    def __init__(self, status: int, reason: str, data: Any) -> None:
        if isinstance(data, bytes):
            data = data.decode("utf-8", "replace")
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError:
                data = {
                    "type": PROBLEM_BASE + "generic-error",
                    "title": "Generic Error (could not parse error string)",
                    "content": data,
                }
        if not isinstance(data, dict):
            data = {
                "type": PROBLEM_BASE + "generic-error",
                "title": "Generic Error (unexpected error body)",
                "content": data,
            }
        super().__init__(status, reason, data)

    @property
    def status(self) -> int:
        return self.args[0]

    @property
    def reason(self) -> str:
        return self.args[1]

    @property
    def data(self) -> dict[str, Any]:
        return self.args[2]

    @property
    def type_slug(self) -> str:
        """The problem type without the ``https://api.backend.ai/probs/`` prefix."""
        t = str(self.data.get("type", ""))
        return t.rsplit("/", 1)[-1] if t else ""

    @property
    def title(self) -> str:
        return str(self.data.get("title") or self.reason or f"HTTP {self.status}")

    @property
    def msg(self) -> str | None:
        m = self.data.get("msg")
        return None if m is None else str(m)


class BackendClientError(BackendError):
    """Errors raised on the client side: invalid arguments, connection failures, protocol errors."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class APIVersionWarning(UserWarning):
    """The server's API version is newer than the client's, or older than the minimum."""
