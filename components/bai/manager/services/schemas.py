"""Request bodies of the session API, validated with pydantic.

Aliases follow the original (camelCase and snake_case both accepted); unknown keys are
rejected, as the original's trafaret schemas do. Booleans and integers in JSON bodies are strict
(``0`` is not ``false``), so the OpenAPI document generated from these models is exact."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)
from pydantic.json_schema import JsonDict

from bai.manager.errors import InvalidAPIParameters

Scalar = StrictStr | StrictInt | StrictFloat  # a slot amount: "1", 1, 0.5 (not a boolean)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CreationConfig(_Strict):
    mounts: list[str] | None = None
    mount_map: dict[str, str] | None = Field(None, validation_alias=AliasChoices("mount_map", "mountMap"))
    mount_options: dict[str, Any] | None = Field(None, validation_alias=AliasChoices("mount_options", "mountOptions"))
    environ: dict[str, str] | None = None
    scaling_group: str | None = Field(None, validation_alias=AliasChoices("scaling_group", "scalingGroup"))
    resources: dict[str, Scalar] | None = None
    resource_opts: dict[str, Scalar] | None = Field(
        None, validation_alias=AliasChoices("resource_opts", "resourceOpts"))
    preopen_ports: list[StrictInt] | None = Field(None, validation_alias=AliasChoices("preopen_ports", "preopenPorts"))
    agent_list: list[str] | None = Field(None, validation_alias=AliasChoices("agent_list", "agentList"))


#: SESSION_NAME_RE (checked by the service) as a JSON-schema pattern, for the API document.
SESSION_NAME_SCHEMA: JsonDict = {"pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]{2,62}[A-Za-z0-9_]$", "minLength": 4, "maxLength": 64}


class CreateSession(_Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"name": "my-session", "image": "python", "enqueueOnly": False, "maxWaitSeconds": 30,
         "config": {"resources": {"cpu": "1", "mem": "256m"}}},
    ]})
    name: str = Field(validation_alias=AliasChoices("name", "session_name", "clientSessionToken"),
                      json_schema_extra=SESSION_NAME_SCHEMA)
    image: str = Field(validation_alias=AliasChoices("image", "lang"), examples=["python"])
    architecture: str = Field("x86_64", validation_alias=AliasChoices("architecture", "arch"))
    type: str = Field("interactive", validation_alias=AliasChoices("type", "sessionType"),
                      json_schema_extra={"enum": ["interactive", "batch", "inference"]})
    group: str = Field("default", validation_alias=AliasChoices("group", "groupName", "group_name"))
    domain: str = Field("default", validation_alias=AliasChoices("domain", "domainName", "domain_name"))
    cluster_size: StrictInt = Field(1, ge=1, validation_alias=AliasChoices("cluster_size", "clusterSize"))
    cluster_mode: Literal["single-node", "multi-node"] = Field(
        "single-node", validation_alias=AliasChoices("cluster_mode", "clusterMode"))
    config: CreationConfig = CreationConfig()
    tag: str | None = None
    enqueue_only: StrictBool = Field(False, validation_alias=AliasChoices("enqueueOnly", "enqueue_only"))
    max_wait_seconds: StrictInt = Field(0, ge=0, validation_alias=AliasChoices("maxWaitSeconds", "max_wait_seconds"))
    starts_at: str | None = Field(None, validation_alias=AliasChoices("starts_at", "startsAt"))
    reuse_if_exists: StrictBool = Field(True, validation_alias=AliasChoices("reuseIfExists", "reuse_if_exists"))
    startup_command: str | None = Field(None, validation_alias=AliasChoices("startupCommand", "startup_command"))
    bootstrap_script: str | None = Field(None, validation_alias=AliasChoices("bootstrap_script", "bootstrapScript"))
    dependencies: list[str] | None = None
    callback_url: str | None = Field(None, validation_alias=AliasChoices("callback_url", "callbackUrl", "callbackURL"))
    owner_access_key: str | None = None

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        if v.lower() not in ("interactive", "batch", "inference"):
            raise ValueError("must be one of interactive, batch, inference")
        return v.lower()


class ExecuteRequest(_Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"mode": "query", "runId": None, "code": "print(1)"}]})
    mode: Literal["query", "batch", "continue", "input", "complete"]
    run_id: str | None = Field(validation_alias=AliasChoices("runId", "run_id"))
    code: str = ""
    options: dict[str, Any] | None = None


class SessionQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    owner_access_key: str | None = Field(None, description="Act on another keypair's session (admins).")


class TaskLogsQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    task_id: uuid.UUID = Field(alias="taskId", description="A kernel's id, or its session's (also `task_id`).")


class DestroyQuery(SessionQuery):
    forced: bool = False
    recursive: bool = False


def parse(model: type[_Strict] | type[BaseModel], raw: Any) -> Any:
    """Validate ``raw`` into ``model``; raise the original's 400 with a per-field ``data`` map."""
    if not isinstance(raw, dict):
        raise InvalidAPIParameters("Malformed body")
    where = nul_at(raw)
    if where is not None:  # PostgreSQL cannot store it; refused here rather than failing there
        raise InvalidAPIParameters("Input validation error", {where or "body": "must not contain NUL characters"})
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise InvalidAPIParameters("Input validation error", field_problems(exc)) from None


def field_problems(exc: ValidationError, at: str = "") -> dict[str, str]:
    """The original's per-field ``data`` map of a validation error (dotted paths under ``at``)."""
    data: dict[str, str] = {}
    for err in exc.errors():
        loc = ".".join([*([at] if at else []), *(str(p) for p in err["loc"])]) or "body"
        if err["type"] == "extra_forbidden":
            data[loc] = f"{loc} is not allowed key"
        elif err["type"] == "missing":
            data[loc] = "is required"
        else:
            data[loc] = err["msg"]
    return data


def nul_at(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (or key) in ``value`` that holds a NUL character."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "\x00" in key:
                return sub
            found = nul_at(item, sub)
            if found is not None:
                return found
    elif isinstance(value, list):
        for idx, item in enumerate(value):
            found = nul_at(item, f"{path}.{idx}" if path else str(idx))
            if found is not None:
                return found
    return None
