"""Dotfiles: files placed in every new session's home directory, as the official SDK 24.03 sends
them. A dotfile belongs to a keypair (``/user-config/dotfiles``), a project
(``/group-config/dotfiles``: ``group`` is its id, or its name within ``domain``) or a domain
(``/domain-config/dotfiles``). ``GET`` lists them, or answers one with ``path``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .exceptions import BackendClientError
from .request import APISession

__all__ = ("Scope", "create", "list_dotfiles", "get", "update", "delete", "DEFAULT_PERMISSION")

#: What the official CLI stores when no permission is given.
DEFAULT_PERMISSION = "755"
_PERMISSION = re.compile(r"^[0-7]{3}$")


@dataclass(frozen=True)
class Scope:
    """Whose dotfiles: a project's (``group``), else a domain's (``domain``), else a keypair's
    (the caller's, or ``owner_access_key``'s for admins)."""

    owner_access_key: str | None = None
    domain: str | None = None
    group: str | None = None

    @property
    def endpoint(self) -> str:
        if self.group:
            return "/group-config/dotfiles"
        if self.domain:
            return "/domain-config/dotfiles"
        return "/user-config/dotfiles"

    def fields(self) -> dict[str, str]:
        if self.group:
            return {"group": self.group, **({"domain": self.domain} if self.domain else {})}
        if self.domain:
            return {"domain": self.domain}
        return {"owner_access_key": self.owner_access_key} if self.owner_access_key else {}


def check_permission(permission: str) -> str:
    """Three octal digits (``644``; a leading ``0o``/``0`` of a four-digit form is dropped)."""
    text = permission.strip().lower().removeprefix("0o")
    if len(text) == 4 and text.startswith("0"):
        text = text[1:]
    if not _PERMISSION.match(text):
        raise BackendClientError(f"The permission must be three octal digits such as 644 or 755, not {permission!r}.")
    return text


async def create(api: APISession, path: str, data: str, *, permission: str = DEFAULT_PERMISSION,
                 scope: Scope = Scope()) -> None:
    body = {"path": path, "data": data, "permission": check_permission(permission), **scope.fields()}
    await api.request("POST", scope.endpoint, json_body=body)


async def list_dotfiles(api: APISession, *, scope: Scope = Scope()) -> list[dict[str, Any]]:
    """``[{"path", "permission", "data"}, ...]``."""
    data = await api.request_json("GET", scope.endpoint, params=scope.fields())
    if not isinstance(data, list):
        raise BackendClientError("The API server returned a malformed dotfile list")
    return [item for item in data if isinstance(item, dict)]


async def get(api: APISession, path: str, *, scope: Scope = Scope()) -> dict[str, Any]:
    """``{"path", "permission", "data"}`` of the dotfile at ``path``."""
    data = await api.request_json("GET", scope.endpoint, params={"path": path, **scope.fields()})
    if not isinstance(data, dict):
        raise BackendClientError("The API server returned a malformed dotfile")
    return data


async def update(api: APISession, path: str, data: str, *, permission: str = DEFAULT_PERMISSION,
                 scope: Scope = Scope()) -> None:
    body = {"path": path, "data": data, "permission": check_permission(permission), **scope.fields()}
    await api.request("PATCH", scope.endpoint, json_body=body)


async def delete(api: APISession, path: str, *, scope: Scope = Scope()) -> None:
    await api.request("DELETE", scope.endpoint, params={"path": path, **scope.fields()})
