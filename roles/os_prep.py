"""OS preparation for every bai host: base packages, the service account, the sysctl and ulimit
values of the original's install guide, and time sync.

Idempotent by construction: files are rendered from the settings and written only when their
bytes differ; the sysctl file is applied only when it changed (best effort: in a container most
keys are the host's, and a key the kernel refuses must not fail the install); the account is
created from facts. Where something must not be changed here (the clock of a container, the open
files limit of an already running supervisord) the role reports what it found as an ``ok`` line
of the plan instead of acting.
"""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, systemd

from . import _ops
from ._facts import OpenFilesLimit, TimeSync
from ._service import manager
from .catalog import GROUPS, Role
from .settings import Settings

SYSCTL_PATH = "/etc/sysctl.d/90-bai.conf"
LIMITS_PATH = "/etc/security/limits.d/90-bai.conf"
#: Where earlier installers put the same values (removed, so that one file holds them).
OLD_PATHS = ("/etc/sysctl.d/99-bai.conf", "/etc/security/limits.d/99-bai.conf")
PACKAGES = ("ca-certificates", "procps", "iproute2", "python3", "util-linux", "kmod", "curl")
#: NTP daemons that keep the clock when installed (then timesyncd is not wanted)
OTHER_NTP = ("chrony", "ntpsec", "openntpd", "ntp")


def sysctl_values(settings: Settings) -> dict[str, str]:
    """The guide's values. The ephemeral port range must not overlap the containers' published
    port range (the guide's 10000-65000 would), so it starts above it."""
    _, hi = settings.agent.container_port_range
    ephemeral = "40000 65000" if hi < 40000 else f"{hi + 1} 65000"
    return {
        "fs.file-max": "2048000",
        "fs.inotify.max_user_watches": "524288",
        "net.core.somaxconn": "1024",
        "net.ipv4.tcp_max_syn_backlog": "1024",
        "net.ipv4.tcp_slow_start_after_idle": "0",
        "net.ipv4.tcp_fin_timeout": "10",
        "net.ipv4.tcp_window_scaling": "1",
        "net.ipv4.tcp_tw_reuse": "1",
        "net.ipv4.tcp_early_retrans": "1",
        "net.ipv4.ip_local_port_range": ephemeral,
        "net.core.rmem_max": "16777216",
        "net.core.wmem_max": "16777216",
        "net.ipv4.tcp_rmem": "4096 12582912 16777216",
        "net.ipv4.tcp_wmem": "4096 12582912 16777216",
        "vm.overcommit_memory": "1",
    }


def sysctl_text(values: dict[str, str], why: str = "tuning from the Backend.AI install guide") -> str:
    lines = [f"# managed by bai-install ({why})"]
    lines += [f"{k} = {v}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def limits_text(settings: Settings) -> str:
    o = settings.os
    lines = ["# managed by bai-install"]
    for who in dict.fromkeys(("root", o.user)):
        for item, value in (("nofile", o.nofile), ("nproc", o.nproc)):
            lines += [f"{who} soft {item} {value}", f"{who} hard {item} {value}"]
    return "\n".join(lines) + "\n"


def account_check(settings: Settings) -> tuple[str, str]:
    """(check, failure command): the uid and gid are free or already the account's; another
    user or group holding them is an error that names it (nothing is renumbered)."""
    o = settings.os
    u = shlex.quote(o.user)
    check = (f'{{ x=$(getent passwd {o.uid} | cut -d: -f1); [ -z "$x" ] || [ "$x" = {u} ]; }} && '
             f'{{ y=$(getent group {o.gid} | cut -d: -f1); [ -z "$y" ] || [ "$y" = {u} ]; }}')
    fail = (f"echo \"uid {o.uid} or gid {o.gid} belongs to another account "
            f"($(getent passwd {o.uid} | cut -d: -f1) / $(getent group {o.gid} | cut -d: -f1)); "
            "set os.uid / os.gid to free ones\" >&2; exit 1")
    return check, fail


def _time_sync(settings: Settings) -> None:
    found = host.get_fact(TimeSync)
    sync = found["synchronized"]
    if not settings.os.time_sync or manager() != "systemd" or found["container"] == "yes":
        why = ("not managed (os.time_sync off)" if not settings.os.time_sync else
               "a container: the host's clock" if found["container"] == "yes" else "no systemd")
        _ops.note(name=f"Time sync: {why}; daemon {found['daemon']}, synchronized {sync}")
        return
    if found["daemon"] in OTHER_NTP:
        _ops.note(name=f"Time sync: kept by {found['daemon']} (synchronized {sync})")
        return
    _ops.packages(name="Install systemd-timesyncd", packages=["systemd-timesyncd"])
    systemd.service(name="Run systemd-timesyncd (running, enabled)", service="systemd-timesyncd.service",
                    running=True, enabled=True)


def _service_limits(settings: Settings) -> None:
    """Our systemd units carry LimitNOFILE themselves; supervisor's programs inherit
    supervisord's limit, which only a supervisord restart (every service) could raise: report."""
    if manager() == "systemd":
        return
    have = host.get_fact(OpenFilesLimit, pid_file="/var/run/supervisord.pid")
    if have == 0:
        return  # not running yet: started by a later role, with this shell's limit
    state = "ok" if have >= settings.os.nofile else f"below {settings.os.nofile}: raise supervisord's limit to change it"
    _ops.note(name=f"Open files limit of supervised services: {have} ({state})")


@deploy("os_prep")
def os_prep(settings: Settings) -> None:
    o = settings.os
    _ops.packages(name="Install base packages", packages=list(PACKAGES))
    check, fail = account_check(settings)
    _ops.ensure(name=f"uid {o.uid} / gid {o.gid} free for {o.user}", check=check, commands=[fail],
                noop_message="ids free or already the account's")
    _ops.system_account(name=f"Service account {o.user} ({o.uid}:{o.gid})", account=o.user,
                        home=settings.state_dir, uid=o.uid, gid=o.gid)
    for old in OLD_PATHS:
        files.file(name=f"Remove {old} (moved to 90-bai.conf)", path=old, present=False)
    sysctl = files.put(name="Write sysctl tuning", src=StringIO(sysctl_text(sysctl_values(settings))),
                       dest=SYSCTL_PATH, mode="644")
    _ops.sysctl_apply(name="Apply sysctl tuning (best effort)", path=SYSCTL_PATH, _if=sysctl.did_change)
    files.put(name="Write ulimit tuning", src=StringIO(limits_text(settings)), dest=LIMITS_PATH, mode="644")
    _service_limits(settings)
    _time_sync(settings)


ROLE = Role(name="os_prep", groups=GROUPS, deploy=os_prep)
