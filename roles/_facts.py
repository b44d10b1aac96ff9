"""Our own pyinfra facts. They only read state, and every command exits 0 (a failing fact
command would fail the host), reporting problems as data instead."""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra.api import FactBase


class ServiceManager(FactBase[str]):
    """``systemd`` when systemd is PID 1 and booted (``/run/systemd/system``), else ``supervisor``."""

    def command(self) -> str:
        return (
            'if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && [ -d /run/systemd/system ]; '
            "then echo systemd; else echo supervisor; fi"
        )

    def process(self, output: list[str]) -> str:
        return "systemd" if output and output[0].strip() == "systemd" else "supervisor"

    @staticmethod
    def default() -> str:
        return "supervisor"


class Check(FactBase[bool]):
    """True when a shell command succeeds (its output is discarded)."""

    def command(self, cmd: str) -> str:
        return f"( {cmd} ) >/dev/null 2>&1 && echo yes || echo no"

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[-1].strip() == "yes"

    @staticmethod
    def default() -> bool:
        return False


class FileText(FactBase[str | None]):
    """A file's text, or None when it does not exist."""

    def command(self, path: str) -> str:
        p = shlex.quote(path)
        return f"if [ -f {p} ]; then echo __present__; cat {p}; else echo __absent__; fi"

    def process(self, output: list[str]) -> str | None:
        if not output or output[0] != "__present__":
            return None
        return "\n".join(output[1:]) + ("\n" if len(output) > 1 else "")

    @staticmethod
    def default() -> str | None:
        return None


class MissingDebs(FactBase[list[str]]):
    """The subset of ``packages`` not installed (dpkg status ``install ok installed``)."""

    def command(self, packages: tuple[str, ...]) -> str:
        names = " ".join(shlex.quote(p) for p in packages)
        return (
            f"for p in {names}; do "
            "dpkg-query -W -f='${Status}\\n' \"$p\" 2>/dev/null | grep -q '^install ok installed$' "
            '|| echo "$p"; done; true'
        )

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]

    @staticmethod
    def default() -> list[str]:
        return []


class SupervisordUp(FactBase[bool]):
    """supervisord runs (pid file names a live process, and its socket exists); cheaper than
    asking supervisorctl."""

    def command(self) -> str:
        return (
            "if [ -S /var/run/supervisor.sock ] && [ -f /var/run/supervisord.pid ] && "
            'kill -0 "$(cat /var/run/supervisord.pid)" 2>/dev/null; then echo yes; else echo no; fi'
        )

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[-1].strip() == "yes"

    @staticmethod
    def default() -> bool:
        return False


class SupervisorState(FactBase[dict[str, Any]]):
    """``{"up": bool, "programs": {name: STATE}}`` of supervisord; down when unreachable.

    Asked over supervisord's XML-RPC socket with curl where both are there (~0.1 s), else with
    supervisorctl (a Python start: seconds on a busy host, for every service of a run)."""

    CONF = "/etc/supervisor/supervisord.conf"
    SOCKET = "/var/run/supervisor.sock"
    CALL = ("<?xml version='1.0'?><methodCall><methodName>supervisor.getAllProcessInfo"
            "</methodName></methodCall>")

    def command(self) -> str:
        ctl = f"supervisorctl -c {self.CONF}"
        rpc = (f"curl -s --max-time 10 --unix-socket {self.SOCKET} -H 'Content-Type: text/xml' "
               f"--data {shlex.quote(self.CALL)} http://localhost/RPC2")
        return (
            f"if [ -S {self.SOCKET} ] && command -v curl >/dev/null 2>&1 && "
            f"out=$({rpc} 2>/dev/null) && printf '%s' \"$out\" | grep -q '<methodResponse>' && "
            "! printf '%s' \"$out\" | grep -q '<fault>'; then echo __xml__; printf '%s\\n' \"$out\"; "
            f"elif command -v supervisorctl >/dev/null 2>&1 && {ctl} pid >/dev/null 2>&1; then "
            f"echo __up__; {ctl} status 2>/dev/null; else echo __down__; fi; true"
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        programs: dict[str, str] = {}
        if output and output[0].strip() == "__xml__":
            import xmlrpc.client

            try:
                params, _ = xmlrpc.client.loads("\n".join(output[1:]))
            except Exception:  # noqa: BLE001 - an answer we cannot read: as if down
                return {"up": False, "programs": {}}
            infos: list[dict[str, Any]] = params[0] if params and isinstance(params[0], list) else []
            for info in infos:
                name = info["name"] if info.get("group") == info.get("name") else f"{info['group']}:{info['name']}"
                programs[name] = str(info.get("statename", "UNKNOWN"))
            return {"up": True, "programs": programs}
        up = bool(output) and output[0].strip() == "__up__"
        for line in output[1:]:
            parts = line.split()
            if len(parts) >= 2:
                programs[parts[0]] = parts[1]
        return {"up": up, "programs": programs}

    @staticmethod
    def default() -> dict[str, Any]:
        return {"up": False, "programs": {}}


class SystemdUnit(FactBase[dict[str, str]]):
    """``{"active": ..., "enabled": ...}`` for one unit (``unknown`` when systemctl is absent)."""

    def command(self, unit: str) -> str:
        u = shlex.quote(unit)
        return (
            f"echo active=$(systemctl is-active {u} 2>/dev/null || true); "
            f"echo enabled=$(systemctl is-enabled {u} 2>/dev/null || true)"
        )

    def process(self, output: list[str]) -> dict[str, str]:
        out = {"active": "unknown", "enabled": "unknown"}
        for line in output:
            key, _, value = line.partition("=")
            if key in out:
                out[key] = value.strip() or "unknown"
        return out

    @staticmethod
    def default() -> dict[str, str]:
        return {"active": "unknown", "enabled": "unknown"}


class KeyValueFile(FactBase[dict[str, str]]):
    """``KEY=VALUE`` pairs of a shell env file (``export`` prefixes and quotes stripped)."""

    def command(self, path: str) -> str:
        return f"cat {shlex.quote(path)} 2>/dev/null; true"

    def process(self, output: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in output:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            line = line.removeprefix("export ").strip()
            key, sep, value = line.partition("=")
            if sep:
                out[key.strip()] = shlex.split(value)[0] if value.strip() else ""
        return out

    @staticmethod
    def default() -> dict[str, str]:
        return {}


class KernelModule(FactBase[dict[str, Any]]):
    """``{"loaded": bool, "loadable": bool}`` for one kernel module: loaded (or built in) when
    ``/sys/module/<name>`` exists; loadable when ``modprobe -n`` finds it for the running kernel
    (never in a container without the host's /lib/modules)."""

    def command(self, module: str) -> str:
        n = shlex.quote(module)
        return (f"if [ -d /sys/module/{n} ]; then echo loaded=yes; else echo loaded=no; fi; "
                f"if command -v modprobe >/dev/null 2>&1 && modprobe -n -q {n} 2>/dev/null; "
                "then echo loadable=yes; else echo loadable=no; fi")

    def process(self, output: list[str]) -> dict[str, Any]:
        values = dict(line.strip().partition("=")[::2] for line in output if "=" in line)
        return {"loaded": values.get("loaded") == "yes", "loadable": values.get("loadable") == "yes"}

    @staticmethod
    def default() -> dict[str, Any]:
        return {"loaded": False, "loadable": False}


class TimeSync(FactBase[dict[str, str]]):
    """How the host keeps its clock: ``container`` (yes/no: then the host's kernel clock is
    shared and not ours to set), ``daemon`` (chrony, ntpsec, openntpd, systemd-timesyncd or
    none), ``synchronized`` (yes/no/unknown, from timedatectl where systemd runs)."""

    def command(self) -> str:
        return (
            "v=$(systemd-detect-virt -c 2>/dev/null); c=no; "
            "if [ -n \"$v\" ] && [ \"$v\" != none ]; then c=yes; fi; "
            "if [ -f /run/.containerenv ] || [ -f /.dockerenv ]; then c=yes; fi; "
            "echo container=$c; "
            "d=none; for p in chrony ntpsec openntpd ntp systemd-timesyncd; do "
            "if dpkg-query -W -f='${Status}' \"$p\" 2>/dev/null | grep -q 'ok installed'; "
            "then d=$p; break; fi; done; echo daemon=$d; "
            "s=$(timedatectl show -p NTPSynchronized --value 2>/dev/null); echo synchronized=${s:-unknown}"
        )

    def process(self, output: list[str]) -> dict[str, str]:
        values = {"container": "no", "daemon": "none", "synchronized": "unknown"}
        for line in output:
            key, sep, value = line.strip().partition("=")
            if sep and key in values:
                values[key] = value
        return values

    @staticmethod
    def default() -> dict[str, str]:
        return {"container": "no", "daemon": "none", "synchronized": "unknown"}


class OpenFilesLimit(FactBase[int]):
    """The soft open-files limit of the process whose pid is in ``pid_file`` (0: no process)."""

    def command(self, pid_file: str) -> str:
        return (f'p=$(cat {shlex.quote(pid_file)} 2>/dev/null); '
                'if [ -n "$p" ] && [ -r "/proc/$p/limits" ]; then '
                "awk '/^Max open files/ {print $4}' \"/proc/$p/limits\"; else echo 0; fi")

    def process(self, output: list[str]) -> int:
        text = output[-1].strip() if output else "0"
        return 2**31 if text == "unlimited" else int(text) if text.isdigit() else 0

    @staticmethod
    def default() -> int:
        return 0


class Account(FactBase[dict[str, list[str]]]):
    """``{"passwd": fields or [], "group": fields or []}`` of one account and its same-named
    group, from getent (one cheap command; pyinfra's Users fact reads every account)."""

    def command(self, account: str) -> str:
        a = shlex.quote(account)
        return f"echo \"passwd=$(getent passwd {a})\"; echo \"group=$(getent group {a})\""

    def process(self, output: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"passwd": [], "group": []}
        for line in output:
            key, sep, value = line.partition("=")
            if sep and key in out and value.strip():
                out[key] = value.strip().split(":")
        return out

    @staticmethod
    def default() -> dict[str, list[str]]:
        return {"passwd": [], "group": []}
