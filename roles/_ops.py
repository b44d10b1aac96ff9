"""Our own pyinfra operations. Each one reads facts at execution time and yields commands only
when the wanted state is not there yet, so a rerun on a converged host yields nothing (and is
reported as "no change").

Readiness waits poll with a deadline (check, sleep 0.2, until the deadline); nothing waits a
fixed time.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Generator, Sequence

from pyinfra import host
from pyinfra.api import operation

from ._facts import Account, Check, MissingDebs, SupervisordUp, SupervisorState

SUPERVISOR_CONF = "/etc/supervisor/supervisord.conf"
SUPERVISORCTL = f"supervisorctl -c {SUPERVISOR_CONF}"


def poll(check: str, timeout: int, interval: float = 0.2) -> str:
    """A shell command that succeeds as soon as ``check`` does, or fails after ``timeout`` s."""
    inner = f"until {check}; do sleep {interval}; done"
    return f"timeout {int(timeout)} sh -c {shlex.quote(inner)}"


@operation()
def packages(packages: Sequence[str], hold_services: bool = True) -> Generator[str, None, None]:
    """Install Debian packages that are missing (``apt-get update`` first when the lists are
    older than an hour or absent).

    With ``hold_services`` a temporary ``policy-rc.d`` keeps maintainer scripts from starting
    daemons: the roles start them themselves, with their final configuration, under systemd or
    supervisor. An existing ``policy-rc.d`` is left alone.

    Example: ``packages(name="Install redis", packages=["redis-server", "redis-tools"])``
    """
    missing = host.get_fact(MissingDebs, packages=tuple(packages))
    if not missing:
        host.noop(f"packages already installed: {' '.join(packages)}")
        return
    names = " ".join(shlex.quote(p) for p in missing)
    # An apt-get left running by an earlier run (an installer killed mid-apply leaves its remote
    # command running) holds apt's locks: wait for it instead of failing. `install` waits through
    # DPkg::Lock::Timeout; `update` ignores that option for the lists lock, so it is retried (only
    # on that error, for up to 10 minutes).
    update = (
        "if [ -z \"$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -60 2>/dev/null"
        ' | head -n1)" ]; then for i in $(seq 600); do out=$(apt-get update -q 2>&1) && break; '
        "echo \"$out\" | grep -q 'Could not get lock' || { echo \"$out\" >&2; exit 1; }; sleep 1; "
        "done; fi"
    )
    install = (
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
        "-o DPkg::Lock::Timeout=600 "
        "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold " + names
    )
    if hold_services:
        yield (
            "set -e; policy=/usr/sbin/policy-rc.d; own=0; "
            "if [ ! -e $policy ]; then printf '#!/bin/sh\\nexit 101\\n' > $policy; "
            "chmod 755 $policy; own=1; fi; "
            "trap 'if [ $own = 1 ]; then rm -f $policy; fi' EXIT; "
            f"{update}; {install}"
        )
    else:
        yield f"set -e; {update}; {install}"


@operation()
def ensure(check: str, commands: Sequence[str], noop_message: str = "already in place",
           also_if: Callable[[], bool] | None = None) -> Generator[str, None, None]:
    """Run ``commands`` only when the shell ``check`` fails (or, while executing, when
    ``also_if()`` is true, e.g. an earlier op of this run changed): a guarded shell step.

    Example: ``ensure(name="Create database", check="psql ... | grep -q 1", commands=[...])``
    """
    forced = also_if is not None and host.state.is_executing and also_if()
    if not forced and host.get_fact(Check, cmd=check):
        host.noop(noop_message)
        return
    yield from commands


@operation()
def wait_ready(service: str, check: str, timeout: int = 60, diagnose: str | None = None,
               program: str | None = None) -> Generator[str, None, None]:
    """Wait until ``check`` succeeds, polling with a deadline; on failure run ``diagnose`` (a
    shell command printing the service's recent log).
    With ``program`` (supervisor), give up early once supervisor marks it FATAL.
    No change (no command) when the service already answers."""
    if host.get_fact(Check, cmd=check):
        host.noop(f"{service} is ready")
        return
    fatal = ""
    if program:
        # every ~2 s (supervisorctl is slow to start): stop waiting for a program that gave up
        fatal = (f"if [ $((i % 10)) -eq 9 ] && {SUPERVISORCTL} status {shlex.quote(program)} "
                 f"| grep -q FATAL; then echo '{service} failed to start (supervisor: FATAL)' >&2;"
                 " break; fi; ")
    tail = f"{{ {diagnose}; }} >&2 2>/dev/null; " if diagnose else ""
    yield (
        f"end=$(( $(date +%s) + {int(timeout)} )); i=0; ok=0; "
        f"while [ $(date +%s) -lt $end ]; do if ( {check} ) >/dev/null 2>&1; then ok=1; break; fi; "
        f"{fatal}i=$((i + 1)); sleep 0.2; done; "
        f"if [ $ok = 0 ]; then echo '{service} not ready (deadline {timeout}s)' >&2; "
        f"{tail}exit 1; fi"
    )


@operation()
def supervisord_running(timeout: int = 30) -> Generator[str, None, None]:
    """Start supervisord (Debian's config, which includes conf.d) unless it answers."""
    if host.get_fact(SupervisordUp):
        host.noop("supervisord is running")
        return
    yield (
        f"mkdir -p /var/log/supervisor && supervisord -c {SUPERVISOR_CONF} && "
        f"{poll(f'{SUPERVISORCTL} pid >/dev/null 2>&1', timeout, 0.1)}"
    )


@operation()
def supervisor_update(program: str) -> Generator[str, None, None]:
    """Make supervisord load a new or changed program file (restarts it when changed).
    Meant to run with ``_if=<program file changed>``."""
    yield f"{SUPERVISORCTL} reread >/dev/null && {SUPERVISORCTL} update {shlex.quote(program)}"


@operation()
def supervisor_running(program: str) -> Generator[str, None, None]:
    """Start a supervisor program unless it is RUNNING (or STARTING)."""
    state = host.get_fact(SupervisorState)["programs"].get(program)
    if state in ("RUNNING", "STARTING"):
        host.noop(f"{program} is {state.lower()}")
        return
    yield f"{SUPERVISORCTL} start {shlex.quote(program)}"


@operation()
def supervisor_restarted(program: str) -> Generator[str, None, None]:
    """Restart a supervisor program. Meant to run with ``_if=<its config changed>``."""
    yield f"{SUPERVISORCTL} restart {shlex.quote(program)}"


@operation()
def sysctl_apply(path: str) -> Generator[str, None, None]:
    """Apply a sysctl.d file, best effort: in a container most keys are read-only, and a key
    the kernel refuses must not fail the install. Meant to run with ``_if=<file changed>``."""
    yield f"sysctl -q -e -p {shlex.quote(path)} >/dev/null 2>&1 || true"


@operation()
def note(detail: str = "") -> Generator[str, None, None]:
    """Run nothing: a line in the plan and the apply output that reports what was found (its
    ``name``), e.g. a check the role makes but must not act on. Never a change.

    Example: ``note(name="Time sync: a container: the host's clock")``"""
    host.noop(detail or "reported only")
    return
    yield  # (a generator, as pyinfra wants operations)


def account_commands(found: dict[str, list[str]], account: str, home: str, shell: str,
                     uid: int | None, gid: int | None) -> list[str]:
    """The commands that make ``account`` (and its own group) what is wanted, given what getent
    found (:class:`roles._facts.Account`); none when it already is."""
    a, h, sh = shlex.quote(account), shlex.quote(home), shlex.quote(shell)
    pw, gr = found["passwd"], found["group"]
    commands = []
    if not gr:
        commands.append(f"groupadd --system {f'-g {gid} ' if gid is not None else ''}{a}")
    elif gid is not None and gr[2] != str(gid):
        commands.append(f"groupmod -g {gid} {a}")
    if not pw:
        commands.append(f"useradd --system {f'-u {uid} ' if uid is not None else ''}-g {a} -d {h} -M -s {sh} {a}")
        return commands
    changes = []
    if uid is not None and pw[2] != str(uid):
        changes.append(f"-u {uid}")
    want_gid = str(gid) if gid is not None else (gr[2] if gr else None)
    if want_gid is None or pw[3] != want_gid:
        changes.append(f"-g {a}")
    if pw[5] != home:
        changes.append(f"-d {h}")
    if pw[6] != shell:
        changes.append(f"-s {sh}")
    if changes:
        commands.append(f"usermod {' '.join(changes)} {a}")
    return commands


@operation()
def system_account(account: str, home: str, shell: str = "/usr/sbin/nologin", uid: int | None = None,
                   gid: int | None = None) -> Generator[str, None, None]:
    """A system account with its own group (ids fixed when given), home and shell; the home is
    not created. Reads one getent line instead of every account (pyinfra's server.user).

    Example: ``system_account(name="Service account bai", account="bai", home="/var/lib/bai", uid=1100, gid=1100)``
    """
    commands = account_commands(host.get_fact(Account, account=account), account, home, shell, uid, gid)
    if not commands:
        host.noop(f"account {account} in place")
        return
    yield from commands

