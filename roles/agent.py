"""The agent role: config and service, from the venv that bootstrap.sh installed. The agent
restarts only when its config, its code (roles/bai.py's code stamp) or the Redis settings it
reads from etcd (address, password, sentinels, service name) changed (a digest is kept next to
the config)."""

from __future__ import annotations

from io import StringIO
from typing import Any

from pyinfra.api import deploy
from pyinfra.operations import files

from . import accelerators
from ._service import Service, ensure_service
from .bai import code_stamp_file, toml_text, unit_text
from .bai import precheck as _precheck
from .catalog import PortUse, Role, host_port
from .settings import Settings


def agent_config(settings: Settings, accelerator: dict[str, Any] | None = None) -> dict[str, Any]:
    """agent.toml; ``accelerator``: the keys roles/accelerators.py wants there (plugins)."""
    return merge(_base_config(settings), accelerator or {})


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _base_config(settings: Settings) -> dict[str, Any]:
    return {
        "etcd": {"namespace": settings.etcd.namespace, "addr": settings.etcd.addr},
        "agent": {
            "id": settings.agent.id,
            "rpc-listen-addr": settings.agent.rpc_addr,
            "scaling-group": settings.agent.scaling_group,
            "ipc-base-path": f"{settings.state_dir}/ipc",
            "heartbeat-interval": 5.0,
        },
        "container": {
            "port-range": list(settings.agent.container_port_range),
            "bind-host": settings.agent.container_bind_host,
        },
        "resource": {"reserved-cpu": 0, "reserved-mem": settings.agent.reserved_mem},
        "logging": {"level": settings.log_level},
    }


def redis_stamp(settings: Settings) -> str:
    """A digest (not the password itself) of the Redis settings the daemons read from etcd:
    the address and password, and with Sentinel the sentinels and the service name (without
    Sentinel the text is what it always was, so an upgrade restarts no agent for it)."""
    import hashlib

    r = settings.redis
    text = f"{r.addr}\n{r.password}"
    if r.sentinel:
        text += f"\n{','.join(r.sentinel)}\n{r.service_name}"
    return hashlib.sha256(text.encode()).hexdigest() + "\n"


def service(settings: Settings) -> Service:
    cmd = f"{settings.bin('bai-agent')} start --config {settings.agent_toml}"
    return Service(
        name="agent",
        unit="bai-agent.service",
        command=cmd,
        ready=f"{settings.bin('python')} -m installer.probe tcp {settings.agent.rpc_addr}",
        unit_text=unit_text("bai agent (Backend.AI compute node)", cmd,
                            f"{settings.log_dir}/agent.log", "docker.service"),
        log_dir=settings.log_dir,
        stopwaitsecs=30,
    )


@deploy("bai-agent")
def agent(settings: Settings) -> None:
    _precheck(settings, "bai-agent")
    for path in (settings.config_dir, settings.log_dir):
        files.directory(name=f"Directory {path}", path=path, mode="755")
    # root's alone, as the agent makes it at start (kernels get their own traversable subdirs)
    files.directory(name=f"Directory {settings.state_dir}/ipc", path=f"{settings.state_dir}/ipc",
                    mode="700")
    decision, facts = accelerators.host_decision(settings)
    accel = accelerators.agent_fragment(settings, decision, facts)
    conf = files.put(name="Write agent.toml", src=StringIO(toml_text(agent_config(settings, accel))),
                     dest=settings.agent_toml, mode="600", user="root", group="root")
    code = code_stamp_file(settings, "agent")
    # The agent reads the Redis settings from etcd at start: a new password (e.g. the first
    # run that sets one) or other sentinels must restart it, as they restart the manager.
    redis = files.put(name="Record the Redis settings the agent uses",
                      src=StringIO(redis_stamp(settings)),
                      dest=f"{settings.state_dir}/agent.redis", mode="600")
    ensure_service(service(settings), configs=[conf, code, redis],
                   timeout=settings.ready_timeout)


def ports(settings: Settings) -> list[PortUse]:
    host, port = host_port(settings.agent.rpc_addr)
    lo, hi = settings.agent.container_port_range
    return [PortUse(port, host, "agent RPC"),
            PortUse(lo, settings.agent.container_bind_host, "session container ports", last=hi)]


#: (older name)
agent_service = service

ROLE = Role(name="bai-agent", groups=("agents",), deploy=agent, services=lambda s: [service(s)],
            ports=ports)
