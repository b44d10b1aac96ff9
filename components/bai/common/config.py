"""Local config files: discovery and loading into frozen pydantic models."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from bai.common.etcd import parse_addr_list

M = TypeVar("M", bound=BaseModel)

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE_UNITS = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def _seconds(value: Any) -> Any:
    """A duration: a number of seconds, or a string like ``"90d"``, ``"24h"``, ``"30m"``, ``"45s"``."""
    if isinstance(value, str):
        text = value.strip().lower()
        unit = _DURATION_UNITS.get(text[-1:]) if text else None
        try:
            return float(text[:-1]) * unit if unit else float(text)
        except ValueError:
            raise ValueError(f"not a duration: {value!r} (seconds, or a number with s, m, h or d)") from None
    return value


def _bytes(value: Any) -> Any:
    """A number of bytes, or a string like ``"100g"``, ``"16MiB"`` (binary units k, m, g, t)."""
    if isinstance(value, str):
        text = value.strip().lower().removesuffix("ib").removesuffix("b")
        unit = _SIZE_UNITS.get(text[-1:]) if text else None
        try:
            return int(float(text[:-1]) * unit) if unit else int(text)
        except ValueError:
            raise ValueError(f"not a size: {value!r} (bytes, or a number with k, m, g or t)") from None
    return value


#: Seconds, written as a number or with a unit (``"24h"``), in every daemon's config file.
Duration = Annotated[float, BeforeValidator(_seconds), Field(allow_inf_nan=False)]
#: Bytes, written as a number or with a binary unit (``"16m"``).
ByteSize = Annotated[int, BeforeValidator(_bytes)]


class Section(BaseModel):
    """One TOML section: frozen, kebab-case aliases, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class EtcdConfig(Section):
    """``[etcd]``, the same in every daemon's file."""

    namespace: str = "local"
    #: One member's ``host:port``, or a cluster's members comma-separated (``"h1:2379,h2:2379,h3:2379"``):
    #: calls go to the member that answered last and move on to the next when it cannot be reached.
    addr: str = "127.0.0.1:2379"

    @field_validator("addr")
    @classmethod
    def _members(cls, value: str) -> str:
        return ",".join(f"{host}:{port}" for host, port in parse_addr_list(value, 2379))


class ConfigError(Exception):
    """A config file is missing or invalid; the message names every bad key path."""


def find_config(name: str, explicit: str | os.PathLike[str] | None = None) -> Path:
    """Find ``<name>.toml`` as the original does: $BACKEND_CONFIG_FILE, CWD and its parents,
    ``~/.config/backend.ai``, then ``/etc/backend.ai``."""
    if explicit:
        return Path(explicit)
    if env := os.environ.get("BACKEND_CONFIG_FILE"):
        return Path(env)
    fname = f"{name}.toml"
    cwd = Path.cwd()
    for d in [cwd, *cwd.parents]:
        if (d / fname).is_file():
            return d / fname
    for d in (Path.home() / ".config" / "backend.ai", Path("/etc/backend.ai")):
        if (d / fname).is_file():
            return d / fname
    raise ConfigError(f"no {fname} found (set BACKEND_CONFIG_FILE or pass --config)")


def load_config(model: type[M], path: Path) -> M:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{path}: invalid configuration"]
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            lines.append(f"  {loc}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from exc
