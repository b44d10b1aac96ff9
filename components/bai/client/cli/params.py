"""Option sets shared by ``run`` and ``session create`` (names as in the official CLI)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

F = Callable[..., Any]


class PortListType(click.ParamType):
    """``8080,8081`` -> ``[8080, 8081]``."""

    name = "PORTS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[int]:
        if isinstance(value, list):
            return value
        try:
            ports = [int(p) for p in str(value).split(",") if p.strip()]
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of port numbers", param, ctx)
        for p in ports:
            if not 1024 <= p <= 65535:
                self.fail(f"port {p} is out of the range 1024-65535", param, ctx)
        return ports


class CommaListType(click.ParamType):
    name = "LIST"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[str]:
        if isinstance(value, list):
            return value
        return [v for v in str(value).split(",") if v]


def _arch_default() -> str:
    from ..config import DEFAULT_IMAGE_ARCH

    return DEFAULT_IMAGE_ARCH


START_OPTIONS: list[F] = [
    click.option(
        "-t", "--name", "--client-token", "name", metavar="NAME", type=str, default=None,
        help="Specify a human-readable session name. If not set, a random one is used. "
        "An existing session with the same name (and image) is reused.",
    ),
    click.option(
        "--type", "type_", metavar="SESSTYPE", type=click.Choice(["interactive", "batch"], case_sensitive=False),
        default="interactive", show_default=True, help="Either batch or interactive",
    ),
    click.option(
        "--starts-at", metavar="STARTS_AT", type=str, default=None,
        help="Let session to be started at a specific or relative time (batch sessions).",
    ),
    click.option(
        "--max-wait", metavar="SECONDS", type=int, default=0, show_default=True,
        help="The maximum duration to wait until the session starts (0: no limit).",
    ),
    click.option("--no-reuse", is_flag=True, help="Do not reuse existing sessions but return an error."),
    click.option(
        "--callback-url", metavar="CALLBACK_URL", type=str, default=None,
        help="Callback URL which will be called upon session lifecycle events.",
    ),
    click.option(
        "-e", "--env", metavar="KEY=VAL", type=str, multiple=True,
        help="Environment variable (may appear multiple times)",
    ),
    click.option("--tag", type=str, default=None, help="User-defined tag string to annotate sessions."),
    click.option(
        "--scaling-group", "--sgroup", "scaling_group", metavar="SCALING_GROUP", type=str, default=None,
        help="The scaling group (resource group) to execute the session in. "
        "If not specified, the manager picks one.",
    ),
    click.option(
        "-r", "--resources", metavar="KEY=VAL", type=str, multiple=True,
        help="Set computation resources used by the session (e.g: -r cpu=2 -r mem=256 -r gpu=1). "
        "1 slot of cpu/gpu represents 1 core. The unit of mem(ory) is MiB unless a suffix is given.",
    ),
    click.option(
        "--cluster-size", metavar="NUMBER", type=click.IntRange(min=1), default=1, show_default=True,
        help="The size of cluster in number of containers.",
    ),
    click.option(
        "--cluster-mode", metavar="MODE", type=click.Choice(["single-node", "multi-node"], case_sensitive=False),
        default="single-node", show_default=True, help="The mode of clustering.",
    ),
    click.option(
        "--resource-opts", metavar="KEY=VAL", type=str, multiple=True,
        help="Resource options for creating compute session (e.g: shmem=64m)",
    ),
    click.option(
        "--arch", "--architecture", "architecture", metavar="ARCH_NAME", type=str, default=None,
        help="Architecture of the image to use (default: this machine's).",
    ),
    click.option(
        "--bootstrap-script", metavar="PATH", type=click.File("r"), default=None,
        help="A user-defined script to execute on startup.",
    ),
    click.option("--preopen", metavar="PORTS", default=None, type=PortListType(), help="Pre-open service ports"),
    click.option(
        "-d", "--domain", metavar="DOMAIN_NAME", default=None,
        help="Domain name where the session will be spawned. "
        "If not specified, config's domain name will be used.",
    ),
    click.option(
        "-g", "--group", metavar="GROUP_NAME", default=None,
        help="Group (project) name where the session is spawned. "
        "User should be a member of the group to execute the code.",
    ),
]


def start_options(f: F) -> F:
    for dec in reversed(START_OPTIONS):
        f = dec(f)
    return f


def build_create_kwargs(opts: dict[str, Any]) -> dict[str, Any]:
    """Map parsed start options to :func:`bai.client.session.create` keyword arguments."""
    from ..helpers import parse_env, parse_resources
    from .common import parse_kv_option

    script = opts.get("bootstrap_script")
    return {
        "name": opts.get("name"),
        "type_": (opts.get("type_") or "interactive").lower(),
        "starts_at": opts.get("starts_at"),
        "max_wait": opts.get("max_wait") or 0,
        "no_reuse": bool(opts.get("no_reuse")),
        "callback_url": opts.get("callback_url"),
        "environ": parse_kv_option(opts.get("env") or (), "'-e' / '--env'", parse_env),
        "tag": opts.get("tag"),
        "scaling_group": opts.get("scaling_group"),
        "resources": parse_kv_option(opts.get("resources") or (), "'-r' / '--resources'", parse_resources),
        "resource_opts": parse_kv_option(opts.get("resource_opts") or (), "'--resource-opts'", parse_resources),
        "cluster_size": opts.get("cluster_size") or 1,
        "cluster_mode": (opts.get("cluster_mode") or "single-node").lower(),
        "architecture": opts.get("architecture") or _arch_default(),
        "bootstrap_script": script.read() if script is not None else None,
        "domain": opts.get("domain"),
        "group": opts.get("group"),
    }
