"""Client configuration from the environment, as the official SDK reads it.

Each key ``X`` is read from ``BACKEND_X``, falling back to the legacy ``SORNA_X``. Before reading,
a ``.env`` file found from the current directory upwards is loaded into ``os.environ`` with
override (python-dotenv's ``load_dotenv(find_dotenv(usecwd=True), override=True)``).

No third-party imports here: the CLI builds its config on every start.
"""

from __future__ import annotations

import os
import platform
import random
import re
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from . import get_user_agent
from .exceptions import BackendClientError

__all__ = (
    "API_VERSION",
    "MIN_API_VERSION",
    "DEFAULT_IMAGE_ARCH",
    "APIConfig",
    "parse_api_version",
    "format_api_version",
    "get_env",
    "bool_env",
    "find_dotenv",
    "load_dotenv",
    "parse_dotenv",
)

API_VERSION: tuple[int, str] = (8, "20240315")
MIN_API_VERSION: tuple[int, str] = (7, "20230615")

_ARCH_ALIASES = {
    "arm64": "aarch64",
    "aarch64": "aarch64",
    "x86_64": "x86_64",
    "x64": "x86_64",
    "amd64": "x86_64",
    "x86-64": "x86_64",
}
DEFAULT_IMAGE_ARCH: str = _ARCH_ALIASES.get(platform.machine().lower(), platform.machine() or "x86_64")

_rx_api_version = re.compile(r"^v(\d+)\.(\d{8})$")


def parse_api_version(value: str) -> tuple[int, str]:
    """``"v8.20240315"`` -> ``(8, "20240315")``; raises ValueError otherwise."""
    m = _rx_api_version.match(value)
    if m is None:
        raise ValueError("Could not parse the given API version string", value)
    return int(m.group(1)), m.group(2)


def format_api_version(version: tuple[int, str]) -> str:
    return f"v{version[0]}.{version[1]}"


# ---------------------------------------------------------------------------------------------
# .env support (a subset of python-dotenv, enough for KEY=VALUE files)

_rx_dotenv_line = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*(?:=\s*(.*))?$")
_rx_interp = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_escapes = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'"}


def find_dotenv(start: Path | None = None, filename: str = ".env") -> Path | None:
    """The first ``.env`` file in ``start`` (default: CWD) or any of its parents."""
    try:
        cur = (start or Path.cwd()).resolve()
    except OSError:
        return None
    for d in (cur, *cur.parents):
        candidate = d / filename
        if candidate.is_file():
            return candidate
    return None


def _unquote(raw: str, env: Mapping[str, str]) -> str:
    raw = raw.strip()
    if not raw:
        return ""
    q = raw[0]
    if q in ("'", '"'):
        out: list[str] = []
        i = 1
        while i < len(raw):
            c = raw[i]
            if c == "\\" and q == '"' and i + 1 < len(raw):
                nxt = raw[i + 1]
                out.append(_escapes.get(nxt, "\\" + nxt))
                i += 2
                continue
            if c == "\\" and q == "'" and i + 1 < len(raw) and raw[i + 1] in ("'", "\\"):
                out.append(raw[i + 1])
                i += 2
                continue
            if c == q:
                break
            out.append(c)
            i += 1
        value = "".join(out)
        return _interpolate(value, env) if q == '"' else value
    # unquoted: an inline comment starts at " #"
    m = re.search(r"\s+#", raw)
    if m is not None:
        raw = raw[: m.start()]
    return _interpolate(raw.strip(), env)


def _interpolate(value: str, env: Mapping[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        got = env.get(m.group(1))
        default = m.group(2)
        if default is not None:
            return got if got else default
        return got or ""

    return _rx_interp.sub(repl, value)


def parse_dotenv(text: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Parse ``.env`` text into a dict (``${VAR}`` expands from earlier keys, then ``env``)."""
    result: dict[str, str] = {}
    base: Mapping[str, str] = env if env is not None else os.environ
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _rx_dotenv_line.match(line)
        if m is None:
            continue
        key, raw = m.group(1), m.group(2)
        if raw is None:
            continue
        # multi-line quoted values
        rs = raw.lstrip()
        if rs[:1] in ("'", '"') and not _is_closed(rs):
            while i < len(lines) and not _is_closed(rs):
                rs += "\n" + lines[i]
                i += 1
            raw = rs
        result[key] = _unquote(raw, {**base, **result})
    return result


def _is_closed(quoted: str) -> bool:
    q = quoted[0]
    i = 1
    while i < len(quoted):
        if quoted[i] == "\\":
            i += 2
            continue
        if quoted[i] == q:
            return True
        i += 1
    return False


def load_dotenv(
    path: Path | None = None, *, environ: MutableMapping[str, str] | None = None, override: bool = True
) -> bool:
    """Load a ``.env`` file (default: the one :func:`find_dotenv` finds) into ``environ``."""
    env = os.environ if environ is None else environ
    p = path if path is not None else find_dotenv()
    if p is None:
        return False
    try:
        text = p.read_text(encoding="utf-8")
    except OSError:
        return False
    for k, v in parse_dotenv(text, env).items():
        if override or k not in env:
            env[k] = v
    return True


# ---------------------------------------------------------------------------------------------

T = TypeVar("T")


def get_env(
    key: str,
    default: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    clean: Callable[[str], T] = str,  # type: ignore[assignment]
) -> T:
    """``BACKEND_<KEY>``, else ``SORNA_<KEY>``, else ``default``; then ``clean`` is applied.

    Raises KeyError when there is no value and no default.
    """
    env = os.environ if environ is None else environ
    key = key.upper()
    raw = env.get("BACKEND_" + key)
    if raw is None:
        raw = env.get("SORNA_" + key)
    if raw is None:
        if default is None:
            raise KeyError(key)
        raw = default
    return clean(raw)


def bool_env(v: str) -> bool:
    lv = v.strip().lower()
    if lv in ("y", "yes", "t", "true", "1"):
        return True
    if lv in ("n", "no", "f", "false", "0"):
        return False
    raise ValueError("Unrecognized value of boolean environment variable", v)


def _clean_endpoints(v: str) -> list[str]:
    urls: list[str] = []
    for entry in v.split(","):
        entry = entry.strip()
        if not entry:
            continue
        parts = urlsplit(entry)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"URL {entry} is not absolute.")
        urls.append(entry)
    if not urls:
        raise ValueError("no API endpoint is configured")
    return urls


def _clean_tokens(v: str) -> list[str]:
    return [t for t in v.split(",") if t] if v else []


def _clean_address_map(v: str) -> dict[str, str]:
    result: dict[str, str] = {}
    if not v:
        return result
    for assignment in v.split(","):
        k, _, val = assignment.partition("=")
        if not k or not val:
            raise ValueError(f"{v} is not a valid mapping expression")
        result[k] = val
    return result


@dataclass
class APIConfig:
    """The client configuration (see ``config-and-cli.md`` §5).

    Build it with :meth:`from_env`; keyword overrides win over the environment.
    """

    endpoints: list[str] = field(default_factory=lambda: ["https://api.cloud.backend.ai"])
    endpoint_type: str = "api"
    domain: str = "default"
    group: str = "default"
    access_key: str = ""
    secret_key: str = ""
    version: str = format_api_version(API_VERSION)
    hash_type: str = "sha256"
    vfolder_mounts: list[str] = field(default_factory=list)
    skip_sslcert_validation: bool = False
    connection_timeout: float = 10.0
    read_timeout: float = 0.0
    storage_proxy_address_map: dict[str, str] = field(default_factory=dict)
    user_agent: str = field(default_factory=get_user_agent)

    DEFAULTS = {
        "endpoint": "https://api.cloud.backend.ai",
        "endpoint_type": "api",
        "domain": "default",
        "group": "default",
        "connection_timeout": "10.0",
        "read_timeout": "0",
    }

    @classmethod
    def from_env(
        cls,
        environ: MutableMapping[str, str] | None = None,
        *,
        dotenv: bool = True,
        cwd: Path | None = None,
        endpoint: str | None = None,
        endpoint_type: str | None = None,
        domain: str | None = None,
        group: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        hash_type: str | None = None,
        skip_sslcert_validation: bool | None = None,
        connection_timeout: float | None = None,
        read_timeout: float | None = None,
        shuffle: bool = True,
    ) -> APIConfig:
        """Read the configuration from ``environ`` (default ``os.environ``).

        ``dotenv``: first load the nearest ``.env`` (searched from ``cwd`` upwards) into
        ``environ`` with override, as the official SDK does. Raises BackendClientError on
        malformed values.
        """
        env = os.environ if environ is None else environ
        if dotenv:
            load_dotenv(find_dotenv(cwd), environ=env, override=True)
        d = cls.DEFAULTS
        try:
            endpoints = _clean_endpoints(endpoint) if endpoint else get_env(
                "ENDPOINT", d["endpoint"], environ=env, clean=_clean_endpoints
            )
            if shuffle and len(endpoints) > 1:
                random.shuffle(endpoints)
            etype = endpoint_type if endpoint_type is not None else get_env(
                "ENDPOINT_TYPE", d["endpoint_type"], environ=env
            )
            if etype == "api":
                ak = access_key if access_key is not None else get_env("ACCESS_KEY", "", environ=env)
                sk = secret_key if secret_key is not None else get_env("SECRET_KEY", "", environ=env)
            else:
                ak = sk = "dummy"
            skip = bool(skip_sslcert_validation) or get_env(
                "SKIP_SSLCERT_VALIDATION", "no", environ=env, clean=bool_env
            )
            ctimeout = connection_timeout if connection_timeout is not None else get_env(
                "CONNECTION_TIMEOUT", d["connection_timeout"], environ=env, clean=float
            )
            rtimeout = read_timeout if read_timeout is not None else get_env(
                "READ_TIMEOUT", d["read_timeout"], environ=env, clean=float
            )
            return cls(
                endpoints=endpoints,
                endpoint_type=etype,
                domain=domain if domain is not None else get_env("DOMAIN", d["domain"], environ=env),
                group=group if group is not None else get_env("GROUP", d["group"], environ=env),
                access_key=ak,
                secret_key=sk,
                hash_type=(hash_type or "sha256").lower(),
                vfolder_mounts=get_env("VFOLDER_MOUNTS", "", environ=env, clean=_clean_tokens),
                skip_sslcert_validation=skip,
                connection_timeout=ctimeout,
                read_timeout=rtimeout,
                storage_proxy_address_map=get_env(
                    "OVERRIDE_STORAGE_PROXY", "", environ=env, clean=_clean_address_map
                ),
            )
        except ValueError as e:
            msg = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
            if len(e.args) > 1:
                msg = f"{msg}: {e.args[1]!r}"
            raise BackendClientError(f"Invalid client configuration: {msg}") from e

    @property
    def endpoint(self) -> str:
        """The currently active endpoint URL."""
        return self.endpoints[0]

    def rotate_endpoints(self) -> None:
        if len(self.endpoints) > 1:
            self.endpoints.append(self.endpoints.pop(0))

    @property
    def is_anonymous(self) -> bool:
        return self.access_key == ""

    @property
    def api_version(self) -> tuple[int, str]:
        return parse_api_version(self.version)

    @property
    def masked_secret_key(self) -> str:
        sk = self.secret_key
        return sk[:6] + ("*" * 24) + sk[-10:]
