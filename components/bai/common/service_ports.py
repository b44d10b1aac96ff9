"""Service ports: the ``ai.backend.service-ports`` image label and the service-definition DSL.

One parser for everyone: the manager (image rescans, image and session info), the agent (port
publishing at create, ``start_service``); the kernel runner (stdlib only) receives a definition
already parsed and checked here, as a plain JSON object.

**The label** is a comma-separated list of ``name:protocol:port`` or ``name:protocol:[p1,p2]``
(the first port is the primary one): ``name`` is ``[\\w-]+``, ``protocol`` one of ``tcp``,
``http``, ``preopen`` (``pty`` entries are skipped, as the original does; anything else is
refused), every port is above 1024 and below 65535, unique in the label and none of the ports
the platform keeps for itself (:data:`RESERVED_PORTS`). Names are unique too.

**A service definition** (``/etc/backend.ai/service-defs/<name>.json`` in the image) is a JSON
object: ``command`` (argv list of templates), ``prestart`` (actions run first, in order),
optional ``url_template`` (interpolated by clients with ``{protocol}``, ``{host}``, ``{port}``),
``allowed_arguments`` / ``allowed_envs`` (what a client may pass on start-service),
``default_arguments`` (arguments given unless the client gives them; plain values, not
templates) and ``env`` (environment
templates). Templates use Python's brace format with the predefined variables ``ports`` (the
container ports, ``{ports[0]}``), ``runtime_path`` (the image's language runtime),
``venv_path`` (the directory above ``runtime_path``'s ``bin``), ``home`` (``/home/work``) and
the ``ref`` of earlier prestart actions; a template naming anything else is refused when the
definition is parsed, not when the service starts.

Prestart actions (``{"action", "args", "ref"?}``): ``write_file`` (``filename``, ``body`` lines,
``mode`` octal string, ``append``), ``write_tempfile`` (``body``, ``mode``; its ``ref`` is the
file's path), ``mkdir`` (``path``), ``run_command`` (``command`` argv; its ``ref`` is an object
with ``out`` and ``err``), ``log`` (``body``, ``debug``).
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "INTRINSIC_SERVICES",
    "LABEL_SERVICE_PORTS",
    "RESERVED_PORTS",
    "SERVICE_DEFS_DIR",
    "ServiceDefinition",
    "ServicePort",
    "ServicePortError",
    "check_client_options",
    "parse_service_definition",
    "parse_service_ports",
    "template_variables",
]

LABEL_SERVICE_PORTS = "ai.backend.service-ports"
#: Where an image keeps its service definitions, one ``<service name>.json`` each.
SERVICE_DEFS_DIR = "/etc/backend.ai/service-defs"
#: Ports of the platform's own: the original's REPL/pty ports, sshd and ttyd.
RESERVED_PORTS = frozenset({2000, 2001, 2002, 2003, 2200, 7681})
#: Services the agent adds by itself when the image defines them (a service definition file of
#: that name): name -> (protocol, container port). They never appear in the label.
INTRINSIC_SERVICES: dict[str, tuple[str, int]] = {"sshd": ("tcp", 2200), "ttyd": ("http", 7681)}
PROTOCOLS = ("tcp", "http", "preopen")
#: Bounds on what an image may declare (a label or definition is image-author input).
MAX_SERVICES = 32
MAX_PORTS_PER_SERVICE = 16
MAX_DEFINITION_BYTES = 64 * 2**10
MAX_TEMPLATE_LENGTH = 4096
#: Bounds on what a client may pass on start-service.
MAX_OPTION_ITEMS = 64
MAX_OPTION_LENGTH = 4096

_ENTRY_RE = re.compile(r"^(?P<name>[\w-]+):(?P<proto>\w+):(?P<ports>\[\s*\d+(?:\s*,\s*\d+)*\s*\]|\d+)$")
# Commas inside [...] belong to the port list, not to the entry list.
_SPLIT_RE = re.compile(r",(?![^\[]*\])")
_NAME_RE = r"^[\w-]{1,64}$"
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_ARG_NAME_RE = re.compile(r"^-{0,2}[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
#: Variables every template may use (see the module docstring).
PREDEFINED_VARIABLES = frozenset({"ports", "runtime_path", "venv_path", "home"})


class ServicePortError(ValueError):
    """A label, a definition or a client's start-service options that cannot be accepted; the
    message says what and where."""


ServiceName = Annotated[str, StringConstraints(pattern=_NAME_RE)]


class ServicePort(BaseModel):
    """One service port of a kernel. ``host_ports`` (same order as ``container_ports``) is set
    once the agent has published them; the optional keys come from the service definition."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: ServiceName
    protocol: Literal["tcp", "http", "preopen"]
    container_ports: tuple[int, ...] = Field(min_length=1, max_length=MAX_PORTS_PER_SERVICE)
    host_ports: tuple[int, ...] = ()
    is_inference: bool = False
    url_template: str | None = None
    allowed_arguments: tuple[str, ...] | None = None
    allowed_envs: tuple[str, ...] | None = None

    def stored(self) -> dict[str, Any]:
        """The shape kept in ``kernels.service_ports`` and sent in ``kernel_started``."""
        out: dict[str, Any] = {"name": self.name, "protocol": self.protocol,
                               "container_ports": list(self.container_ports),
                               "host_ports": list(self.host_ports), "is_inference": self.is_inference}
        if self.url_template is not None:
            out["url_template"] = self.url_template
        if self.allowed_arguments is not None:
            out["allowed_arguments"] = list(self.allowed_arguments)
        if self.allowed_envs is not None:
            out["allowed_envs"] = list(self.allowed_envs)
        return out


def parse_service_ports(raw: str | None, *, endpoint_ports: Iterable[str] = ()) -> list[ServicePort]:
    """The service ports an ``ai.backend.service-ports`` label declares (see the module
    docstring); raises :class:`ServicePortError` naming the offending entry."""
    inference = set(endpoint_ports)
    out: list[ServicePort] = []
    seen_ports: set[int] = set()
    seen_names: set[str] = set()
    for item in (p.strip() for p in _SPLIT_RE.split(raw or "")):
        if not item:
            continue
        m = _ENTRY_RE.match(item)
        if m is None:
            raise ServicePortError(f"service port {item!r}: not name:protocol:port or name:protocol:[port,...]")
        name, proto = m["name"], m["proto"]
        if proto == "pty":
            continue  # the original's legacy terminal entries: ignored, not refused
        if proto not in PROTOCOLS:
            raise ServicePortError(f"service port {item!r}: unknown protocol {proto!r} "
                                   f"(one of {', '.join(PROTOCOLS)})")
        if len(name) > 64:
            raise ServicePortError(f"service port {item!r}: the name is longer than 64 characters")
        if name in seen_names or name in INTRINSIC_SERVICES:
            raise ServicePortError(f"service port {item!r}: the name {name!r} is "
                                   + ("declared twice" if name in seen_names else "reserved for the platform"))
        ports = [int(p) for p in m["ports"].strip("[] ").split(",")]
        if len(ports) > MAX_PORTS_PER_SERVICE:
            raise ServicePortError(f"service port {item!r}: more than {MAX_PORTS_PER_SERVICE} ports")
        for port in ports:
            if not 1024 < port < 65535:
                raise ServicePortError(f"service port {item!r}: port {port} is not in 1025-65534")
            if port in RESERVED_PORTS:
                raise ServicePortError(f"service port {item!r}: port {port} is reserved "
                                       f"({', '.join(map(str, sorted(RESERVED_PORTS)))})")
            if port in seen_ports:
                raise ServicePortError(f"service port {item!r}: port {port} is declared twice")
            seen_ports.add(port)
        seen_names.add(name)
        out.append(ServicePort(name=name, protocol=proto, container_ports=tuple(ports),  # type: ignore[arg-type]
                               is_inference=name in inference))
        if len(out) > MAX_SERVICES:
            raise ServicePortError(f"more than {MAX_SERVICES} service ports")
    return out


# ------------------------------------------------------------------ service definitions

Template = Annotated[str, StringConstraints(max_length=MAX_TEMPLATE_LENGTH)]
_Ref = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WriteFileArgs(_Args):
    filename: Template
    body: list[Template] = Field(max_length=1024)
    mode: str = Field("755", pattern=r"^[0-7]{3,4}$")
    append: bool = False


class WriteTempfileArgs(_Args):
    body: list[Template] = Field(max_length=1024)
    mode: str = Field("755", pattern=r"^[0-7]{3,4}$")


class MkdirArgs(_Args):
    path: Template


class RunCommandArgs(_Args):
    command: list[Template] = Field(min_length=1, max_length=256)


class LogArgs(_Args):
    body: Template
    debug: bool = False


_ACTION_ARGS: dict[str, type[_Args]] = {
    "write_file": WriteFileArgs, "write_tempfile": WriteTempfileArgs, "mkdir": MkdirArgs,
    "run_command": RunCommandArgs, "log": LogArgs,
}
#: Actions whose ``ref`` names a result later templates may use.
_ACTIONS_WITH_RESULT = frozenset({"write_tempfile", "run_command"})


class PrestartAction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    action: Literal["write_file", "write_tempfile", "mkdir", "run_command", "log"]
    args: dict[str, Any]
    ref: _Ref | None = None

    @model_validator(mode="after")
    def _args_of_action(self) -> PrestartAction:
        _ACTION_ARGS[self.action].model_validate(self.args)
        return self

    def templates(self) -> list[str]:
        parsed = _ACTION_ARGS[self.action].model_validate(self.args)
        if isinstance(parsed, WriteFileArgs):
            return [parsed.filename, *parsed.body]
        if isinstance(parsed, WriteTempfileArgs):
            return list(parsed.body)
        if isinstance(parsed, MkdirArgs):
            return [parsed.path]
        if isinstance(parsed, RunCommandArgs):
            return list(parsed.command)
        assert isinstance(parsed, LogArgs)
        return [parsed.body]


class ServiceDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    command: list[Template] = Field(min_length=1, max_length=256)
    prestart: list[PrestartAction] = Field(default_factory=list, max_length=64)
    url_template: Template | None = None
    allowed_arguments: list[str] = Field(default_factory=list, max_length=MAX_OPTION_ITEMS)
    allowed_envs: list[str] = Field(default_factory=list, max_length=MAX_OPTION_ITEMS)
    default_arguments: dict[str, str | None] = Field(default_factory=dict, max_length=MAX_OPTION_ITEMS)
    env: dict[str, Template] = Field(default_factory=dict, max_length=MAX_OPTION_ITEMS)
    #: The original's "start nothing" services (e.g. a port the user's own code serves).
    noop: bool = False

    @field_validator("allowed_arguments")
    @classmethod
    def _argument_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _ARG_NAME_RE.match(name):
                raise ValueError(f"allowed_arguments: {name!r} is not an option name")
        return value

    @field_validator("allowed_envs")
    @classmethod
    def _env_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _ENV_NAME_RE.match(name):
                raise ValueError(f"allowed_envs: {name!r} is not an environment variable name")
        return value

    @field_validator("env")
    @classmethod
    def _env_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _ENV_NAME_RE.match(name):
                raise ValueError(f"env: {name!r} is not an environment variable name")
        return value

    @model_validator(mode="after")
    def _templates_use_known_variables(self) -> ServiceDefinition:
        known = set(PREDEFINED_VARIABLES)
        for i, action in enumerate(self.prestart):
            for text in action.templates():
                _check_template(text, known, f"prestart[{i}] ({action.action})")
            if action.ref is not None:
                if action.ref in PREDEFINED_VARIABLES:
                    raise ValueError(f"prestart[{i}]: ref {action.ref!r} would hide a predefined variable")
                if action.action in _ACTIONS_WITH_RESULT:
                    known.add(action.ref)
        for text in self.command:
            _check_template(text, known, "command")
        for name, text in self.env.items():
            _check_template(text, known, f"env.{name}")
        for name in self.default_arguments:
            if name not in self.allowed_arguments:
                raise ValueError(f"default_arguments: {name!r} is not in allowed_arguments")
        return self


def template_variables(text: str) -> set[str]:
    """The top-level variables a brace template names (``{ports[0]}`` -> ``ports``); raises
    ValueError for a malformed template or a positional field."""
    names: set[str] = set()
    for _literal, field, spec, _conv in string.Formatter().parse(text):
        if field is None:
            continue
        root = re.split(r"[.\[]", field, maxsplit=1)[0]
        if not root or root.isdigit():
            raise ValueError(f"positional field {{{field}}} (name a variable instead)")
        if "{" in (spec or ""):
            raise ValueError(f"nested field in the format spec of {{{field}}}")
        if "." in field:
            # Attribute access reaches into Python objects (format-string injection).
            raise ValueError(f"attribute access in {{{field}}}")
        names.add(root)
    return names


def _check_template(text: str, known: set[str], where: str) -> None:
    try:
        names = template_variables(text)
    except ValueError as exc:
        raise ValueError(f"{where}: bad template {text!r}: {exc}") from None
    unknown = names - known
    if unknown:
        raise ValueError(f"{where}: template {text!r} uses unknown variable(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(known))})")


def parse_service_definition(name: str, raw: bytes | str | Mapping[str, Any]) -> ServiceDefinition:
    """A service definition from its JSON text (or already-decoded object); raises
    :class:`ServicePortError` saying which field is wrong."""
    if isinstance(raw, (bytes, str)):
        if len(raw) > MAX_DEFINITION_BYTES:
            raise ServicePortError(f"service definition {name!r}: larger than {MAX_DEFINITION_BYTES} bytes")
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ServicePortError(f"service definition {name!r}: not JSON: {exc}") from None
    if not isinstance(raw, Mapping):
        raise ServicePortError(f"service definition {name!r}: not a JSON object")
    try:
        return ServiceDefinition.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(definition)'}: {e['msg']}" for e in exc.errors())
        raise ServicePortError(f"service definition {name!r}: {problems}") from None


def check_client_options(name: str, definition: ServiceDefinition | None, arguments: Mapping[str, Any] | None,
                         envs: Mapping[str, Any] | None) -> tuple[dict[str, str | None], dict[str, str]]:
    """What a client asked for on start-service, checked against the definition's
    ``allowed_arguments`` / ``allowed_envs``: the arguments (with the definition's defaults
    filled in) and the environment. Anything not allowed is refused with a
    :class:`ServicePortError` naming it; values must be strings (``None``: a bare flag)."""
    allowed_args = set(definition.allowed_arguments) if definition else set()
    allowed_envs = set(definition.allowed_envs) if definition else set()
    args_in, envs_in = dict(arguments or {}), dict(envs or {})
    if len(args_in) > MAX_OPTION_ITEMS or len(envs_in) > MAX_OPTION_ITEMS:
        raise ServicePortError(f"service {name!r}: at most {MAX_OPTION_ITEMS} arguments and envs")
    refused_args = sorted(set(args_in) - allowed_args)
    if refused_args:
        raise ServicePortError(f"service {name!r} does not accept the argument(s) {', '.join(refused_args)} "
                               f"(allowed: {', '.join(sorted(allowed_args)) or 'none'})")
    refused_envs = sorted(set(envs_in) - allowed_envs)
    if refused_envs:
        raise ServicePortError(f"service {name!r} does not accept the environment variable(s) "
                               f"{', '.join(refused_envs)} (allowed: {', '.join(sorted(allowed_envs)) or 'none'})")
    out_args: dict[str, str | None] = dict(definition.default_arguments) if definition else {}
    for key, value in args_in.items():
        if value is not None and not isinstance(value, str):
            raise ServicePortError(f"service {name!r}: argument {key} must be a string")
        if value is not None and (len(value) > MAX_OPTION_LENGTH or "\x00" in value):
            raise ServicePortError(f"service {name!r}: argument {key} is too long or holds NUL")
        out_args[key] = value
    out_envs: dict[str, str] = {}
    for key, value in envs_in.items():
        if not isinstance(value, str) or len(value) > MAX_OPTION_LENGTH or "\x00" in value:
            raise ServicePortError(f"service {name!r}: environment variable {key} must be a string "
                                   f"of at most {MAX_OPTION_LENGTH} characters without NUL")
        out_envs[key] = value
    return out_args, out_envs
