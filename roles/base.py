"""What every bai host gets besides the OS preparation (roles/os_prep.py): the bai directories,
the bai commands linked into ``bin_dir``, ``bin_dir`` on PATH for login shells, and the install
record (``<config_dir>/release.toml``: the release this install put there, roles/bai.py).
"""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra.api import deploy
from pyinfra.operations import files

from . import _ops
from .bai import release_record
from .catalog import GROUPS, Role
from .settings import COMMANDS, Settings

PROFILE_PATH = "/etc/profile.d/bai.sh"


def profile_text(settings: Settings) -> str:
    """/etc/profile.d/bai.sh: login shells (``bash -l``, ssh, su -) find ``backend.ai`` & co."""
    return ("# managed by bai-install: puts the bai commands "
            f"({', '.join(COMMANDS)}) on PATH\n{settings.path_line}\n")


def command_links(settings: Settings) -> tuple[str, list[str]]:
    """(check, commands) that leave ``bin_dir`` holding exactly one link per command, into the
    venv: a link pointing elsewhere (another venv) is replaced, a stale one removed; files that
    are not links are never touched."""
    d = shlex.quote(settings.bin_dir)
    want = sorted(COMMANDS)
    same = " && ".join(
        f'[ "$(readlink {d}/{shlex.quote(c)})" = {shlex.quote(settings.bin(c))} ]' for c in want)
    # the wanted links are there, and they are the only links
    check = f"{same} && [ $(find {d} -mindepth 1 -maxdepth 1 -type l | wc -l) -eq {len(want)} ]"
    keep = " ".join(f"! -name {shlex.quote(c)}" for c in want)
    links = "; ".join(f"ln -sfn {shlex.quote(settings.bin(c))} {d}/{shlex.quote(c)}" for c in want)
    return check, [f"set -e; mkdir -p {d}; find {d} -mindepth 1 -maxdepth 1 -type l {keep} -delete; "
                   f"{links}"]


@deploy("base")
def base(settings: Settings) -> None:
    for path, mode in ((settings.config_dir, "755"), (settings.log_dir, "755"),
                       (settings.state_dir, "755")):
        files.directory(name=f"Directory {path}", path=path, mode=mode)
    check, commands = command_links(settings)
    _ops.ensure(name=f"Link the bai commands into {settings.bin_dir}", check=check,
                commands=commands, noop_message="links in place")
    files.put(name=f"Put {settings.bin_dir} on PATH for login shells",
              src=StringIO(profile_text(settings)), dest=PROFILE_PATH, mode="644")
    release_record(settings)


ROLE = Role(name="base", groups=GROUPS, deploy=base)
