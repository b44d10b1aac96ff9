"""OS preparation for every bai host: packages, directories, sysctl and ulimit tuning, and the
bai commands on PATH for login shells.

The tuning follows the original's install guide, minus what a container cannot take: the sysctl
file is applied best effort (``sysctl -e``; keys a container cannot write are skipped) and only
when the file changed.
"""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra.api import deploy
from pyinfra.operations import files

from . import _ops
from .catalog import GROUPS, Role
from .settings import COMMANDS, Settings

SYSCTL_PATH = "/etc/sysctl.d/99-bai.conf"
LIMITS_PATH = "/etc/security/limits.d/99-bai.conf"
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


def sysctl_text(settings: Settings) -> str:
    lo, hi = settings.agent.container_port_range
    # the ephemeral range must not overlap the containers' published port range
    ephemeral = "40000 65000" if hi < 40000 else f"{hi + 1} 65000"
    values = {
        "fs.file-max": "2048000",
        "fs.inotify.max_user_watches": "524288",
        "net.core.somaxconn": "1024",
        "net.ipv4.tcp_max_syn_backlog": "1024",
        "net.ipv4.tcp_slow_start_after_idle": "0",
        "net.ipv4.tcp_fin_timeout": "10",
        "net.ipv4.tcp_tw_reuse": "1",
        "net.ipv4.ip_local_port_range": ephemeral,
        "vm.overcommit_memory": "1",
    }
    lines = ["# managed by bai-install (tuning from the Backend.AI install guide)"]
    lines += [f"{k} = {v}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


LIMITS_TEXT = """# managed by bai-install
root soft nofile 512000
root hard nofile 512000
root soft nproc 65536
root hard nproc 65536
"""


@deploy("base")
def base(settings: Settings) -> None:
    _ops.packages(
        name="Install base packages",
        packages=["ca-certificates", "procps", "iproute2", "python3", "util-linux"],
    )
    for path, mode in ((settings.config_dir, "755"), (settings.log_dir, "755"),
                       (settings.state_dir, "755")):
        files.directory(name=f"Directory {path}", path=path, mode=mode)
    sysctl = files.put(name="Write sysctl tuning", src=StringIO(sysctl_text(settings)),
                       dest=SYSCTL_PATH, mode="644")
    _ops.sysctl_apply(name="Apply sysctl tuning (best effort)", path=SYSCTL_PATH,
                      _if=sysctl.did_change)
    files.put(name="Write ulimit tuning", src=StringIO(LIMITS_TEXT), dest=LIMITS_PATH, mode="644")
    check, commands = command_links(settings)
    _ops.ensure(name=f"Link the bai commands into {settings.bin_dir}", check=check,
                commands=commands, noop_message="links in place")
    files.put(name=f"Put {settings.bin_dir} on PATH for login shells",
              src=StringIO(profile_text(settings)), dest=PROFILE_PATH, mode="644")


ROLE = Role(name="base", groups=GROUPS, deploy=base)
