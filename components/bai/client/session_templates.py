"""Session (task) templates, as the official SDK 24.03 sends them.

* :func:`create` — ``POST /template/session`` (``payload``: one YAML/JSON document or a list)
* :func:`list_templates` — ``GET /template/session`` (``all`` for admins)
* :func:`get` — ``GET /template/session/{id}?format=yaml|json``
* :func:`update` — ``PUT /template/session/{id}``
* :func:`delete` — ``DELETE /template/session/{id}``
* :func:`create_session` — ``POST /session/_/create-from-template`` (given fields override the
  template's; what is not given is left to the template)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from .exceptions import BackendClientError
from .request import APISession
from .session import SessionCreated, session_created

__all__ = ("create", "list_templates", "get", "update", "delete", "create_session")

BodyFormat = Literal["yaml", "json"]


def _params(owner_access_key: str | None) -> dict[str, str]:
    return {"owner_access_key": owner_access_key} if owner_access_key else {}


def _drop_none(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


async def create(api: APISession, payload: str, *, group: str | None = None, domain: str | None = None,
                 owner_access_key: str | None = None) -> list[str]:
    """Store the templates of ``payload`` (all of them or none); their ids. The project and
    domain default to the configured ones, as the official SDK's."""
    group = group if group is not None else api.config.group
    domain = domain if domain is not None else api.config.domain
    body = _drop_none({"payload": payload, "group_name": group, "domain_name": domain,
                       "owner_access_key": owner_access_key})
    data = await api.request_json("POST", "/template/session", json_body=body)
    items = data if isinstance(data, list) else [data]
    try:
        return [str(item["id"]) for item in items]
    except (TypeError, KeyError) as e:
        raise BackendClientError("The API server returned a malformed template creation answer") from e


async def list_templates(api: APISession, *, list_all: bool = False) -> list[dict[str, Any]]:
    """The templates the caller may read (``list_all``: every one an admin may see)."""
    data = await api.request_json("GET", "/template/session", params={"all": "true"} if list_all else None)
    if not isinstance(data, list):
        raise BackendClientError("The API server returned a malformed template list")
    return [item for item in data if isinstance(item, dict)]


async def get(api: APISession, template_id: str, *, body_format: BodyFormat = "yaml",
              owner_access_key: str | None = None) -> str:
    """The template's document as YAML or JSON text, as the server renders it."""
    resp = await api.request("GET", f"/template/session/{template_id}",
                             params={"format": body_format, **_params(owner_access_key)})
    return resp.text()


async def update(api: APISession, template_id: str, payload: str, *, owner_access_key: str | None = None) -> None:
    """Replace the template's document."""
    body = _drop_none({"payload": payload, "owner_access_key": owner_access_key})
    await api.request("PUT", f"/template/session/{template_id}", json_body=body)


async def delete(api: APISession, template_id: str, *, owner_access_key: str | None = None) -> None:
    await api.request("DELETE", f"/template/session/{template_id}", params=_params(owner_access_key))


#: create_session's keyword -> (the request field, whether it goes under ``config``)
_FIELDS: dict[str, tuple[str, bool]] = {
    "image": ("image", False),
    "type_": ("type", False),
    "tag": ("tag", False),
    "starts_at": ("starts_at", False),
    "enqueue_only": ("enqueueOnly", False),
    "max_wait": ("maxWaitSeconds", False),
    "callback_url": ("callbackURL", False),
    "startup_command": ("startupCommand", False),
    "bootstrap_script": ("bootstrap_script", False),
    "owner_access_key": ("owner_access_key", False),
    "architecture": ("architecture", False),
    "cluster_size": ("clusterSize", False),
    "cluster_mode": ("clusterMode", False),
    "mounts": ("mounts", True),
    "mount_map": ("mount_map", True),
    "mount_options": ("mount_options", True),
    "environ": ("environ", True),
    "resources": ("resources", True),
    "resource_opts": ("resource_opts", True),
    "scaling_group": ("scalingGroup", True),
    "preopen_ports": ("preopen_ports", True),
}


async def create_session(api: APISession, template_id: str, *, name: str, domain: str | None = None,
                         group: str | None = None, no_reuse: bool | None = None,
                         dependencies: Sequence[str] | None = None, **overrides: Any) -> SessionCreated:
    """Create a session from task template ``template_id``. ``overrides`` take the keyword names
    of :func:`bai.client.session.create` (``image``, ``resources``, ``environ``, ``mounts`` ...);
    only those given (not None) replace the template's values."""
    unknown = set(overrides) - set(_FIELDS)
    if unknown:
        raise TypeError(f"unknown template override(s): {', '.join(sorted(unknown))}")
    if not 4 <= len(name) <= 64:
        raise BackendClientError("The session name must be 4 to 64 characters long.")
    cfg = api.config
    domain = domain if domain is not None else cfg.domain
    group = group if group is not None else cfg.group
    body: dict[str, Any] = {"template_id": template_id, "name": name, "domain": domain, "group": group}
    if no_reuse is not None:
        body["reuseIfExists"] = not no_reuse
    if dependencies:
        body["dependencies"] = list(dependencies)
    config: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        field, in_config = _FIELDS[key]
        (config if in_config else body)[field] = value
    if cfg.vfolder_mounts:
        config["mounts"] = [*config.get("mounts", []), *cfg.vfolder_mounts]
    if config:
        body["config"] = config
    data = await api.request_json("POST", "/session/_/create-from-template", json_body=body)
    if not isinstance(data, dict):
        raise BackendClientError("The API server returned a malformed session creation answer")
    return session_created(data, name=name, domain=domain, group=group)
