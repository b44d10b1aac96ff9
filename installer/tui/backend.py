"""What the wizard asks of the installer, with no UI code: detect this machine, load the chosen
inventory with the edited settings, run preflight, plan and apply through the engine, read the
client summary. The wizard takes a :class:`Backend` as a constructor argument; this one is the
real thing (the engine, pyinfra, the hosts)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .. import engine, preflight, runconfig, runner
from .. import inventory as inventory_mod

T = TypeVar("T")
_engine_pool: ThreadPoolExecutor | None = None
_engine_pool_lock = threading.Lock()


def _own_default_loop() -> None:
    import gevent.hub

    gevent.hub.set_hub(gevent.hub.Hub(default=True))


def in_engine_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` in the one thread that runs pyinfra for the wizard, and wait for it.

    pyinfra runs on gevent, whose subprocess watchers (the @local and @docker connectors) work
    only on gevent's default loop; a plain worker thread gets another loop and fails ("child
    watchers are only available on the default loop"). That thread owns the default loop, and
    runs one engine call at a time. In the main thread (the CLI) ``fn`` runs directly."""
    global _engine_pool
    if threading.current_thread() is threading.main_thread():
        return fn(*args, **kwargs)
    with _engine_pool_lock:
        if _engine_pool is None:
            _engine_pool = ThreadPoolExecutor(1, thread_name_prefix="bai-engine",
                                              initializer=_own_default_loop)
        pool = _engine_pool
    return pool.submit(fn, *args, **kwargs).result()


#: The settings the wizard's form edits: (key path, label). Addresses, ports and paths.
KEY_SETTINGS: tuple[tuple[str, str], ...] = (
    ("manager.addr", "Manager API address (host:port)"),
    ("app_proxy.advertised_host", "App proxy address browsers use"),
    ("app_proxy.api_port", "App proxy port"),
    ("postgresql.port", "PostgreSQL port"),
    ("redis.port", "Redis port"),
    ("etcd.client_port", "etcd client port"),
    ("agent.rpc_addr", "Agent RPC address (host:port)"),
    ("storage_proxy.volume_path", "Storage volume path"),
    ("config_dir", "Config directory"),
    ("log_dir", "Log directory"),
)


@dataclass
class MachineInfo:
    """This machine, as the first screen shows it."""

    os: str
    cpus: int
    memory: int  # bytes
    disk_free: int  # bytes free on /
    docker: str | None
    gpus: list[str] = field(default_factory=list)


def get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def nested(path: str, value: Any) -> dict[str, Any]:
    """``"redis.port", 6380`` -> ``{"redis": {"port": 6380}}``."""
    out: dict[str, Any] = {}
    node = out
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


class Backend:
    def detect(self) -> MachineInfo:
        """This machine's OS, CPUs, memory, free disk, Docker and GPUs (pyinfra facts on
        @local)."""
        rep = in_engine_thread(engine.read_facts, [("@local", {})], preflight.HostReport,
                               paths=("/",))["@local"]
        os_ = rep.get("os") or {}
        df = rep.get("df", {}).get("/", {})
        return MachineInfo(
            os=os_.get("pretty") or "unknown",
            cpus=int(rep.get("cpus") or 0),
            memory=int(rep.get("mem") or 0),
            disk_free=int(df.get("free") or 0),
            docker=rep.get("docker"),
            gpus=[f"{g['name']} (driver {g['driver']})" for g in rep.get("gpus", [])],
        )

    def load(self, cfg: runconfig.RunConfig) -> inventory_mod.Inventory:
        """Raises InventoryError / RunConfigError / ValueError with a message for the user."""
        inv = runconfig.load_inventory(cfg)
        self.settings(inv)  # every host's settings must validate
        return inv

    def settings(self, inv: inventory_mod.Inventory) -> dict[str, Any]:
        from roles import settings as settings_mod

        out = {}
        for host in inv.hosts:
            try:
                out[host] = settings_mod.build(inv.data.get(host, {}), {})
            except ValueError as exc:  # SettingsError: one "key.path: message" per problem
                problems = getattr(exc, "problems", None) or [str(exc)]
                raise ValueError("\n".join(f"{host}: setting {p}" for p in problems)) from None
        return out

    def preflight(self, inv: inventory_mod.Inventory, limits: preflight.Thresholds
                  ) -> list[preflight.CheckResult]:
        return in_engine_thread(preflight.run, inv, limits)

    def plan(self, inv: inventory_mod.Inventory, on_event: engine.EventHandler
             ) -> engine.RunResult:
        return in_engine_thread(engine.plan, inv, on_event=on_event)

    def apply(self, inv: inventory_mod.Inventory, on_event: engine.EventHandler
              ) -> engine.RunResult:
        return in_engine_thread(engine.apply, inv, on_event=on_event)

    def summary(self, inv: inventory_mod.Inventory, result: engine.RunResult) -> dict[str, Any]:
        return in_engine_thread(runner.client_summary, inv, result)
