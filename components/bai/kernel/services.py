"""Service ports started on demand (``start-service``), inside the container (stdlib only).

The agent sends a definition already parsed and checked by :mod:`bai.common.service_ports`
(templates name only known variables; the client's arguments and envs are the allowed ones)::

    {"op": "start-service", "req": str, "name": str, "protocol": str, "ports": [int, ...],
     "definition": {...} | null, "arguments": {name: str | null}, "envs": {name: str},
     "runtime_path": str, "timeout": float}

and gets exactly one ``{"type": "service-result", "req": str, "data": {"status": "started" |
"running" | "failed", "error"?: str}}`` back: ``running`` when the service's process is already
up (or starting: the reply then waits for it), ``started`` once the new process LISTENS on its
primary port (read from ``/proc/net/tcp{,6}``, so whatever interface it binds counts), ``failed``
when a prestart action fails, the command cannot start, exits before listening, or does not
listen within ``timeout`` seconds (it is then killed).

Everything runs as the container's user (the kernel user) in ``/home/work``; a service's output
goes to ``/tmp/bai-service-<name>.log`` (its tail is the error of a failed start). Prestart
``run_command`` actions must end quickly: they run in the runner's loop, bounded by
:data:`PRESTART_COMMAND_TIMEOUT`. The selectors loop is never blocked by a starting service: it
polls :meth:`Services.poll` every :data:`POLL_INTERVAL` seconds while one is starting.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import subprocess

WORK_DIR = "/home/work"
POLL_INTERVAL = 0.05
DEFAULT_START_TIMEOUT = 60.0
PRESTART_COMMAND_TIMEOUT = 10.0
#: How long a stopped service has to end after SIGTERM before it is killed.
STOP_GRACE = 3.0
#: How much of a service's log a failure report quotes.
_LOG_TAIL = 2048
_PRESTART_OUTPUT_LIMIT = 64 * 2**10
_TCP_LISTEN = "0A"

Send = Callable[[dict[str, Any]], None]


def _log(msg: str) -> None:
    sys.stderr.write(f"bai-kernel: {msg}\n")
    sys.stderr.flush()


def listening_ports(paths: tuple[str, ...] = ("/proc/net/tcp", "/proc/net/tcp6")) -> set[int]:
    """TCP ports something listens on in this network namespace (any address)."""
    ports: set[int] = set()
    for path in paths:
        try:
            with open(path) as f:
                next(f, None)  # header
                for line in f:
                    cols = line.split()
                    if len(cols) > 3 and cols[3] == _TCP_LISTEN:
                        ports.add(int(cols[1].rpartition(":")[2], 16))
        except (OSError, ValueError):
            continue
    return ports


class ServiceError(Exception):
    pass


def _format(template: str, variables: dict[str, Any]) -> str:
    try:
        return template.format_map(variables)
    except (KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:
        raise ServiceError(f"template {template!r}: {type(exc).__name__}: {exc}") from None


def _prestart(actions: list[dict[str, Any]], variables: dict[str, Any]) -> None:
    """Run the definition's prestart actions in order; ``ref`` results join ``variables``."""
    import subprocess
    import tempfile
    for i, action in enumerate(actions):
        kind, args, ref = action.get("action"), action.get("args") or {}, action.get("ref")
        result: Any = None
        try:
            if kind == "write_file":
                filename = _format(args["filename"], variables)
                body = "\n".join(_format(line, variables) for line in args.get("body") or [])
                with open(filename, "a" if args.get("append") else "w") as f:
                    f.write(body + "\n")
                os.chmod(filename, int(str(args.get("mode") or "755"), 8))
            elif kind == "write_tempfile":
                body = "\n".join(_format(line, variables) for line in args.get("body") or [])
                fd, result = tempfile.mkstemp(prefix="bai-service-")
                with os.fdopen(fd, "w") as f:
                    f.write(body + "\n")
                os.chmod(result, int(str(args.get("mode") or "755"), 8))
            elif kind == "mkdir":
                os.makedirs(_format(args["path"], variables), exist_ok=True)
            elif kind == "run_command":
                argv = [_format(part, variables) for part in args["command"]]
                done = subprocess.run(argv, cwd=WORK_DIR, stdin=subprocess.DEVNULL, capture_output=True,
                                      timeout=PRESTART_COMMAND_TIMEOUT, check=False)
                result = {"out": done.stdout[-_PRESTART_OUTPUT_LIMIT:].decode("utf-8", "replace"),
                          "err": done.stderr[-_PRESTART_OUTPUT_LIMIT:].decode("utf-8", "replace")}
            elif kind == "log":
                body = _format(args.get("body") or "", variables)
                if not args.get("debug"):
                    _log(f"service prestart: {body}")
            else:
                raise ServiceError(f"unknown action {kind!r}")
        except ServiceError as exc:
            raise ServiceError(f"prestart[{i}] ({kind}): {exc}") from None
        except subprocess.TimeoutExpired:
            raise ServiceError(f"prestart[{i}] ({kind}): did not end within {PRESTART_COMMAND_TIMEOUT:g} s") from None
        except (OSError, KeyError, ValueError) as exc:
            raise ServiceError(f"prestart[{i}] ({kind}): {exc}") from None
        if ref:
            variables[ref] = result


def _variables(message: dict[str, Any]) -> dict[str, Any]:
    runtime_path = str(message.get("runtime_path") or sys.executable)
    return {
        "ports": [int(p) for p in message.get("ports") or []],
        "runtime_path": runtime_path,
        # /opt/venv/bin/python -> /opt/venv (the original's venv_path).
        "venv_path": os.path.dirname(os.path.dirname(runtime_path)),
        "home": WORK_DIR,
    }


#: An ssh login's environment is the kernel's: the sshd (dropbear ``-e``, the image's definition)
#: passes its own on, but sets PATH to a default of its own. The first shell of a login puts the
#: kernel's PATH (``BAI_KERNEL_PATH``) back and drops the hook, so the shells it starts keep the
#: PATH the user sets: through ``BASH_ENV`` for ``ssh host cmd`` in any image; where bash reads
#: the system bashrc instead (Debian's, run by an sshd) and in login shells (/etc/profile resets
#: PATH), the image's profile script does the same (roles/files/build-kernel-image.sh).
SSH_LOGIN_ENV_SCRIPT = ('if [ -n "${BAI_KERNEL_PATH-}" ]; then PATH=$BAI_KERNEL_PATH; export PATH; fi\n'
                        "unset BAI_KERNEL_PATH BASH_ENV\n")


def _ssh_login_env(env: dict[str, str], variables: dict[str, Any]) -> None:
    """Add to the sshd's ``env`` what gives its logins the kernel's PATH (with the image's venv
    first, the one user code runs in, when the runtime is in one)."""
    import tempfile
    path = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p]
    venv_bin = os.path.join(variables["venv_path"], "bin")
    if os.path.isfile(os.path.join(variables["venv_path"], "pyvenv.cfg")) and venv_bin not in path:
        path.insert(0, venv_bin)
    fd, tmp = tempfile.mkstemp(prefix="bai-ssh-env-", suffix=".sh")
    with os.fdopen(fd, "w") as f:
        f.write(SSH_LOGIN_ENV_SCRIPT)
    script = os.path.join(tempfile.gettempdir(), "bai-ssh-env.sh")
    os.replace(tmp, script)  # a name a restarted sshd's logins find, never half-written
    env.update({"BAI_KERNEL_PATH": os.pathsep.join(path), "BASH_ENV": script})


def _log_tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - _LOG_TAIL, 0))
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


class _Service:
    """One service: its process (None for a ``noop`` one), primary port and log."""

    def __init__(self, name: str, port: int, proc: subprocess.Popen[bytes] | None, log_path: str,
                 deadline: float, listening: bool = False) -> None:
        self.name = name
        self.port = port
        self.proc = proc
        self.log_path = log_path
        self.deadline = deadline
        #: Requests waiting for the outcome of the start, with the status each is to get.
        self.waiting: list[tuple[str, str]] = []
        self.listening = listening


class Services:
    """The kernel's started services, by name; ``send`` puts a record on the agent connection."""

    def __init__(self, send: Send, env: Callable[[], dict[str, str]]) -> None:
        self._send = send
        self._env = env
        self._services: dict[str, _Service] = {}

    @property
    def starting(self) -> bool:
        return any(not s.listening for s in self._services.values())

    def _reply(self, req: str, status: str, error: str | None = None) -> None:
        data: dict[str, Any] = {"status": status}
        if error is not None:
            data["error"] = error
        self._send({"type": "service-result", "req": req, "data": data})

    def start(self, message: dict[str, Any]) -> None:
        req, name = str(message.get("req") or ""), str(message.get("name") or "")
        current = self._services.get(name)
        if current is not None and (current.proc is None or current.proc.poll() is None):
            if current.listening:
                self._reply(req, "running")
            else:
                current.waiting.append((req, "running"))
            return
        self._services.pop(name, None)
        try:
            service = self._spawn(name, message)
        except ServiceError as exc:
            _log(f"service {name}: {exc}")
            self._reply(req, "failed", str(exc))
            return
        service.waiting.append((req, "started"))
        self._services[name] = service
        self.poll()

    def _spawn(self, name: str, message: dict[str, Any]) -> _Service:
        # Imported here, not at module level: they stay off the runner's start-up path.
        import subprocess
        import tempfile

        definition = message.get("definition")
        if not isinstance(definition, dict):
            raise ServiceError(f"the image has no definition of service {name!r}")
        variables = _variables(message)
        ports = variables["ports"]
        if not ports:
            raise ServiceError(f"service {name!r} has no port")
        timeout = float(message.get("timeout") or DEFAULT_START_TIMEOUT)
        deadline = time.monotonic() + timeout
        log_path = os.path.join(tempfile.gettempdir(), f"bai-service-{name}.log")
        if definition.get("noop"):
            return _Service(name, ports[0], None, log_path, deadline, listening=True)
        _prestart(list(definition.get("prestart") or []), variables)
        argv = [_format(part, variables) for part in definition.get("command") or []]
        for key, value in (message.get("arguments") or {}).items():
            # Separate argv entries, never a shell: a value cannot smuggle in another option.
            argv.append(str(key))
            if value is not None:
                argv.append(str(value))  # a client's value is never a template
        env = self._env()
        env.update({k: _format(str(v), variables) for k, v in (definition.get("env") or {}).items()})
        env.update({str(k): str(v) for k, v in (message.get("envs") or {}).items()})
        if name == "sshd":
            try:
                _ssh_login_env(env, variables)
            except OSError as exc:  # logins get dropbear's PATH, the service still starts
                _log(f"service sshd: no login environment script: {exc}")
        try:
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(argv, cwd=WORK_DIR, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise ServiceError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from None
        _log(f"service {name}: started {argv[0]} (pid {proc.pid}), waiting for port {ports[0]}")
        return _Service(name, ports[0], proc, log_path, deadline)

    def poll(self) -> None:
        """Settle the services that are starting: listening, exited, or out of time."""
        pending = [s for s in self._services.values() if not s.listening]
        if not pending:
            return
        listening = listening_ports()
        now = time.monotonic()
        for service in pending:
            proc = service.proc
            if service.port in listening:
                service.listening = True
                for req, status in service.waiting:
                    self._reply(req, status)
                service.waiting.clear()
                continue
            error = None
            if proc is not None and (rc := proc.poll()) is not None:
                error = f"the service exited with status {rc} before listening on port {service.port}"
            elif now >= service.deadline:
                error = f"the service did not listen on port {service.port} in time"
                if proc is not None:
                    self._kill(proc)
            if error is None:
                continue
            tail = _log_tail(service.log_path)
            if tail:
                error += f"; its output ends with:\n{tail}"
            _log(f"service {service.name}: {error}")
            for req, _status in service.waiting:
                self._reply(req, "failed", error)
            self._services.pop(service.name, None)

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        import subprocess

        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            pass

    def stop(self, message: dict[str, Any]) -> None:
        """``shutdown-service``: end the service's process group (SIGTERM, then SIGKILL after
        :data:`STOP_GRACE` seconds) and reply ``stopped``, or ``not-running`` when it was not up.
        Requests still waiting for it to start get ``failed``. The wait blocks the loop for at
        most STOP_GRACE: services die on SIGTERM at once, and a stop is rare."""
        import subprocess

        req, name = str(message.get("req") or ""), str(message.get("name") or "")
        service = self._services.pop(name, None)
        if service is None or (service.proc is not None and service.proc.poll() is not None):
            self._reply(req, "not-running")
            return
        for waiting, _status in service.waiting:
            self._reply(waiting, "failed", "the service was stopped by shutdown-service")
        service.waiting.clear()
        if service.proc is not None:
            try:
                os.killpg(service.proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                service.proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                self._kill(service.proc)
        _log(f"service {name}: stopped")
        self._reply(req, "stopped")

    def shutdown(self) -> None:
        for service in self._services.values():
            if service.proc is not None and service.proc.poll() is None:
                try:
                    os.killpg(service.proc.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
