"""Agents' connection tracking, as the original's guide tunes it: a large conntrack table and
short timeouts for closing connections (sessions open many short-lived ones through NAT), with
the ``nf_conntrack`` module loaded now and at boot.

Where the module cannot be loaded (a container without the host's /lib/modules, a kernel without
it) the role changes nothing and says so in the plan; where it is built in or already loaded the
values are applied. Off with ``os.conntrack = false``.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files

from . import _ops
from ._facts import KernelModule
from .catalog import Role
from .os_prep import sysctl_text
from .settings import Settings

MODULE = "nf_conntrack"
SYSCTL_PATH = "/etc/sysctl.d/91-bai-conntrack.conf"
MODULES_LOAD_PATH = "/etc/modules-load.d/bai-conntrack.conf"
VALUES = {
    "net.netfilter.nf_conntrack_max": "10485760",
    "net.netfilter.nf_conntrack_tcp_timeout_established": "432000",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait": "10",
    "net.netfilter.nf_conntrack_tcp_timeout_fin_wait": "10",
    "net.netfilter.nf_conntrack_tcp_timeout_time_wait": "10",
}


def plan_for(loaded: bool, loadable: bool) -> str:
    """``apply`` (the module is there), ``load`` (load it, then apply) or ``skip``."""
    if loaded:
        return "apply"
    return "load" if loadable else "skip"


@deploy("conntrack")
def conntrack(settings: Settings) -> None:
    if not settings.os.conntrack:
        _ops.note(name="conntrack tuning off (os.conntrack = false)")
        return
    found = host.get_fact(KernelModule, module=MODULE)
    what = plan_for(found["loaded"], found["loadable"])
    if what == "skip":
        _ops.note(name=f"{MODULE} cannot be loaded on this host (no module for its kernel, e.g. a "
                       "container): conntrack values not set")
        return
    files.put(name=f"Load {MODULE} at boot", src=StringIO(f"# managed by bai-install\n{MODULE}\n"),
              dest=MODULES_LOAD_PATH, mode="644")
    if what == "load":
        _ops.ensure(name=f"Load {MODULE}", check=f"test -d /sys/module/{MODULE}",
                    commands=[f"modprobe {MODULE}"], noop_message=f"{MODULE} loaded")
    conf = files.put(name="Write conntrack tuning", src=StringIO(sysctl_text(VALUES, "agents' conntrack")),
                     dest=SYSCTL_PATH, mode="644")
    _ops.sysctl_apply(name="Apply conntrack tuning (best effort)", path=SYSCTL_PATH, _if=conf.did_change)


ROLE = Role(name="conntrack", groups=("agents",), deploy=conntrack)
