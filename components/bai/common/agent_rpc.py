"""The manager -> agent RPC: request models (validated by the agent) and the manager's client.

Transport (see CONTRACTS.md): ``POST http://<agent addr>/rpc/<method>`` with a JSON object body and
``Authorization: Bearer <config/agent/rpc-secret>``. Success is ``200`` with a JSON object; failure
is ``4xx/5xx`` with ``{"type", "title", "msg"}``, raised here as :class:`AgentError` (or the
subclass matching ``type``, so callers can ``except KernelNotFound``).

Versioned (:mod:`bai.common.protocol`): every request and reply carries the sender's protocol
version in ``X-BAI-Protocol``; the client learns the agent's from its replies (or from its
heartbeats, :meth:`AgentClient.note_peer_protocol`) and neither calls a method the agent lacks
(:class:`UnsupportedCall`, nothing sent) nor sends fields it does not know.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import re
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bai.common import host_mounts
from bai.common import protocol as proto
from bai.common.agent_terminal import AgentTerminal, connect_terminal

#: Kernel IDs name directories on the agent host, so they are kept to a path-safe alphabet.
KERNEL_ID_PATTERN = r"^[0-9A-Za-z][0-9A-Za-z_-]{0,127}$"


# --- errors -----------------------------------------------------------------------------------


class AgentError(Exception):
    """An RPC failed: ``AgentError(type, title, msg, status)``, ``type`` being one of the agent
    error types in CONTRACTS.md. The subclasses below fix ``type`` and the default status."""

    def __init__(self, type: str = "agent-failure", title: str = "Agent failure", msg: str = "",
                 status: int = 500) -> None:
        self.type = type
        self.title = title
        self.msg = msg
        self.status = status
        super().__init__(f"{type} ({status}): {title}" + (f": {msg}" if msg else ""))

    def to_json(self) -> dict[str, str]:
        return {"type": self.type, "title": self.title, "msg": self.msg}


class _TypedAgentError(AgentError):
    error_type: ClassVar[str]
    default_title: ClassVar[str]
    default_status: ClassVar[int]

    def __init__(self, msg: str = "", *, title: str | None = None, status: int | None = None) -> None:
        super().__init__(self.error_type, title or self.default_title, msg, status or self.default_status)


class InvalidInput(_TypedAgentError):
    error_type = "agent-invalid-input"
    default_title = "Invalid input"
    default_status = 400


class Unauthorized(InvalidInput):
    default_title = "Unauthorized"
    default_status = 401


class AgentTimeout(_TypedAgentError):
    error_type = "agent-timeout"
    default_title = "Agent timeout"
    default_status = 504


class KernelNotFound(_TypedAgentError):
    error_type = "kernel-not-found"
    default_title = "Kernel not found"
    default_status = 404


class AgentFailure(_TypedAgentError):
    error_type = "agent-failure"
    default_title = "Agent failure"
    default_status = 500


class ProtocolMismatch(_TypedAgentError):
    """The agent refused a caller whose protocol version is not compatible with its own (or the
    client refused to call such an agent)."""

    error_type = "agent-protocol-mismatch"
    default_title = "Incompatible protocol version"
    default_status = 409


class UnsupportedCall(_TypedAgentError):
    """The agent's protocol version predates the method: the client did not send it."""

    error_type = "agent-unsupported-call"
    default_title = "Not supported by this agent's version"
    default_status = 501


class AgentStopping(_TypedAgentError):
    """The agent process is stopping (a restart, typically): it admitted nothing of this request,
    so sending it again (to the next process) is safe whatever the method."""

    error_type = "agent-stopping"
    default_title = "Agent stopping"
    default_status = 503


_ERROR_CLASSES: dict[str, type[_TypedAgentError]] = {
    cls.error_type: cls for cls in (AgentFailure, InvalidInput, AgentTimeout, KernelNotFound, ProtocolMismatch,
                                    UnsupportedCall, AgentStopping)
}


def error_from_reply(status: int, payload: dict[str, Any]) -> AgentError:
    """The exception for an error reply: the subclass matching its ``type`` when there is one."""
    error_type = str(payload.get("type") or "agent-failure")
    title, msg = str(payload.get("title") or ""), str(payload.get("msg") or "")
    cls = _ERROR_CLASSES.get(error_type)
    if cls is None:
        return AgentError(error_type, title or "Agent failure", msg, status)
    return cls(msg, title=title or None, status=status)


# --- request models ---------------------------------------------------------------------------


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageRef(BaseModel):
    # The manager may send more image fields (digest, registry, ...); the agent uses these two.
    model_config = ConfigDict(extra="allow", frozen=True)
    canonical: str = Field(min_length=1)
    labels: dict[str, str] = {}


#: Container paths a folder mount may not cover: the runner, its IPC directory and the system.
RESERVED_KERNEL_PATHS = ("/opt/bai", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/run",
                         "/sbin", "/sys", "/usr", "/var", "/tmp")


def _clean_absolute(path: str, what: str) -> str:
    # Refused rather than normalised: the manager sends clean paths, anything else is an attack
    # (a colon would also split Docker's "src:dst:mode" bind syntax).
    if (not path.startswith("/") or any(seg in ("", ".", "..") for seg in path[1:].split("/"))
            or any(c in path for c in ":\x00\n")):
        raise ValueError(f"{what} must be a clean absolute path: {path!r}")
    return path


class VFolderMountSpec(BaseModel):
    """A virtual folder bound into the kernel: ``host_path`` (the storage proxy's path of the
    folder or of its subpath) at ``kernel_path``; ``ro`` binds read-only."""

    model_config = ConfigDict(extra="allow", frozen=True)
    host_path: str = Field(min_length=2, max_length=4096)
    kernel_path: str = Field(min_length=2, max_length=4096)
    permission: Literal["ro", "rw", "wd"] = "ro"

    @field_validator("host_path")
    @classmethod
    def _host_path(cls, value: str) -> str:
        return _clean_absolute(value, "host_path")

    @field_validator("kernel_path")
    @classmethod
    def _kernel_path(cls, value: str) -> str:
        return check_kernel_path(value)


def check_kernel_path(value: str) -> str:
    """A container path a folder may be mounted at (the manager checks with this too, so what
    it accepts the agent accepts): clean, absolute, and covering no system path."""
    _clean_absolute(value, "kernel_path")
    if value == "/" or any(value == r or value.startswith(r + "/") or r.startswith(value + "/")
                           for r in RESERVED_KERNEL_PATHS):
        raise ValueError(f"kernel_path may not cover a system path: {value!r}")
    return value


class DotfileSpec(BaseModel):
    """A dotfile for the kernel's home: ``path`` relative to it, ``perm`` three octal digits."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    path: str = Field(min_length=1, max_length=1024)
    perm: str = Field(pattern=r"^[0-7]{3}$")
    data: str = Field(max_length=65536)


class SSHKeypairSpec(BaseModel):
    """The owner's keypair SSH keypair (OpenSSH public key, PEM private key): the public key goes
    into ``~/.ssh/authorized_keys``, the private one into ``~/id_container`` (agent/dotfiles.py).
    Never logged: ``repr`` leaves the private key out."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    public_key: str = Field(min_length=1, max_length=4096)
    private_key: str = Field(min_length=1, max_length=16384, repr=False)


class KernelCreationConfig(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    image: ImageRef
    session_type: str = "interactive"
    cluster_role: str = "main"
    cluster_idx: int = 1
    local_rank: int = 0
    cluster_hostname: str = Field("main1", pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$")
    resource_slots: dict[str, str] = {}
    resource_opts: dict[str, Any] = {}
    environ: dict[str, str] = {}
    bootstrap_script: str | None = None
    startup_command: str | None = None
    owner: dict[str, Any] = {}
    mounts: list[VFolderMountSpec] = []
    #: since 1.1: written into the home directory before the kernel counts as started (agent/dotfiles.py)
    dotfiles: list[DotfileSpec] = Field([], max_length=300)
    #: since 1.1: the owner's keypair SSH keypair, for the intrinsic sshd service (agent/dotfiles.py)
    ssh_keypair: SSHKeypairSpec | None = None

    @field_validator("resource_slots", mode="before")
    @classmethod
    def _slots_as_strings(cls, value: Any) -> Any:
        # Slot amounts travel as strings (Decimal-safe); accept plain numbers too.
        if isinstance(value, dict):
            return {k: str(v) if isinstance(v, (int, float, Decimal)) and not isinstance(v, bool) else v
                    for k, v in value.items()}
        return value


class PingRequest(_Request):
    msg: str = ""


class CreateKernelsRequest(_Request):
    session_id: str = Field(min_length=1)
    kernel_ids: list[str] = Field(min_length=1)
    configs: list[KernelCreationConfig]
    cluster_info: dict[str, Any] = {}
    #: since 1.1: the cluster session's own keypair (``cluster_info.ssh_keypair``), so its kernels
    #: ``ssh`` each other (agent/dotfiles.py). Taken out of ``cluster_info`` so that its private
    #: key is in no plain dict a log line could print (this model's ``repr`` leaves it out).
    cluster_ssh_keypair: SSHKeypairSpec | None = Field(None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _cluster_keypair_apart(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = {k: v for k, v in data.items() if k != "cluster_ssh_keypair"}  # only from cluster_info
        info = data.get("cluster_info")
        if isinstance(info, dict) and "ssh_keypair" in info:
            data["cluster_info"] = {k: v for k, v in info.items() if k != "ssh_keypair"}
            data["cluster_ssh_keypair"] = info["ssh_keypair"]
        return data

    @field_validator("kernel_ids")
    @classmethod
    def _kernel_ids(cls, value: list[str]) -> list[str]:
        for kid in value:
            if not re.match(KERNEL_ID_PATTERN, kid):
                raise ValueError(f"invalid kernel id: {kid!r}")
        if len(set(value)) != len(value):
            raise ValueError("duplicate kernel ids")
        return value

    @model_validator(mode="after")
    def _one_config_per_kernel(self) -> CreateKernelsRequest:
        if len(self.configs) != len(self.kernel_ids):
            raise ValueError("configs and kernel_ids must have the same length")
        return self


class DestroyKernelRequest(_Request):
    kernel_id: str = Field(pattern=KERNEL_ID_PATTERN)
    session_id: str | None = None
    reason: str | None = None


ExecuteMode = Literal["query", "batch", "continue", "input"]


class ExecuteRequest(_Request):
    session_id: str | None = None
    kernel_id: str = Field(pattern=KERNEL_ID_PATTERN)
    run_id: str | None = Field(None, min_length=1, max_length=64)
    mode: ExecuteMode
    code: str = ""
    opts: dict[str, Any] = {}
    flush_timeout: float = Field(2.0, ge=0, le=600)

    @model_validator(mode="after")
    def _run_id_for_followups(self) -> ExecuteRequest:
        if self.mode not in ("query", "batch") and self.run_id is None:
            raise ValueError(f"mode {self.mode!r} needs the run_id of the run it continues")
        return self


class KernelRequest(_Request):
    """Requests that only name a kernel: ``interrupt_kernel``, ``restart_kernel``, ``get_logs``."""

    kernel_id: str = Field(pattern=KERNEL_ID_PATTERN)


#: ``get_logs`` tail limits: the default and the hard maximum, in lines and in bytes.
LOG_TAIL_LINES, LOG_TAIL_LINES_MAX = 1000, 10000
LOG_TAIL_BYTES, LOG_TAIL_BYTES_MAX = 2**20, 8 * 2**20


class GetLogsRequest(KernelRequest):
    """The last ``tail_lines`` lines of the kernel's container log, cut to ``max_bytes``
    (``{"logs": str, "truncated": bool}``; ``truncated``: the byte cut left lines out)."""

    tail_lines: int = Field(LOG_TAIL_LINES, ge=1, le=LOG_TAIL_LINES_MAX)
    max_bytes: int = Field(LOG_TAIL_BYTES, ge=1, le=LOG_TAIL_BYTES_MAX)


class ListKernelsRequest(_Request):
    pass


class AgentInfoRequest(_Request):
    """``agent_info`` (protocol 1.1): ``{"id", "version", "protocol", "started_at", "kernels"}``:
    what a rolling restart waits for (the new process is up, its kernels re-adopted)."""


#: The manager's rule for resource group names (services/admin_inputs.name, at most 64 characters).
SCALING_GROUP_NAME_MAX = 64
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class UpdateScalingGroupRequest(_Request):
    """``update_scaling_group`` (protocol 1.1): the agent joins this resource group at once (its
    next heartbeat says so) and keeps it in its agent.toml. Replies ``{"scaling_group",
    "previous", "config_changed"}``; fails, changing nothing, when the file cannot be rewritten."""

    scaling_group: str = Field(min_length=1, max_length=SCALING_GROUP_NAME_MAX)

    @field_validator("scaling_group")
    @classmethod
    def _name(cls, value: str) -> str:
        if value != value.strip() or _CONTROL_CHARS.search(value):
            raise ValueError("a resource group name has no control characters or surrounding spaces")
        return value


class StartServiceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    #: Option name -> value (None: a bare flag); only the definition's allowed_arguments.
    arguments: dict[str, str | None] = Field(default_factory=dict, max_length=64)
    #: Variable -> value; only the definition's allowed_envs.
    envs: dict[str, str] = Field(default_factory=dict, max_length=64)


class StartServiceRequest(KernelRequest):
    """``start_service``: start one of the kernel's service ports (see
    :mod:`bai.agent.services`); ``{"status": "started" | "running" | "failed", "error"?}``,
    400 for an unknown service (the message lists the known ones) or options not allowed."""

    service: str = Field(pattern=r"^[\w-]{1,64}$")
    opts: StartServiceOptions = Field(default_factory=StartServiceOptions)


class ShutdownServiceRequest(KernelRequest):
    """``shutdown_service`` (protocol 1.1): stop a service port's process that start_service
    began (``{"status": "stopped" | "not-running"}``); 400 for a service the kernel lacks."""

    service: str = Field(pattern=r"^[\w-]{1,64}$")


class GetCompletionsRequest(KernelRequest):
    """``get_completions``: ``{"completions": [str]}`` for the word before the cursor (empty while
    code runs)."""

    code: str = Field("", max_length=2**20)
    options: dict[str, Any] = {}


#: A path in a kernel, relative to /home/work or absolute under it (the runner confines it).
KernelFilePath = Annotated[str, Field(min_length=1, max_length=4096, pattern=r"^[^\x00]*$")]


class ListFilesRequest(KernelRequest):
    """``list_files``: ``{"files": [{"filename", "mode", "size", "ctime", "mtime", "atime"}], "abspath"}``."""

    path: KernelFilePath = "."


class UploadFileQuery(KernelRequest):
    """``POST /files/upload`` query string (the body is the file)."""

    path: KernelFilePath


class DownloadFileRequest(KernelRequest):
    """``POST /files/download`` body."""

    path: KernelFilePath
    max_size: int = Field(2**40, ge=0)
    #: A tar of the path instead of its bytes (a directory can only be sent so).
    archive: bool = False


class ListHostMountsRequest(_Request):
    """``host_mounts``: ``{"success", "mounts": [path], "entries": [...], "message"}``."""


class _FstabChoice(_Request):
    fstab_path: str | None = Field(None, max_length=4096)

    @field_validator("fstab_path")
    @classmethod
    def _fstab_path(cls, value: str | None) -> str | None:
        return None if value is None else host_mounts.check_fstab_path(value)


class ReadFstabRequest(_FstabChoice):
    """``read_fstab``: ``{"content"}`` of the agent's configured fstab (no other file)."""


class UmountHostRequest(_FstabChoice):
    """``umount_host``: ``{"success", "message", "path"}``."""

    name: str
    edit_fstab: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return host_mounts.check_name(value)


class MountHostRequest(UmountHostRequest):
    """``mount_host``: ``{"success", "message", "path"}``."""

    fs_location: str
    fs_type: str = "nfs"
    options: str | None = None

    @field_validator("fs_location")
    @classmethod
    def _fs_location(cls, value: str) -> str:
        return host_mounts.check_fs_location(value)

    @field_validator("fs_type")
    @classmethod
    def _fs_type(cls, value: str) -> str:
        return host_mounts.check_fs_type(value)

    @field_validator("options")
    @classmethod
    def _options(cls, value: str | None) -> str | None:
        return None if value is None else host_mounts.check_options(value)


#: A Docker image reference with a tag (``registry/project/name:tag``), as the agent will tag it.
IMAGE_REFERENCE_PATTERN = r"^[a-z0-9][a-z0-9._:-]*(/[a-z0-9][a-z0-9._-]*)*:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"


class RegistryCredentials(BaseModel):
    """How to log in to a registry (both None: anonymously)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    username: str | None = Field(None, max_length=256)
    password: str | None = Field(None, max_length=4096)


class CommitKernelRequest(KernelRequest):
    """``commit_kernel`` (protocol 1.1): save the kernel's container as the image ``canonical``
    with the base image's labels plus ``labels`` (``ai.backend.customized-image.*`` only);
    ``{"image", "digest", "labels", "pushed"}``. With ``push``, the image is then pushed to the
    registry its reference names, with those credentials. 409 while another commit of the kernel runs."""

    canonical: str = Field(max_length=255, pattern=IMAGE_REFERENCE_PATTERN)
    labels: dict[str, Annotated[str, Field(max_length=1024)]] = Field(default_factory=dict, max_length=16)
    push: RegistryCredentials | None = None


class SaveKernelRequest(KernelRequest):
    """``save_kernel`` (protocol 1.1): commit the kernel's container and save the image as a tar
    at ``<image-commit-path>/<subdir>/<filename>`` on the agent; ``{"kernel", "path", "size"}``.
    409 while another commit of the kernel runs or when the file exists.
    ``get_commit_status`` (a :class:`KernelRequest`): ``{"kernel", "status": "ongoing" | "ready"}``."""

    subdir: str = Field(pattern=r"^[A-Za-z0-9@_+-][A-Za-z0-9@._+-]{0,127}$")
    filename: str = Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}\.tar$")


class RemoveImageRequest(_Request):
    """``remove_image`` (protocol 1.1): delete the local image ``canonical`` (not forced), a
    customized one only (``ai.backend.customized-image.owner`` label; anything else: 403);
    ``{"removed": bool}`` (false: it was not there). 409 (title "Image in use", the message
    naming the containers) while a container, running or stopped, uses it."""

    canonical: str = Field(max_length=255, pattern=IMAGE_REFERENCE_PATTERN)


#: method name -> request model; the agent serves exactly these.
REQUEST_MODELS: dict[str, type[BaseModel]] = {
    "ping": PingRequest,
    "create_kernels": CreateKernelsRequest,
    "destroy_kernel": DestroyKernelRequest,
    "execute": ExecuteRequest,
    "interrupt_kernel": KernelRequest,
    "restart_kernel": KernelRequest,
    "get_logs": GetLogsRequest,
    "list_kernels": ListKernelsRequest,
    "start_service": StartServiceRequest,
    "shutdown_service": ShutdownServiceRequest,
    "host_mounts": ListHostMountsRequest,
    "mount_host": MountHostRequest,
    "umount_host": UmountHostRequest,
    "read_fstab": ReadFstabRequest,
    "get_completions": GetCompletionsRequest,
    "list_files": ListFilesRequest,
    "agent_info": AgentInfoRequest,
    "commit_kernel": CommitKernelRequest,
    "save_kernel": SaveKernelRequest,
    "get_commit_status": KernelRequest,
    "update_scaling_group": UpdateScalingGroupRequest,
    "remove_image": RemoveImageRequest,
}


# --- client -----------------------------------------------------------------------------------


#: Seconds each RPC may take by default (``execute`` adds its flush timeout). Destroying waits
#: for the container to stop and be removed, so it gets longer; a lost agent still fails fast
#: because connecting has a limit of its own (``connect_timeout``).
DEFAULT_METHOD_TIMEOUTS: dict[str, float] = {
    "ping": 5.0,
    "create_kernels": 30.0,
    "destroy_kernel": 60.0,
    "execute": 30.0,
    "interrupt_kernel": 10.0,
    "restart_kernel": 30.0,
    "get_logs": 30.0,
    "list_kernels": 10.0,
    # the runner waits up to 60 s for a service to listen (bai.agent.services)
    "start_service": 75.0,
    # the runner gives a stopping service a few seconds before it kills it
    "shutdown_service": 20.0,
    # mount/umount run under the agent's [host-mounts] command-timeout (at most 40 s)
    "host_mounts": 10.0,
    "mount_host": 50.0,
    "umount_host": 50.0,
    "read_fstab": 10.0,
    "get_completions": 10.0,
    "list_files": 40.0,
    "agent_info": 5.0,
    # the agent bounds a commit by bai.agent.commit.COMMIT_TIMEOUT (600 s)
    "commit_kernel": 630.0,
    "save_kernel": 630.0,
    "get_commit_status": 10.0,
    "update_scaling_group": 10.0,
    # deleting an image's layers from disk (a big image: many files)
    "remove_image": 60.0,
}

#: Calls a user waits on while the kernel keeps running: when the agent restarts (it refuses the
#: connection, or answers ``agent-stopping``: nothing was done either way) they are tried again
#: for up to ``reconnect_window`` seconds instead of failing at once.
RECONNECTING_METHODS = frozenset({"execute", "get_completions", "list_files", "get_logs", "interrupt_kernel"})
#: Pause between two connection attempts to a restarting agent.
RECONNECT_INTERVAL = 0.1
#: How long a client keeps an idle connection to an agent for reuse. A stopping agent keeps its
#: idle connections open for longer than this (bai.agent.server.STOP_GRACE), so no client sends a
#: request on a connection the agent is closing (HTTP/1.1 cannot tell whether such a request was
#: read, so it could not be sent again safely).
IDLE_KEEPALIVE = 2.0


def _refused(exc: aiohttp.ClientError) -> bool:
    return isinstance(exc, aiohttp.ClientConnectorError) and exc.os_error.errno == errno.ECONNREFUSED


def _says_stopping(status: int, raw: bytes) -> bool:
    if status != AgentStopping.default_status:
        return False
    try:
        payload = json.loads(raw)
    except ValueError:
        return False
    return isinstance(payload, dict) and payload.get("type") == AgentStopping.error_type


def agent_connector(**kwargs: Any) -> aiohttp.TCPConnector:
    """The connector for a pool of agent connections (idle ones dropped after :data:`IDLE_KEEPALIVE`)."""
    return aiohttp.TCPConnector(keepalive_timeout=IDLE_KEEPALIVE, **kwargs)


class AgentClient:
    """Calls one agent. Pass the manager's shared ``aiohttp.ClientSession`` as ``session`` so all
    agents share one keep-alive pool; without it the client owns a session of its own.

    Every call has a deadline: ``timeouts[method]`` (default :data:`DEFAULT_METHOD_TIMEOUTS`,
    ``timeout`` for methods not listed), connecting at most ``connect_timeout``.
    ``on_unreachable(base_url)`` is called when the agent cannot be reached or does not answer
    in time, so the caller can reconcile with it once it is back. ``protocol`` is the version
    this side speaks (default: :func:`bai.common.protocol.advertised`); ``peer_protocol`` is the
    agent's, once known."""

    def __init__(self, addr: str, secret: str, *, session: aiohttp.ClientSession | None = None,
                 timeout: float = 30.0, timeouts: dict[str, float] | None = None,
                 connect_timeout: float = 5.0,
                 on_unreachable: Callable[[str], None] | None = None,
                 protocol: proto.ProtocolVersion | None = None,
                 reconnect_window: float = 10.0) -> None:
        base = addr if "://" in addr else f"http://{addr}"
        self.base_url = base.rstrip("/")
        self.protocol = protocol or proto.advertised()
        self.peer_protocol: proto.ProtocolVersion | None = None
        self._reconnect_window = reconnect_window
        self._headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json",
                         proto.HEADER: str(self.protocol)}
        self._owns_session = session is None
        self._session = session
        self._timeout = timeout
        self._timeouts = {**DEFAULT_METHOD_TIMEOUTS, **(timeouts or {})}
        self._connect_timeout = connect_timeout
        self._on_unreachable = on_unreachable
        #: The agent's last reply said it is stopping: until another reply says otherwise, a
        #: request sent meets a process that admits nothing new (or no process at all).
        self._peer_stopping = False

    def timeout_for(self, method: str) -> float:
        return self._timeouts.get(method, self._timeout)

    def note_peer_protocol(self, announced: object) -> None:
        """What the agent announced (a reply header, a heartbeat field; None/"" = unversioned)."""
        version = proto.peer_version(announced)
        if version is not None:
            self.peer_protocol = version

    def _check_peer(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` as the agent's version understands it; raises rather than send what it cannot."""
        peer = self.peer_protocol
        if peer is None:
            return body  # not known yet: its reply tells (an older agent answers 404 to a new method)
        reason = proto.incompatibility(self.protocol, peer)
        if reason is not None:
            raise ProtocolMismatch(f"the agent at {self.base_url}: {reason}")
        if not proto.supports(peer, method):
            raise UnsupportedCall(f"{method} needs protocol {proto.METHODS_SINCE[method]}; "
                                  f"the agent at {self.base_url} speaks {peer}")
        return proto.for_peer(method, body, peer)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=agent_connector())
        return self._session

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(self, method: str, body: dict[str, Any], *, request_timeout: float | None = None) -> dict[str, Any]:
        url = f"{self.base_url}/rpc/{method}"
        body = self._check_peer(method, body)
        total = request_timeout if request_timeout is not None else self.timeout_for(method)
        loop = asyncio.get_running_loop()
        reconnect_until = loop.time() + (min(self._reconnect_window, total) if method in RECONNECTING_METHODS else 0)
        try:
            while True:
                limit = aiohttp.ClientTimeout(total=total, sock_connect=min(total, self._connect_timeout))
                sent_to_stopping = self._peer_stopping
                try:
                    async with self._get_session().post(
                        url, data=json.dumps(body).encode(), headers=self._headers, timeout=limit,
                    ) as resp:
                        raw = await resp.read()
                        status = resp.status
                        self.note_peer_protocol(resp.headers.get(proto.HEADER))
                except aiohttp.ClientError as exc:
                    # Nothing was done when nobody listens (refused: the agent restarts), nor when
                    # the agent had said it is stopping before we sent: it admits nothing new then.
                    # Any other lost connection may have lost a request the agent acted on.
                    safe = _refused(exc) or (sent_to_stopping and isinstance(exc, aiohttp.ClientConnectionError))
                    if not safe or loop.time() + RECONNECT_INTERVAL >= reconnect_until:
                        raise
                else:
                    self._peer_stopping = _says_stopping(status, raw)
                    if not self._peer_stopping or loop.time() + RECONNECT_INTERVAL >= reconnect_until:
                        break
                await asyncio.sleep(RECONNECT_INTERVAL)
        except TimeoutError as exc:
            if self._on_unreachable is not None:  # whatever we asked may or may not have happened
                self._on_unreachable(self.base_url)
            raise AgentTimeout(f"{method} on {self.base_url} timed out after {total:g} s") from exc
        except aiohttp.ClientError as exc:
            if self._on_unreachable is not None and isinstance(
                    exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)):
                self._on_unreachable(self.base_url)
            raise AgentFailure(f"cannot reach the agent at {self.base_url}: {exc}",
                               title="Agent unreachable", status=503) from exc
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {"msg": raw[:200].decode(errors="replace")}
        if status != 200:
            raise error_from_reply(status, payload if isinstance(payload, dict) else {})
        if not isinstance(payload, dict):
            raise AgentFailure(f"{method}: the agent sent a non-object reply")
        return payload

    async def ping(self, msg: str = "ping") -> str:
        return str((await self.call("ping", {"msg": msg}))["msg"])

    async def create_kernels(self, session_id: str, kernel_ids: list[str],
                             configs: list[dict[str, Any]], cluster_info: dict[str, Any] | None = None) -> None:
        await self.call("create_kernels", {
            "session_id": session_id, "kernel_ids": kernel_ids, "configs": configs,
            "cluster_info": cluster_info or {},
        })

    async def destroy_kernel(self, kernel_id: str, session_id: str | None = None,
                             reason: str | None = "user-requested") -> dict[str, Any]:
        reply = await self.call("destroy_kernel", {"kernel_id": kernel_id, "session_id": session_id, "reason": reason})
        stats: dict[str, Any] = reply.get("stats", {})
        return stats

    async def execute(self, session_id: str | None, kernel_id: str, run_id: str | None, mode: ExecuteMode,
                      code: str = "", opts: dict[str, Any] | None = None,
                      flush_timeout: float = 2.0) -> dict[str, Any]:
        """Returns ``{"runId", "status", "console", "exitCode", "options", "files"}``."""
        return await self.call("execute", {
            "session_id": session_id, "kernel_id": kernel_id, "run_id": run_id, "mode": mode,
            "code": code, "opts": opts or {}, "flush_timeout": flush_timeout,
        }, request_timeout=flush_timeout + self.timeout_for("execute"))

    async def interrupt_kernel(self, kernel_id: str) -> None:
        await self.call("interrupt_kernel", {"kernel_id": kernel_id})

    async def restart_kernel(self, kernel_id: str) -> None:
        """A fresh user-code process in the same container (its variables are gone)."""
        await self.call("restart_kernel", {"kernel_id": kernel_id})

    async def open_terminal(self, kernel_id: str, rows: int = 24, cols: int = 80) -> AgentTerminal:
        """A login shell on a pty in the kernel, over the agent's ``/pty/{kernel_id}`` websocket
        (bai.agent.terminal); TerminalError when it cannot be opened."""
        return await connect_terminal(self._get_session(), f"{self.base_url}/pty/{kernel_id}", self._headers,
                                      rows, cols, self._connect_timeout)

    async def get_logs(self, kernel_id: str, tail_lines: int = LOG_TAIL_LINES,
                       max_bytes: int = LOG_TAIL_BYTES) -> str:
        """The tail of a kernel's log (see :class:`GetLogsRequest`)."""
        reply = await self.call("get_logs", {"kernel_id": kernel_id, "tail_lines": tail_lines,
                                             "max_bytes": max_bytes})
        return str(reply["logs"])

    async def list_kernels(self) -> list[dict[str, Any]]:
        kernels: list[dict[str, Any]] = (await self.call("list_kernels", {}))["kernels"]
        return kernels

    async def agent_info(self) -> dict[str, Any]:
        """``{"id", "version", "protocol", "started_at", "kernels"}`` (protocol 1.1; an older agent:
        UnsupportedCall, or its 404 when its version was not known yet)."""
        return await self.call("agent_info", {})

    async def commit_kernel(self, kernel_id: str, canonical: str, labels: dict[str, str], *,
                            push: dict[str, str | None] | None = None) -> dict[str, Any]:
        """Save the kernel's container as the image ``canonical`` and, with ``push`` (registry
        credentials), push it (see :class:`CommitKernelRequest`)."""
        return await self.call("commit_kernel", {"kernel_id": kernel_id, "canonical": canonical, "labels": labels,
                                                 "push": push})

    async def save_kernel(self, kernel_id: str, subdir: str, filename: str) -> dict[str, Any]:
        """Save the kernel's container as an image tar on the agent (see :class:`SaveKernelRequest`)."""
        return await self.call("save_kernel", {"kernel_id": kernel_id, "subdir": subdir, "filename": filename})

    async def get_commit_status(self, kernel_id: str) -> str:
        """``ongoing`` while a commit of the kernel runs on the agent, else ``ready``."""
        return str((await self.call("get_commit_status", {"kernel_id": kernel_id}))["status"])

    async def update_scaling_group(self, scaling_group: str) -> dict[str, Any]:
        """Move the agent to another resource group, for good (see :class:`UpdateScalingGroupRequest`)."""
        return await self.call("update_scaling_group", {"scaling_group": scaling_group})

    async def remove_image(self, canonical: str, *, request_timeout: float | None = None) -> bool:
        """Delete a customized image from the agent; False when it had none (see :class:`RemoveImageRequest`)."""
        reply = await self.call("remove_image", {"canonical": canonical}, request_timeout=request_timeout)
        return bool(reply.get("removed"))

    async def start_service(self, kernel_id: str, service: str, *, arguments: dict[str, str | None] | None = None,
                            envs: dict[str, str] | None = None) -> dict[str, Any]:
        """``{"status": "started" | "running" | "failed", "error"?}`` (see :class:`StartServiceRequest`)."""
        return await self.call("start_service", {"kernel_id": kernel_id, "service": service,
                                                 "opts": {"arguments": arguments or {}, "envs": envs or {}}})

    async def shutdown_service(self, kernel_id: str, service: str) -> dict[str, Any]:
        """``{"status": "stopped" | "not-running"}`` (see :class:`ShutdownServiceRequest`)."""
        return await self.call("shutdown_service", {"kernel_id": kernel_id, "service": service})

    async def get_completions(self, kernel_id: str, code: str, options: dict[str, Any]) -> list[str]:
        reply = await self.call("get_completions", {"kernel_id": kernel_id, "code": code, "options": options})
        found = reply.get("completions")
        return [str(c) for c in found] if isinstance(found, list) else []

    async def list_files(self, kernel_id: str, path: str) -> dict[str, Any]:
        return await self.call("list_files", {"kernel_id": kernel_id, "path": path})

    async def upload_file(self, kernel_id: str, path: str, body: AsyncIterator[bytes], *,
                          transfer_timeout: float = 3600.0) -> int:
        """Stream ``body`` into ``path`` in the kernel (all or nothing); returns its size."""
        url = f"{self.base_url}/files/upload"
        limit = aiohttp.ClientTimeout(total=transfer_timeout, sock_connect=self._connect_timeout,
                                      sock_read=self.timeout_for("execute"))
        headers = {**self._headers, "Content-Type": "application/octet-stream"}
        try:
            async with self._get_session().post(url, params={"kernel_id": kernel_id, "path": path}, data=body,
                                                headers=headers, timeout=limit) as resp:
                payload = await self._json_reply(resp)
        except TimeoutError as exc:
            raise AgentTimeout(f"upload to {self.base_url} timed out") from exc
        except aiohttp.ClientError as exc:
            raise AgentFailure(f"upload to the agent at {self.base_url} failed: {exc}",
                               title="Agent unreachable", status=503) from exc
        size = payload.get("size")
        return size if isinstance(size, int) else 0

    @contextlib.asynccontextmanager
    async def download_file(self, kernel_id: str, path: str, max_size: int, *, archive: bool = False,
                            transfer_timeout: float = 3600.0) -> AsyncIterator[tuple[int, AsyncIterator[bytes]]]:
        """``(size, chunks)`` of a file in the kernel (``archive``: a tar of the file or directory);
        the chunks raise AgentFailure if the transfer breaks off (never fewer bytes than ``size``
        silently)."""
        url = f"{self.base_url}/files/download"
        limit = aiohttp.ClientTimeout(total=transfer_timeout, sock_connect=self._connect_timeout,
                                      sock_read=self.timeout_for("execute") * 2)
        body = json.dumps({"kernel_id": kernel_id, "path": path, "max_size": max_size, "archive": archive}).encode()
        try:
            async with self._get_session().post(url, data=body, headers=self._headers, timeout=limit) as resp:
                if resp.status != 200:
                    await self._json_reply(resp)
                size = int(resp.headers.get("X-Bai-File-Size", "-1"))
                if size < 0:
                    raise AgentFailure("the agent did not say the file's size")

                async def chunks() -> AsyncIterator[bytes]:
                    received = 0
                    try:
                        async for chunk in resp.content.iter_chunked(2**18):
                            received += len(chunk)
                            yield chunk
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        raise AgentFailure(f"the download from the agent broke off: {exc}") from exc
                    if received != size:
                        raise AgentFailure("the download from the agent broke off")

                yield size, chunks()
        except TimeoutError as exc:
            raise AgentTimeout(f"download from {self.base_url} timed out") from exc
        except aiohttp.ClientError as exc:
            raise AgentFailure(f"download from the agent at {self.base_url} failed: {exc}",
                               title="Agent unreachable", status=503) from exc

    @staticmethod
    async def _json_reply(resp: aiohttp.ClientResponse) -> dict[str, Any]:
        raw = await resp.read()
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {"msg": raw[:200].decode(errors="replace")}
        if resp.status != 200:
            raise error_from_reply(resp.status, payload if isinstance(payload, dict) else {})
        if not isinstance(payload, dict):
            raise AgentFailure("the agent sent a non-object reply")
        return payload

    async def host_mounts(self) -> dict[str, Any]:
        return await self.call("host_mounts", {})

    async def mount_host(self, name: str, fs_location: str, fs_type: str = "nfs", options: str | None = None, *,
                         fstab_path: str | None = None, edit_fstab: bool = False) -> dict[str, Any]:
        return await self.call("mount_host", {"name": name, "fs_location": fs_location, "fs_type": fs_type,
                                              "options": options, "fstab_path": fstab_path, "edit_fstab": edit_fstab})

    async def umount_host(self, name: str, *, fstab_path: str | None = None, edit_fstab: bool = False) -> dict[str, Any]:
        return await self.call("umount_host", {"name": name, "fstab_path": fstab_path, "edit_fstab": edit_fstab})

    async def read_fstab(self, fstab_path: str | None = None) -> str:
        return str((await self.call("read_fstab", {"fstab_path": fstab_path}))["content"])
