"""Preflight: is every host of an inventory ready for ``bai-install install``? No UI code here.

The checks read facts from the hosts (one batched fact per host plus a clock reading, through
pyinfra's public API) and return :class:`CheckResult` data: the host, the check, ``ok``, ``warn``
or ``fail``, a message that names the host and the problem, and a remedy. A host that cannot be
reached is one failed ``reach`` check (never a traceback); the checks that need its facts are then
reported as ``not checked (unreachable ...)`` so that the report says what was not looked at.

What is checked, per host:

* ``inventory``: the inventory loads, every host's settings validate (errors name the key path),
  and the clients' addresses are served: a manager, agent or storage proxy pointing at an
  etcd/Redis/PostgreSQL address that no half-stack host listens on is a contradiction.
* ``dns``: every host name resolves (addresses and pyinfra connectors need no lookup).
* ``reach``: SSH (TCP first, with a short timeout, then pyinfra's connector) or the connector.
* ``os``: Debian 12 is supported; other Debian/Ubuntu releases warn; anything without apt fails.
* ``ports``: each port the host's roles will listen on is free, or held by the same service
  already installed by us (a re-run on an installed node passes).
* ``disk``: free space on the file systems the roles write to (thresholds: :class:`Thresholds`).
* ``memory``: total memory against a minimum (fail) and a recommendation (warn).
* ``docker`` (agent hosts): the engine's version, or that the docker role can install it.
* ``gpu`` (hosts where accelerators are asked): NVIDIA GPUs present and the driver recent enough.
* ``clock``: the host's clock against this machine's (fail above a threshold).
"""

from __future__ import annotations

import ipaddress
import shlex
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pyinfra.api.config import Config
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.facts import FactBase, get_fact
from pyinfra.api.host import Host
from pyinfra.api.inventory import Inventory as PyinfraInventory
from pyinfra.api.state import BaseStateCallback, State, StateStage

from bai.common.config import ByteSize, Duration

from . import inventory as inventory_mod

Status = Literal["ok", "warn", "fail"]
STATUSES: tuple[Status, ...] = ("ok", "warn", "fail")
CHECKS = ("inventory", "dns", "reach", "os", "ports", "disk", "memory", "docker", "gpu", "clock")


@dataclass(frozen=True)
class CheckResult:
    host: str
    check: str
    status: Status
    message: str
    remedy: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class Thresholds(BaseModel):
    """Preflight limits (``[preflight]`` in ``bai-install.toml``); sizes take units (``"8g"``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: free space wanted where configs, logs, the venv and service state go
    disk_system: ByteSize = Field(default=2 * 2**30, ge=0)
    #: ... where PostgreSQL and etcd keep their data (half-stack hosts)
    disk_data: ByteSize = Field(default=2 * 2**30, ge=0)
    #: ... where Docker keeps images and containers and the kernel rootfs caches (agent hosts)
    disk_images: ByteSize = Field(default=8 * 2**30, ge=0)
    #: ... on the storage proxy's volume
    disk_volumes: ByteSize = Field(default=1 * 2**30, ge=0)
    memory_min: ByteSize = Field(default=2 * 2**30, ge=0)
    memory_recommended: ByteSize = Field(default=4 * 2**30, ge=0)
    #: |host clock - this machine's clock| above this fails; above half of it warns
    max_clock_skew: Duration = Field(default=5.0, gt=0)
    #: TCP/SSH connection and DNS lookup deadline per host
    connect_timeout: Duration = Field(default=5.0, gt=0)
    docker_min_version: str = "20.10"


# -- what each host will run ---------------------------------------------------------------------

@dataclass(frozen=True)
class PortUse:
    """A port (``port``..``last`` for a range) a role will listen on, at ``bind``."""

    port: int
    bind: str
    purpose: str
    role: str
    last: int | None = None


@dataclass
class HostPlan:
    """What preflight needs to know about one host's duties (from the role catalog)."""

    name: str
    groups: list[str]
    roles: list[str]
    settings: Any  # roles.settings.Settings
    ports: list[PortUse] = field(default_factory=list)
    #: path -> threshold class ("system", "data", "images", "volumes")
    paths: dict[str, str] = field(default_factory=dict)
    #: the systemd units and supervisor programs of its services (a port they hold is ours)
    units: set[str] = field(default_factory=set)
    programs: set[str] = field(default_factory=set)
    #: NVIDIA GPUs on this host: "on" (required), "auto" (checked where found), "off"
    cuda: str = "off"
    min_driver: str = ""
    #: (server kind, "host:port") this host's services connect to
    uses: list[tuple[str, str]] = field(default_factory=list)
    #: (server kind, listen address, port) this host serves to others
    serves: list[tuple[str, str, int]] = field(default_factory=list)


def _hostport(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class InvalidSettings(Exception):
    def __init__(self, problems: list[CheckResult]) -> None:
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems


def host_plans(inv: inventory_mod.Inventory) -> dict[str, HostPlan]:
    """Each host's roles, ports, paths and services, from the role catalog and its settings.
    Raises :class:`InvalidSettings` naming every host whose settings do not validate."""
    from roles import catalog
    from roles import settings as settings_mod

    plans: dict[str, HostPlan] = {}
    problems: list[CheckResult] = []
    for host in inv.hosts:
        bad = settings_mod.check_host_data(inv.data.get(host, {}))
        if bad:
            problems += [CheckResult(host, "inventory", "fail", f"{host}: setting {p}",
                                     "fix that key in the inventory (roles/settings.py lists "
                                     "them)") for p in bad]
            continue
        s = settings_mod.build(inv.data.get(host, {}), {})
        groups = [g for g in inventory_mod.GROUPS if host in inv.groups.get(g, [])]
        roles = catalog.roles_for_host(inv.groups, host, s)
        plan = plans[host] = HostPlan(host, groups, [r.name for r in roles], s)
        for role in roles:
            plan.ports += [PortUse(p.port, p.bind, p.purpose, role.name, p.last)
                           for p in role.ports(s)]
            for svc in role.services(s):
                plan.units.add(svc.unit)
                plan.programs.add(svc.program)
        _duties(plan, s)
    if problems:
        raise InvalidSettings(problems)
    return plans


def _duties(plan: HostPlan, s: Any) -> None:
    """The paths each role writes, the servers it offers and the ones it connects to."""
    for path in (s.venv, s.config_dir, s.log_dir, s.state_dir):
        plan.paths[path] = "system"
    for role in plan.roles:
        if role == "postgresql":
            plan.paths["/var/lib/postgresql"] = "data"
            plan.serves.append(("postgresql", s.postgresql.listen, s.postgresql.port))
        elif role == "etcd":
            plan.paths[s.etcd.data_dir] = "data"
            plan.serves.append(("etcd", s.etcd.listen, s.etcd.client_port))
        elif role == "redis":
            plan.paths["/var/lib/redis"] = "data"
            plan.serves.append(("redis", s.redis.listen, s.redis.port))
        elif role in ("docker", "kernel_image"):
            plan.paths["/var/lib/docker"] = "images"
            plan.paths[s.kernel_image.rootfs_cache] = "images"
        elif role == "storage-proxy":
            plan.paths[s.storage_proxy.volume_path] = "volumes"
            plan.uses += [("etcd", a) for a in s.etcd.addr.split(",")]
        elif role == "bai-manager":  # (HA: comma lists of etcd members and PostgreSQL servers)
            plan.uses += [*(("etcd", a) for a in s.etcd.addr.split(",")), ("redis", s.redis.addr),
                          *(("postgresql", a) for a in s.postgresql.addr.split(","))]
        elif role == "bai-agent":
            plan.uses += [("etcd", a) for a in s.etcd.addr.split(",")]
    acc = s.accelerators
    if "bai-agent" in plan.roles and not acc.mock:
        plan.cuda, plan.min_driver = acc.cuda, acc.min_driver


# -- facts ---------------------------------------------------------------------------------------

class HostReport(FactBase[dict[str, Any]]):
    """Everything preflight reads from a host, in one command that always exits 0."""

    def command(self, paths: tuple[str, ...]) -> str:
        df = "; ".join(
            f'p={shlex.quote(p)}; while [ ! -e "$p" ]; do p=$(dirname "$p"); done; '
            f'echo "df {shlex.quote(p)} $(df -Pk "$p" | tail -n1 | awk \'{{print $4, $6}}\')"'
            for p in paths
        )
        return (
            ". /etc/os-release 2>/dev/null; "
            'echo "os ${ID:-unknown} ${VERSION_ID:-?} ${PRETTY_NAME:-unknown}"; '
            'echo "apt $(command -v apt-get >/dev/null && echo yes || echo no)"; '
            'echo "cpus $(nproc 2>/dev/null || echo 0)"; '
            "awk '/^MemTotal:/{print \"mem\", $2}' /proc/meminfo; "
            f"{df}; "
            "if command -v docker >/dev/null; then "
            # an engine that does not answer prints an empty version and exits 1
            "v=$(docker version --format '{{.Server.Version}}' 2>/dev/null) || v=''; "
            'echo "docker ${v:-down}"; '
            "else echo 'docker absent'; fi; "
            "if command -v nvidia-smi >/dev/null; then "
            "nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader 2>/dev/null"
            " | sed 's/^/gpu /'; fi; "
            'echo "gpudirs $(ls /proc/driver/nvidia/gpus 2>/dev/null | wc -l)"; '
            # the names and addresses others may reach it by (a server listening on 0.0.0.0)
            'echo "names $(hostname 2>/dev/null) $(hostname -I 2>/dev/null)"; '
            "if command -v supervisorctl >/dev/null; then "
            "supervisorctl -c /etc/supervisor/supervisord.conf status 2>/dev/null"
            " | awk '$2==\"RUNNING\"{sub(\",\",\"\",$4); print \"prog\", $1, $4}'; fi; "
            "ss -Hltnp 2>/dev/null | while read -r _ _ _ local _ users; do "
            "pid=$(echo \"$users\" | sed -n 's/.*pid=\\([0-9]*\\).*/\\1/p'); "
            "comm=$(echo \"$users\" | sed -n 's/.*((\"\\([^\"]*\\)\".*/\\1/p'); "
            "unit=$( [ -n \"$pid\" ] && grep -o '[^/]*\\.service' /proc/$pid/cgroup 2>/dev/null"
            " | tail -n1); "
            "ppid=$( [ -n \"$pid\" ] && awk '{print $4}' /proc/$pid/stat 2>/dev/null); "
            'echo "listen $local ${pid:--} ${comm:--} ${unit:--} ${ppid:--}"; done; true'
        )

    def process(self, output: list[str]) -> dict[str, Any]:
        rep: dict[str, Any] = {"os": None, "apt": False, "cpus": 0, "mem": 0, "df": {},
                               "docker": None, "gpus": [], "gpudirs": 0, "programs": {},
                               "listen": []}
        for line in output:
            kind, _, rest = line.strip().partition(" ")
            parts = rest.split()
            if kind == "os" and len(parts) >= 2:
                rep["os"] = {"id": parts[0], "version": parts[1], "pretty": " ".join(parts[2:])}
            elif kind == "apt":
                rep["apt"] = rest == "yes"
            elif kind == "cpus" and rest.isdigit():
                rep["cpus"] = int(rest)
            elif kind == "mem" and rest.isdigit():
                rep["mem"] = int(rest) * 1024
            elif kind == "df" and len(parts) >= 3 and parts[1].isdigit():
                rep["df"][parts[0]] = {"free": int(parts[1]) * 1024, "mount": parts[2]}
            elif kind == "docker":
                rep["docker"] = None if rest == "absent" else (rest or "down")
            elif kind == "gpu":
                cols = [c.strip() for c in rest.split(",")]
                if len(cols) >= 3:
                    rep["gpus"].append({"index": cols[0], "name": cols[1], "driver": cols[2]})
            elif kind == "gpudirs" and rest.isdigit():
                rep["gpudirs"] = int(rest)
            elif kind == "names":
                rep["names"] = parts
            elif kind == "prog" and len(parts) == 2 and parts[1].isdigit():
                rep["programs"][int(parts[1])] = parts[0]
            elif kind == "listen" and len(parts) == 5 and ":" in parts[0]:
                addr, port = parts[0].rsplit(":", 1)
                if not port.isdigit():
                    continue
                rep["listen"].append({"addr": addr.strip("[]").split("%")[0], "port": int(port),
                                      "pid": int(parts[1]) if parts[1].isdigit() else None,
                                      "comm": parts[2], "unit": parts[3],
                                      "ppid": int(parts[4]) if parts[4].isdigit() else None})
        return rep


class Clock(FactBase[float]):
    """The host's clock, seconds since the epoch."""

    def command(self) -> str:
        return "date +%s.%N"

    def process(self, output: list[str]) -> float:
        try:
            return float(output[-1].strip())
        except (IndexError, ValueError):
            return float("nan")


#: Reads a host's clock: (state, host) -> seconds since the epoch. Tests replace it to fake a
#: host whose clock is off; the skew check itself stays the same.
ClockReader = Callable[[State, Any], float]


def read_clock(state: State, host: Any) -> float:
    return float(get_fact(state, host, Clock))


@dataclass
class Gathered:
    """What was read from one host: ``report`` and ``skew`` (host clock - ours, seconds, with
    ``skew_error`` its uncertainty), or ``error`` when the host could not be reached."""

    report: dict[str, Any] | None = None
    skew: float | None = None
    skew_error: float = 0.0
    error: str | None = None


def _is_connector(name: str) -> bool:
    return name.startswith("@")


def address_of(name: str, data: dict[str, Any]) -> str:
    return str(data.get("ssh_hostname") or name)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _resolve(name: str) -> str | None:
    """None when ``name`` resolves, else the resolver's error."""
    try:
        socket.getaddrinfo(name, None)
    except (OSError, UnicodeError) as exc:
        return str(exc)
    return None


def _tcp_reach(addr: str, port: int, timeout: float) -> str | None:
    try:
        with socket.create_connection((addr, port), timeout=timeout):
            return None
    except TimeoutError:
        return f"TCP connection to {addr}:{port} timed out after {timeout:g}s"
    except OSError as exc:
        return f"TCP connection to {addr}:{port} failed: {exc.strerror or exc}"


class _ConnectErrors(BaseStateCallback):
    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def host_connect_error(self, state: State, host: Host, error: Any) -> None:  # type: ignore[override]
        self.errors[host.name] = str(error.args[0] if getattr(error, "args", None) else error)


def gather(inv: inventory_mod.Inventory, plans: dict[str, HostPlan], limits: Thresholds,
           clock_reader: ClockReader = read_clock) -> tuple[dict[str, Gathered], list[CheckResult]]:
    """DNS and reachability results, then the facts of every host that answered."""
    results: list[CheckResult] = []
    found: dict[str, Gathered] = {h: Gathered() for h in inv.hosts}
    pending: list[str] = []

    def probe(host: str) -> tuple[str, str | None, str | None]:
        data = inv.data.get(host, {})
        addr = address_of(host, data)
        if _is_connector(host):
            return host, None, None
        dns_error = None if _is_ip(addr) else _resolve(addr)
        if dns_error:
            return host, dns_error, None
        return host, None, _tcp_reach(addr, int(data.get("ssh_port") or 22), limits.connect_timeout)

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(inv.hosts)))) as pool:
        probed = list(pool.map(probe, inv.hosts))
    for host, dns_error, tcp_error in probed:
        addr = address_of(host, inv.data.get(host, {}))
        if _is_connector(host):
            pass
        elif dns_error:
            results.append(CheckResult(host, "dns", "fail", f"{host}: the name {addr!r} does not "
                                       f"resolve ({dns_error})", "fix the name or set ssh_hostname "
                                       "to the host's address in the inventory"))
            found[host].error = f"{addr!r} does not resolve"
            continue
        else:
            how = "is an address" if _is_ip(addr) else "resolves"
            results.append(CheckResult(host, "dns", "ok", f"{host}: {addr} {how}"))
        if tcp_error:
            results.append(CheckResult(host, "reach", "fail", f"{host}: unreachable: {tcp_error}",
                                       "start the host, open SSH (port 22) from this machine, or "
                                       "fix ssh_hostname/ssh_port"))
            found[host].error = f"unreachable: {tcp_error}"
            continue
        pending.append(host)

    if pending:
        callback = _ConnectErrors()
        config = Config(CONNECT_TIMEOUT=max(1, int(limits.connect_timeout)))  # type: ignore[no-untyped-call]
        state = State(inventory=PyinfraInventory(([(h, inv.data.get(h, {})) for h in pending], {})),  # type: ignore[no-untyped-call]
                      config=config, check_for_changes=False)
        state.add_callback_handler(callback)  # type: ignore[no-untyped-call]
        state.set_stage(StateStage.Connect)
        try:
            try:
                connect_all(state)
            except PyinfraError:
                pass  # every host failed; each is reported below
            state.set_stage(StateStage.Prepare)
            for target in state.inventory:
                _read_host(state, target, found[target.name], callback, plans, results,
                           clock_reader)
        finally:
            state.set_stage(StateStage.Disconnect)
            disconnect_all(state)
    return found, results


def _read_host(state: State, host: Host, g: Gathered, callback: _ConnectErrors,
               plans: dict[str, HostPlan], results: list[CheckResult],
               clock_reader: ClockReader) -> None:
    """Read one connected host's facts and clock into ``g`` (a failure is a failed check)."""
    if not host.connected:
        why = callback.errors.get(host.name, "could not connect")
        if not _is_connector(host.name):
            data = host.data.dict()  # type: ignore[no-untyped-call]
            port = data.get("ssh_port") or 22
            why = f"SSH to {address_of(host.name, data)}:{port}: {why}"
        g.error = f"unreachable: {why}"
        results.append(CheckResult(host.name, "reach", "fail", f"{host.name}: unreachable: {why}",
                                   "check SSH access (user, key, known_hosts) or that the "
                                   "container/host exists"))
        return
    results.append(CheckResult(host.name, "reach", "ok", f"{host.name}: connected"))
    paths = tuple(sorted(plans[host.name].paths)) if host.name in plans else ()
    try:
        g.report = get_fact(state, host, HostReport, kwargs={"paths": paths})
        t0 = time.time()
        remote = clock_reader(state, host)
        t1 = time.time()
        g.skew = remote - (t0 + t1) / 2
        g.skew_error = (t1 - t0) / 2
    except Exception as exc:  # a host that drops mid-read is a failed host, not a crash
        g.error = f"reading facts failed: {exc}"
        results.append(CheckResult(host.name, "reach", "fail",
                                   f"{host.name}: reading facts failed: {exc}"))


# -- checks --------------------------------------------------------------------------------------

def _version(text: str) -> tuple[int, ...]:
    out = []
    for part in text.replace("-", ".").replace("+", ".").split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_os(host: str, rep: dict[str, Any]) -> CheckResult:
    os_ = rep.get("os") or {"id": "unknown", "version": "?", "pretty": "unknown"}
    name = os_["pretty"] or f"{os_['id']} {os_['version']}"
    if os_["id"] == "debian" and os_["version"] == "12":
        return CheckResult(host, "os", "ok", f"{host}: {name}")
    if rep.get("apt") and os_["id"] in ("debian", "ubuntu"):
        return CheckResult(host, "os", "warn", f"{host}: {name} is not tested (Debian 12 is)",
                           "use Debian 12, or go on at your own risk")
    return CheckResult(host, "os", "fail", f"{host}: {name} is not supported (Debian 12 is; the "
                       "roles need apt and Debian's packages)", "install Debian 12 on this host")


def _conflicts(want: str, have: str) -> bool:
    """Whether a listener on ``have`` stops a bind on ``want`` (same port assumed)."""
    wild = ("0.0.0.0", "::", "*", "")
    return want in wild or have in wild or want == have


def _ours(plan: HostPlan, listener: dict[str, Any], programs: dict[int, str]) -> bool:
    """Held by one of the host's own services: its systemd unit, or its supervisor program
    (the listener or its parent, e.g. docker-proxy under dockerd)."""
    if listener["unit"] in plan.units:
        return True
    return any(programs.get(pid or -1) in plan.programs
               for pid in (listener["pid"], listener.get("ppid")))


def check_ports(plan: HostPlan, rep: dict[str, Any]) -> list[CheckResult]:
    """A single port held by a foreign program fails; a foreign listener inside a range (ports
    the service picks from) only warns: it leaves that one port out."""
    results = []
    programs: dict[int, str] = rep.get("programs", {})
    for use in plan.ports:
        last = use.last if use.last is not None else use.port
        holders = [lst for lst in rep.get("listen", [])
                   if use.port <= lst["port"] <= last and _conflicts(use.bind, lst["addr"])]
        foreign = [lst for lst in holders if not _ours(plan, lst, programs)]
        span = f"{use.port}-{last}" if last != use.port else str(use.port)
        where = f"{use.bind}:{span} ({use.purpose}, role {use.role})"
        if foreign:
            who = ", ".join(f"{lst['comm']} (pid {lst['pid']}) on {lst['addr']}:{lst['port']}"
                            for lst in foreign[:5])
            results.append(CheckResult(plan.name, "ports", "warn" if last != use.port else "fail",
                                       f"{plan.name}: port {where} is in use by {who}",
                                       "stop that program, or give this service another port in "
                                       "the inventory"))
        elif holders:
            results.append(CheckResult(plan.name, "ports", "ok",
                                       f"{plan.name}: {where} is held by our service already"))
        else:
            results.append(CheckResult(plan.name, "ports", "ok", f"{plan.name}: {where} is free"))
    return results


def check_disk(plan: HostPlan, rep: dict[str, Any], limits: Thresholds) -> list[CheckResult]:
    need = {"system": limits.disk_system, "data": limits.disk_data, "images": limits.disk_images,
            "volumes": limits.disk_volumes}
    by_mount: dict[str, dict[str, Any]] = {}
    for path, kind in plan.paths.items():
        df = rep.get("df", {}).get(_nearest(path, rep.get("df", {})))
        if df is None:
            continue
        m = by_mount.setdefault(df["mount"], {"free": df["free"], "kinds": set(), "paths": []})
        m["kinds"].add(kind)  # each kind of use once per file system
        m["paths"].append(path)
    for m in by_mount.values():
        m["need"] = sum(need[kind] for kind in m["kinds"])
    results = []
    for mount, m in sorted(by_mount.items()):
        paths = ", ".join(sorted(m["paths"]))
        if m["free"] < m["need"]:
            results.append(CheckResult(plan.name, "disk", "fail",
                                       f"{plan.name}: {_gib(m['free'])} free on {mount} ({paths}), "
                                       f"{_gib(m['need'])} needed",
                                       "free space there, or lower the [preflight] disk_* "
                                       "thresholds in bai-install.toml if you know better"))
        else:
            results.append(CheckResult(plan.name, "disk", "ok", f"{plan.name}: {_gib(m['free'])} "
                                       f"free on {mount} ({_gib(m['need'])} needed)"))
    return results


def _nearest(path: str, df: dict[str, Any]) -> str:
    """The df key the fact reported for ``path`` (its nearest existing ancestor)."""
    best = ""
    for key in df:
        if (path == key or path.startswith(key.rstrip("/") + "/")) and len(key) > len(best):
            best = key
    return best


def check_memory(host: str, rep: dict[str, Any], limits: Thresholds) -> CheckResult:
    mem = int(rep.get("mem") or 0)
    text = f"{host}: {_gib(mem)} of memory, {rep.get('cpus', 0)} CPUs"
    if mem < limits.memory_min:
        return CheckResult(host, "memory", "fail", f"{text}; at least {_gib(limits.memory_min)} "
                           "needed", "give the host more memory")
    if mem < limits.memory_recommended:
        return CheckResult(host, "memory", "warn", f"{text}; {_gib(limits.memory_recommended)} "
                           "recommended", "give the host more memory")
    return CheckResult(host, "memory", "ok", text)


def check_docker(host: str, rep: dict[str, Any], limits: Thresholds) -> CheckResult:
    version = rep.get("docker")
    if version is None:
        if rep.get("apt"):
            return CheckResult(host, "docker", "ok", f"{host}: Docker is not installed; the docker "
                               "role installs Debian's docker.io")
        return CheckResult(host, "docker", "fail", f"{host}: no Docker engine and no apt to "
                           "install one", "install Docker Engine by hand")
    if version == "down":
        return CheckResult(host, "docker", "warn", f"{host}: the docker CLI is installed but no "
                           "engine answers; the docker role starts it",
                           "check `systemctl status docker` if the install fails there")
    if _version(version) < _version(limits.docker_min_version):
        return CheckResult(host, "docker", "fail", f"{host}: Docker {version} is older than "
                           f"{limits.docker_min_version}", "upgrade the Docker engine")
    return CheckResult(host, "docker", "ok", f"{host}: Docker {version}")


def check_gpus(host: str, rep: dict[str, Any], min_driver: str) -> CheckResult:
    """``accelerators.cuda = "on"`` (or ``auto`` on a host with GPUs): GPUs there, and the driver
    no older than ``accelerators.min_driver``."""
    gpus = rep.get("gpus") or []
    if not gpus:
        if rep.get("gpudirs"):
            return CheckResult(host, "gpu", "fail", f"{host}: {rep['gpudirs']} NVIDIA GPU(s) but "
                               "nvidia-smi does not answer", "install or repair the NVIDIA driver")
        return CheckResult(host, "gpu", "fail", f"{host}: accelerators.cuda is \"on\" but no "
                           "NVIDIA GPU was found", "use a GPU host, set accelerators.cuda = "
                           "\"auto\", or the mock accelerator (accelerators.mock = true)")
    driver = gpus[0]["driver"]
    names = ", ".join(sorted({g["name"] for g in gpus}))
    if _version(driver) < _version(min_driver):
        return CheckResult(host, "gpu", "fail", f"{host}: NVIDIA driver {driver} is older than "
                           f"{min_driver} (accelerators.min_driver)", "upgrade the NVIDIA driver")
    return CheckResult(host, "gpu", "ok", f"{host}: {len(gpus)} GPU(s) ({names}), driver {driver}")


def check_clock(host: str, skew: float, error: float, limits: Thresholds) -> CheckResult:
    off = abs(skew) - error  # what is surely off, whatever the reading's round trip
    text = f"{host}: clock {'ahead of' if skew > 0 else 'behind'} this machine's by {abs(skew):.1f}s"
    if skew != skew:  # NaN: no reading
        return CheckResult(host, "clock", "warn", f"{host}: the clock could not be read")
    if off > limits.max_clock_skew:
        return CheckResult(host, "clock", "fail", f"{text} (more than {limits.max_clock_skew:g}s)",
                           "enable time sync (systemd-timesyncd or chrony) on both machines")
    if off > limits.max_clock_skew / 2:
        return CheckResult(host, "clock", "warn", text, "enable time sync on both machines")
    return CheckResult(host, "clock", "ok", f"{host}: clock within {max(off, 0.0) + 0.05:.1f}s "
                       "of this machine's")


def check_contradictions(plans: dict[str, HostPlan], inv: inventory_mod.Inventory,
                         names: dict[str, set[str]] | None = None) -> list[CheckResult]:
    """Each client address (etcd, Redis, PostgreSQL) must be one some half-stack host serves.
    ``names``: what each host said its names and addresses are (hostname, ``hostname -I``)."""
    results = []
    for plan in plans.values():
        for kind, addr in plan.uses:
            try:
                want_host, want_port = _hostport(addr)
            except ValueError:
                results.append(CheckResult(plan.name, "inventory", "fail",
                                           f"{plan.name}: {kind} address {addr!r} is not host:port"))
                continue
            servers = [(p.name, listen, port) for p in plans.values()
                       for k, listen, port in p.serves if k == kind]
            if any(_serves(inv, plan.name, want_host, want_port, server, listen, port,
                           (names or {}).get(server, set()))
                   for server, listen, port in servers):
                continue
            offer = ", ".join(f"{server} on {listen}:{port}" for server, listen, port in servers)
            results.append(CheckResult(
                plan.name, "inventory", "fail",
                f"{plan.name}: points at {kind} {addr}, which no half-stack host serves "
                f"({offer or 'no half-stack host runs ' + kind})",
                f"set this host's {kind} address to one of the half-stack's, or change the "
                f"half-stack host's {kind} listen address"))
    return results


def _serves(inv: inventory_mod.Inventory, client: str, want_host: str, want_port: int,
            server: str, listen: str, port: int, known: Iterable[str] = ()) -> bool:
    if want_port != port:
        return False
    loopback = listen.startswith("127.") or listen in ("localhost", "::1")
    if loopback:  # only the same machine reaches it
        return client == server and (want_host.startswith("127.") or want_host == "localhost")
    names = {listen, address_of(server, inv.data.get(server, {})), server}
    if listen in ("0.0.0.0", "::", "*", ""):
        # Every address of the server serves: the inventory's name for it, and what the host
        # itself reports (a connector target such as @docker/<container> is reached by its
        # container name, its hostname or an address, none of which the inventory names).
        names.update(known)
        if _is_connector(server) and "/" in server:
            names.add(server.partition("/")[2])
        return want_host in names or (client == server and want_host.startswith("127."))
    return want_host in names


def run(inv: inventory_mod.Inventory, limits: Thresholds | None = None,
        clock_reader: ClockReader = read_clock) -> list[CheckResult]:
    """Every check on every host of ``inv``; never raises for a host's problem."""
    limits = limits or Thresholds()
    try:
        plans = host_plans(inv)
    except InvalidSettings as exc:
        return exc.problems
    found, reach = gather(inv, plans, limits, clock_reader)
    reported = {h: set(g.report.get("names") or ()) for h, g in found.items() if g.report}
    results = check_contradictions(plans, inv, reported) + reach
    for host in inv.hosts:
        g = found[host]
        plan = plans[host]
        if g.report is None:
            for check in ("os", "ports", "disk", "memory", "clock"):
                results.append(CheckResult(host, check, "warn",
                                           f"{host}: not checked ({g.error or 'unreachable'})"))
            continue
        rep = g.report
        results.append(check_os(host, rep))
        results += check_ports(plan, rep)
        results += check_disk(plan, rep, limits)
        results.append(check_memory(host, rep, limits))
        if "agents" in plan.groups:
            results.append(check_docker(host, rep, limits))
        if plan.cuda == "on" or (plan.cuda == "auto" and (rep.get("gpus") or rep.get("gpudirs"))):
            results.append(check_gpus(host, rep, plan.min_driver))
        if g.skew is not None:
            results.append(check_clock(host, g.skew, g.skew_error, limits))
    order = {h: i for i, h in enumerate(["inventory", *inv.hosts])}
    return sorted(results, key=lambda r: (order.get(r.host, 0), CHECKS.index(r.check)
                                          if r.check in CHECKS else 99))


def validation_results(exc: ValidationError, where: str) -> list[CheckResult]:
    out = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        out.append(CheckResult(where, "inventory", "fail", f"{where}: setting {path}: {err['msg']}",
                               "fix that key in the inventory"))
    return out


def inventory_error(exc: Exception, source: str) -> list[CheckResult]:
    """An inventory that does not load: one failed check per problem line."""
    lines = [line for line in str(exc).splitlines() if line.strip()] or [f"{source}: {exc}"]
    return [CheckResult("inventory", "inventory", "fail", line, "fix the inventory")
            for line in lines]


def failed(results: Iterable[CheckResult]) -> list[CheckResult]:
    return [r for r in results if r.status == "fail"]


def summary(results: Sequence[CheckResult]) -> dict[str, int]:
    return {s: sum(1 for r in results if r.status == s) for s in STATUSES}
