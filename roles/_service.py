"""The service-manager abstraction: one description of a service, run under systemd when systemd
is PID 1 and under Debian's supervisor otherwise.

A role describes what it runs as a :class:`Service` (data) and calls :func:`ensure_service`,
which adds the operations for whichever manager the host has:

* systemd: our own unit file when the service has one (``unit_text``), else Debian's unit;
  ``running + enabled``; a restart only when a config op (or the unit) changed and the service
  was already running before this run; then a readiness wait with a deadline.
* supervisor: ``/etc/supervisor/conf.d/<program>.conf``; supervisord started when it does not
  answer; ``reread/update`` only when the program file changed; ``start`` unless RUNNING; a
  restart only when a config op changed; then the same readiness wait.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from io import StringIO

from pyinfra import host
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, systemd

from . import _ops
from ._facts import ServiceManager


@dataclass(frozen=True)
class Service:
    """What a role runs.

    Attributes:
        name: short name (``redis``); the supervisor program is ``bai-<name>``.
        unit: the systemd unit (Debian's, or ours when ``unit_text`` is given).
        command: the foreground command supervisor runs.
        ready: a shell command that succeeds once the service answers.
        user: the user supervisor runs ``command`` as.
        unit_text: our own unit file for systemd (None: use the distribution's unit).
        environment: extra environment for the supervisor program.
        stopsignal / stopwaitsecs: how supervisor stops it.
        log: where its output goes under supervisor (``<log_dir>/<name>.log`` by default).
    """

    name: str
    unit: str
    command: str
    ready: str
    user: str = "root"
    unit_text: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    stopsignal: str = "TERM"
    stopwaitsecs: int = 30
    log_dir: str = "/var/log/bai"
    directory: str = "/"

    @property
    def program(self) -> str:
        return f"bai-{self.name}"

    @property
    def log(self) -> str:
        return f"{self.log_dir}/{self.name}.log"

    @property
    def program_path(self) -> str:
        return f"/etc/supervisor/conf.d/{self.program}.conf"

    def program_text(self) -> str:
        lines = [
            "; managed by bai-install; changes are overwritten",
            f"[program:{self.program}]",
            f"command={self.command}",
            f"user={self.user}",
            f"directory={self.directory}",
            "autostart=true",
            "autorestart=true",
            "startsecs=1",
            "startretries=5",
            f"stopsignal={self.stopsignal}",
            f"stopwaitsecs={self.stopwaitsecs}",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={self.log}",
            "stdout_logfile_maxbytes=50MB",
            "stdout_logfile_backups=5",
        ]
        if self.environment:
            env = ",".join(f'{k}="{v}"' for k, v in sorted(self.environment.items()))
            lines.append(f"environment={env}")
        return "\n".join(lines) + "\n"


def manager() -> str:
    """``systemd`` or ``supervisor`` for the current host (read at prepare time: PID 1 does not
    change during a run)."""
    return host.get_fact(ServiceManager)


def _changed(ops: Sequence[OperationMeta]) -> Callable[[], bool]:
    return lambda: any(op.did_change() for op in ops)


def ensure_service(svc: Service, configs: Sequence[OperationMeta] = (), timeout: int = 60) -> None:
    """Add the operations that leave ``svc`` running, enabled and ready, restarting it only when
    one of ``configs`` (file operations of this run) changed something."""
    if manager() == "systemd":
        deps: list[OperationMeta] = list(configs)
        if svc.unit_text is not None:
            unit_op = files.put(
                name=f"Write {svc.unit}",
                src=StringIO(svc.unit_text),
                dest=f"/etc/systemd/system/{svc.unit}",
                mode="644",
            )
            systemd.daemon_reload(name="Reload systemd units", _if=unit_op.did_change)
            deps.append(unit_op)
        started = systemd.service(
            name=f"Run {svc.unit} (running, enabled)",
            service=svc.unit,
            running=True,
            enabled=True,
        )
        systemd.service(
            name=f"Restart {svc.unit} on changed config",
            service=svc.unit,
            restarted=True,
            _if=lambda: _changed(deps)() and not started.did_change(),
        )
    else:
        _ops.packages(name="Install supervisor", packages=["supervisor"])
        files.directory(name="Log directory", path=svc.log_dir, mode="755")
        program_op = files.put(
            name=f"Write supervisor program {svc.program}",
            src=StringIO(svc.program_text()),
            dest=svc.program_path,
            mode="644",
        )
        supervisord = _ops.supervisord_running(name="Run supervisord")
        _ops.supervisor_update(
            name=f"Load {svc.program} into supervisord",
            program=svc.program,
            _if=lambda: program_op.did_change() and not supervisord.did_change(),
        )
        started = _ops.supervisor_running(name=f"Run {svc.program}", program=svc.program)
        _ops.supervisor_restarted(
            name=f"Restart {svc.program} on changed config",
            program=svc.program,
            _if=lambda: (
                _changed(configs)()
                and not program_op.did_change()
                and not supervisord.did_change()
                and not started.did_change()
            ),
        )
    _ops.wait_ready(
        name=f"Wait for {svc.name}",
        service=svc.name,
        check=svc.ready,
        timeout=timeout,
        diagnose=(f"systemctl status --no-pager -n 40 {svc.unit}" if manager() == "systemd"
                  else f"tail -n 40 {svc.log}"),
        program=None if manager() == "systemd" else svc.program,
    )
