"""Request bodies of the session API, validated with pydantic.

Aliases follow the original (camelCase and snake_case both accepted); unknown keys are
rejected, as the original's trafaret schemas do."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from bai.manager.errors import InvalidAPIParameters


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CreationConfig(_Strict):
    mounts: list[str] | None = None
    mount_map: dict[str, str] | None = Field(None, validation_alias=AliasChoices("mount_map", "mountMap"))
    mount_options: dict[str, Any] | None = Field(None, validation_alias=AliasChoices("mount_options", "mountOptions"))
    environ: dict[str, str] | None = None
    scaling_group: str | None = Field(None, validation_alias=AliasChoices("scaling_group", "scalingGroup"))
    resources: dict[str, str | int | float] | None = None
    resource_opts: dict[str, str | int | float] | None = Field(
        None, validation_alias=AliasChoices("resource_opts", "resourceOpts"))
    preopen_ports: list[int] | None = Field(None, validation_alias=AliasChoices("preopen_ports", "preopenPorts"))
    agent_list: list[str] | None = Field(None, validation_alias=AliasChoices("agent_list", "agentList"))


class CreateSession(_Strict):
    name: str = Field(validation_alias=AliasChoices("name", "session_name", "clientSessionToken"))
    image: str = Field(validation_alias=AliasChoices("image", "lang"))
    architecture: str = Field("x86_64", validation_alias=AliasChoices("architecture", "arch"))
    type: str = Field("interactive", validation_alias=AliasChoices("type", "sessionType"))
    group: str = Field("default", validation_alias=AliasChoices("group", "groupName", "group_name"))
    domain: str = Field("default", validation_alias=AliasChoices("domain", "domainName", "domain_name"))
    cluster_size: int = Field(1, ge=1, validation_alias=AliasChoices("cluster_size", "clusterSize"))
    cluster_mode: str = Field("single-node", validation_alias=AliasChoices("cluster_mode", "clusterMode"))
    config: CreationConfig = CreationConfig()
    tag: str | None = None
    enqueue_only: bool = Field(False, validation_alias=AliasChoices("enqueueOnly", "enqueue_only"))
    max_wait_seconds: int = Field(0, ge=0, validation_alias=AliasChoices("maxWaitSeconds", "max_wait_seconds"))
    starts_at: str | None = Field(None, validation_alias=AliasChoices("starts_at", "startsAt"))
    reuse_if_exists: bool = Field(True, validation_alias=AliasChoices("reuseIfExists", "reuse_if_exists"))
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

    @field_validator("cluster_mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        if v not in ("single-node", "multi-node"):
            raise ValueError("must be single-node or multi-node")
        return v


class ExecuteRequest(_Strict):
    mode: str
    run_id: str | None = Field(validation_alias=AliasChoices("runId", "run_id"))
    code: str = ""
    options: dict[str, Any] | None = None

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        if v not in ("query", "batch", "continue", "input", "complete"):
            raise ValueError("must be one of query, batch, continue, input, complete")
        return v


class DestroyQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    forced: bool = False
    recursive: bool = False
    owner_access_key: str | None = None


def parse(model: type[_Strict] | type[BaseModel], raw: Any) -> Any:
    """Validate ``raw`` into ``model``; raise the original's 400 with a per-field ``data`` map."""
    if not isinstance(raw, dict):
        raise InvalidAPIParameters("Malformed body")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        data: dict[str, str] = {}
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "body"
            if err["type"] == "extra_forbidden":
                data[loc] = f"{loc} is not allowed key"
            elif err["type"] == "missing":
                data[loc] = "is required"
            else:
                data[loc] = err["msg"]
        raise InvalidAPIParameters("Input validation error", data) from None
