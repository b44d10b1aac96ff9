"""What the bai daemons' roles share (roles/manager.py, agent.py, storage_proxy.py,
app_proxy.py ...): the code stamp that restarts a daemon when its code changed, the systemd unit
text, TOML rendering, and the check that the venv holds a daemon's command.

A service restarts only when its config or its code changed: a stamp of the installed package's
source is kept next to the config (``<state_dir>/<name>.code``) and is one of the config
operations :func:`roles._service.ensure_service` watches.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from io import StringIO
from typing import Any

import tomli_w
from pyinfra.operations import files

from . import _ops
from ._common import secrets_file
from ._service import Service
from .settings import Settings


def code_stamp() -> str:
    """A digest of the platform's source as installed here: an upgrade that changes code changes
    the stamp, and the services restart; a rerun with the same code restarts nothing. The
    checkout's location counts too: daemons started from another clone (a CI run's, since
    deleted) import their code and bind-mount the kernel runner from there."""
    import hashlib
    from pathlib import Path

    import bai

    root = Path(bai.__file__).parent
    digest = hashlib.sha256(str(root.resolve()).encode() + b"\0")
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest() + "\n"


def code_stamp_file(settings: Settings, name: str) -> Any:
    return files.put(name=f"Record the {name}'s code version", src=StringIO(code_stamp()),
                     dest=f"{settings.state_dir}/{name}.code", mode="644")


def toml_text(data: dict[str, Any]) -> str:
    return "# managed by bai-install; changes are overwritten\n" + tomli_w.dumps(data)


def unit_text(description: str, exec_start: str, log: str, after: str, user: str | None = None,
              capabilities: Sequence[str] = ()) -> str:
    """``user``: the account (and its group) the daemon runs as; root when None.
    ``capabilities`` (e.g. ``CAP_CHOWN``): all the daemon keeps, given to that account."""
    account = f"User={user}\nGroup={user}\n" if user else ""
    if capabilities:
        caps = " ".join(capabilities)
        account += f"AmbientCapabilities={caps}\nCapabilityBoundingSet={caps}\nNoNewPrivileges=yes\n"
    return f"""# managed by bai-install
[Unit]
Description={description}
After=network-online.target {after}
Wants=network-online.target

[Service]
{account}Type=simple
ExecStart={exec_start}
Restart=on-failure
RestartSec=5
TimeoutStopSec=15
KillSignal=SIGTERM
LimitNOFILE=512000
StandardOutput=append:{log}
StandardError=inherit

[Install]
WantedBy=multi-user.target
"""


def precheck(settings: Settings, program: str) -> None:
    path = settings.bin(program)
    _ops.ensure(
        name=f"Check {program} is installed",
        check=f"test -x {path}",
        commands=[f"echo '{path} is missing: run installer/bootstrap.sh on this host' >&2; exit 1"],
        noop_message=f"{path} present",
    )


#: The home of the daemons' system accounts: none (Debian's convention for system users).
ACCOUNT_HOME = "/nonexistent"


def account_daemon_service(settings: Settings, *, name: str, description: str, config_path: str, after: str,
                           account: str, ready_url: str, expect: str | None) -> Service:
    """``bai-<name> start --config <config_path>`` as the system ``account``, logging to
    ``<log_dir>/<name>.log``, ready once ``ready_url`` answers JSON (with ``expect``, key=value,
    when given)."""
    program = f"bai-{name}"
    cmd = f"{settings.bin(program)} start --config {config_path}"
    expected = f" --expect {expect}" if expect else ""
    return Service(
        name=name,
        unit=f"{program}.service",
        command=cmd,
        user=account,
        # supervisord keeps its own environment (HOME=/root) when it switches user; libraries
        # look under HOME (asyncpg stats ~/.postgresql/postgresql.key, and /root denies that)
        environment={"HOME": ACCOUNT_HOME, "USER": account, "LOGNAME": account},
        ready=f"{settings.bin('python')} -m installer.probe http-json {shlex.quote(ready_url)}{expected}",
        unit_text=unit_text(description, cmd, f"{settings.log_dir}/{name}.log", after, user=account),
        log_dir=settings.log_dir,
        stopwaitsecs=15,
    )


def unprivileged_daemon_files(settings: Settings, *, account: str, label: str, stamp: str | None, config_path: str,
                              config_text: str) -> tuple[Any, Any]:
    """The steps before a daemon that runs as its own system ``account`` (no login, no home) can
    start: the account, the directories, the secrets file, its config (root:``account``, mode 640:
    it holds secrets only the daemon may read) and its code stamp (``<state_dir>/<stamp>.code``;
    None: the role records it itself, with :func:`code_stamp_file`, after steps that may fail).
    Returns the config and code-stamp operations (None when not recorded here), the ones its
    service restarts on."""
    _ops.system_account(name=f"System user {account}", account=account, home=ACCOUNT_HOME)
    for path in (settings.config_dir, settings.log_dir, settings.state_dir):
        files.directory(name=f"Directory {path}", path=path, mode="755")
    secrets_file(settings)
    conf = files.put(name=f"Write {config_path}", src=StringIO(config_text), dest=config_path, mode="640",
                     user="root", group=account)
    if stamp is None:
        return conf, None
    code = files.put(name=f"Record the {label}'s code version", src=StringIO(code_stamp()),
                     dest=f"{settings.state_dir}/{stamp}.code", mode="644")
    return conf, code


# (older names, kept for the roles and tests that import them)
_toml = toml_text
_stamp = code_stamp_file


# -- the install record (/etc/backend.ai/release.toml) -------------------------------------------

RELEASE_RECORD = "release.toml"


def tree_release() -> dict[str, Any]:
    """This code's release, from the release manifest it ships (installer/releases.toml: the last
    entry is this tree): version and config-version, and the git commit when the code is a
    checkout (else none is known)."""
    import subprocess
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    last = tomllib.loads((root / "installer" / "releases.toml").read_text())["release"][-1]
    out: dict[str, Any] = {"version": str(last["version"]),
                           "config-version": int(last["config-version"])}
    if (root / ".git").exists():
        try:
            head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                  text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            head = None
        if head is not None and head.returncode == 0 and len(head.stdout.strip()) == 40:
            out["commit"] = head.stdout.strip()
    return out


def release_record_text(release: dict[str, Any], installed: str) -> str:
    """The record's text (the keys bai-install upgrade writes too, see installer/upgrade)."""
    lines = ["# written by bai-install: the bai release installed on this host",
             f'version = "{release["version"]}"', f'config-version = {release["config-version"]}']
    if release.get("commit"):
        lines.append(f'commit = "{release["commit"]}"')
    lines.append(f'installed = "{installed}"')
    return "\n".join(lines) + "\n"


def release_record(settings: Settings) -> Any:
    """Record the release this install puts on the host in ``<config_dir>/release.toml``, which
    is how ``bai-install upgrade`` knows it. Written only when the host has no record of this
    release (version and config-version): a re-run, or an upgrade's own record (which names the
    previous release too), stays as it is; the time is the first install's."""
    import shlex
    import time

    release = tree_release()
    path = f"{settings.config_dir}/{RELEASE_RECORD}"
    q = shlex.quote
    version_line = 'version = "{}"'.format(release["version"])
    config_line = "config-version = {}".format(release["config-version"])
    check = f"grep -qxF {q(version_line)} {q(path)} && grep -qxF {q(config_line)} {q(path)}"
    text = release_record_text(release, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return _ops.ensure(
        name=f"Record release {release['version']} in {path}",
        check=check,
        commands=[f"umask 022; printf '%s' {q(text)} > {q(path + '.tmp')} && mv -f {q(path + '.tmp')} {q(path)}"],
        noop_message=f"release {release['version']} recorded",
    )
