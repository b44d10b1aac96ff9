"""Docker Engine for agents: Debian's docker.io, with the daemon settings the agent needs.

``/etc/docker/daemon.json``: the containers' json-file logs bounded (``docker.log_max_size`` x
``docker.log_max_file``), ``live-restore`` (containers keep running while dockerd restarts), and
the storage driver only when ``docker.storage_driver`` sets one (else Docker's choice), and
``default-address-pools`` only when ``docker.address_pools`` lists some (Docker's own pools hold
about 30 local networks per engine, and every multi-kernel session on a host takes one). Keys
set there by hand are kept; the file is rewritten only when a value of ours differs. On a change
dockerd first reloads (SIGHUP: live-restore is a reloadable setting, so it is on before any
restart), then restarts only when a key it cannot reload changed (log or storage settings):
with live-restore on, running containers survive that restart. Address pools are such a key:
on a swarm member (live-restore off) that restart stops the running containers, so set them
before sessions run.

Under systemd: Debian's docker.service, running and enabled. Without systemd: a supervisor
program runs dockerd, unless a Docker engine already answers ``docker info`` (one started by
other means is left alone, its daemon.json too; one we started before stays ours).
"""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files

from . import _ops
from ._facts import Check, FileText
from ._service import Service, ensure_service, manager
from .catalog import Role
from .settings import Settings

DAEMON_JSON = "/etc/docker/daemon.json"
#: daemon.json keys dockerd applies on SIGHUP (the others need a restart)
RELOADABLE = frozenset({"live-restore", "debug", "labels", "max-concurrent-downloads",
                        "max-concurrent-uploads", "default-runtime", "runtimes", "insecure-registries",
                        "registry-mirrors", "shutdown-timeout", "features"})


class DaemonJsonError(ValueError):
    pass


def service(settings: Settings) -> Service:
    return Service(
        name="dockerd",
        unit="docker.service",
        command="/usr/sbin/dockerd",
        ready="docker info",
        stopwaitsecs=60,
        log_dir=settings.log_dir,
    )


def daemon_config(settings: Settings, existing: str | None) -> dict[str, Any]:
    """``existing`` daemon.json (text or None) with our keys set; raises DaemonJsonError when the
    existing file is not a JSON object (it is never overwritten blindly)."""
    try:
        current = json.loads(existing) if existing and existing.strip() else {}
    except json.JSONDecodeError as exc:
        raise DaemonJsonError(f"{DAEMON_JSON} is not valid JSON ({exc}); fix or remove it") from None
    if not isinstance(current, dict):
        raise DaemonJsonError(f"{DAEMON_JSON} is not a JSON object; fix or remove it")
    d = settings.docker
    wanted = dict(current)
    log_opts = dict(current.get("log-opts") or {}) if current.get("log-driver", "json-file") == "json-file" else {}
    log_opts.update({"max-size": d.log_max_size, "max-file": str(d.log_max_file)})
    wanted.update({"log-driver": "json-file", "log-opts": log_opts, "live-restore": d.live_restore})
    if d.storage_driver:
        wanted["storage-driver"] = d.storage_driver
    if d.address_pools:  # unset: whatever the file holds (Docker's own pools by default)
        wanted["default-address-pools"] = [{"base": p.base, "size": p.size} for p in d.address_pools]
    return wanted


def daemon_json_text(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def needs_restart(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether going from ``before`` to ``after`` changes a key dockerd cannot reload."""
    keys = (set(before) | set(after)) - RELOADABLE
    return any(before.get(k) != after.get(k) for k in keys)


def _reload_command() -> str:
    if manager() == "systemd":
        return "if systemctl is-active -q docker.service; then systemctl reload docker.service; fi"
    return (f"if {_ops.SUPERVISORCTL} status bai-dockerd | grep -q RUNNING; then "
            f"{_ops.SUPERVISORCTL} signal HUP bai-dockerd >/dev/null; fi")


@deploy("docker")
def docker(settings: Settings) -> None:
    svc = service(settings)
    if manager() == "supervisor":
        ours = host.get_fact(Check, cmd=f"test -f {svc.program_path}")
        if not ours and host.get_fact(Check, cmd="docker info"):
            _ops.wait_ready(name="Docker engine (already running, not managed here)",
                            service="docker", check="docker info", timeout=10)
            return
    _ops.packages(name="Install docker.io", packages=["docker.io"])
    existing = host.get_fact(FileText, path=DAEMON_JSON)
    try:
        wanted = daemon_config(settings, existing)
    except DaemonJsonError as exc:
        _ops.ensure(name=f"Check {DAEMON_JSON}", check="false",
                    commands=[f"echo {json.dumps(str(exc))} >&2; exit 1"])
        return
    before = json.loads(existing) if existing and existing.strip() else {}
    files.directory(name="Directory /etc/docker", path="/etc/docker", mode="755")
    conf = files.put(name=f"Write {DAEMON_JSON} (log limits, live-restore)",
                     src=StringIO(daemon_json_text(wanted)), dest=DAEMON_JSON, mode="644")
    _ops.ensure(name="Reload dockerd (live-restore before any restart)", check="false",
                commands=[_reload_command()], _if=conf.did_change)
    restart = [conf] if needs_restart(before, wanted) else []
    ensure_service(svc, configs=restart, timeout=settings.ready_timeout)


ROLE = Role(name="docker", groups=("agents",), deploy=docker, services=lambda s: [service(s)])
