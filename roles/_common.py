"""Small deploy-level helpers shared by several roles."""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files

from .settings import Settings, render_secrets, secret_values


def secrets_file(settings: Settings) -> OperationMeta:
    """Write the secrets file (mode 600). Its values were read from the same file by the engine
    before this run, and generated only where missing, so a rerun writes identical bytes."""
    files.directory(name="Config directory", path=settings.config_dir, mode="755")
    return files.put(
        name="Write secrets file",
        src=StringIO(render_secrets(secret_values(settings))),
        dest=settings.secrets_path,
        mode="600",
        user="root",
        group="root",
    )


def secret_expr(settings: Settings, key: str) -> str:
    """A shell expression that expands to a secret read from the secrets file on the host, so the
    secret itself never appears on a command line."""
    pattern = f's/^{key} = "\\(.*\\)"$/\\1/p'
    return f'"$(sed -n {shlex.quote(pattern)} {shlex.quote(settings.secrets_path)})"'
