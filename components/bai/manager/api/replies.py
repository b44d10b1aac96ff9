"""Shapes of the REST API's successful answers, for the OpenAPI document (``routing.Answer``).

They describe what handlers send (the original's wire shapes, quirks included); schemathesis
checks every answer against them. Extra keys are allowed unless a shape is closed on purpose."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel


class _Reply(BaseModel):
    model_config = ConfigDict(extra="allow")


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hello(_Reply):
    version: str = Field(description="The API version this manager speaks.")
    manager: str = Field(description="The manager release clients compare against (the original's).")


class Announcement(_Reply):
    enabled: bool
    message: str


class AuthTest(_Reply):
    authorized: Literal["yes"]
    echo: Any


class Role(_Reply):
    global_role: Literal["superadmin", "user"]
    domain_role: Literal["admin", "user"]
    group_role: str | None


class Credentials(_Reply):
    access_key: str
    secret_key: str


class AuthorizedKeypair(Credentials):
    role: str
    status: str


class Authorized(_Reply):
    data: AuthorizedKeypair


class PasswordMismatch(_Reply):
    error_msg: str


class SSHPublicKey(_Reply):
    ssh_public_key: str | None


class SSHKeypair(_Reply):
    ssh_public_key: str
    ssh_private_key: str


class SessionCreated(_Reply):
    sessionId: str
    sessionName: str
    status: str = Field(description="PENDING with enqueueOnly, TIMEOUT when maxWaitSeconds passed, "
                                    "RUNNING, or the main kernel's status.")
    created: bool = Field(description="false when an existing session was reused.")
    servicePorts: list[dict[str, Any]] = Field(default_factory=list, description="Set on a new session.")
    service_ports: list[Any] = Field(default_factory=list,
                                     description="Set instead of servicePorts on a reused session (original quirk).")


class SessionInfo(_Reply):
    domainName: str
    groupId: str
    userId: str
    lang: str
    image: str
    architecture: str
    registry: str | None
    tag: str | None
    containerId: str | None
    occupiedSlots: Any
    occupyingSlots: Any
    requestedSlots: Any
    occupiedShares: dict[str, Any]
    environ: dict[str, Any] | None
    resourceOpts: dict[str, Any]
    status: str
    statusInfo: str
    statusData: Any
    age: int = Field(description="Milliseconds since creation.")
    creationTime: str
    terminationTime: str | None
    numQueriesExecuted: int
    lastStat: Any
    idleChecks: dict[str, Any]
    servicePorts: list[dict[str, Any]] = Field(
        default_factory=list, description="The main kernel's service ports: name, protocol, ports (container), "
        "host_ports (published on the agent's bind host), and url_template/allowed_arguments/allowed_envs "
        "when the image's service definition has them.")


class SessionDestroyed(_Reply):
    stats: dict[str, Any]


class ExecutionResult(_Reply):
    runId: str | None
    status: str = Field(description="finished, continued, waiting-input, exec-timeout, ...")
    console: list[Any]
    exitCode: int | None
    options: Any
    files: list[Any]


class CompletionResult(_Reply):
    status: str
    completions: list[str]


class Executed(_Reply):
    #: A completion asked the older way (``mode: "complete"`` on the execute call) answers the
    #: completion shape.
    result: ExecutionResult | CompletionResult


class LogsResult(_Reply):
    logs: str


class Logs(_Reply):
    result: LogsResult


class GraphQLReply(_Reply):
    data: dict[str, Any] | None
    errors: list[dict[str, Any]] = Field(default_factory=list, description="Present only when there are errors.")


class GraphQLData(RootModel[dict[str, Any] | None]):
    """The legacy endpoint answers the ``data`` object alone."""
