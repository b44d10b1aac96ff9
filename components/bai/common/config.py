"""Local config files: discovery and loading into frozen pydantic models."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class Section(BaseModel):
    """One TOML section: frozen, kebab-case aliases, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class EtcdConfig(Section):
    """``[etcd]``, the same in every daemon's file."""

    namespace: str = "local"
    addr: str = "127.0.0.1:2379"


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
