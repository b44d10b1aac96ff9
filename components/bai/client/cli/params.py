"""Option sets shared by ``run`` and ``session create`` (names as in the official CLI)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
        "-v", "--volume", "-m", "--mount", "mount", metavar="NAME[=PATH] or NAME[:PATH]", type=str, multiple=True,
        help="User-owned virtual folder names to mount (may appear multiple times). Without PATH the folder "
        "is mounted at /home/work/NAME; a relative PATH is placed under /home/work. NAME may end with a "
        "subpath (NAME/sub/dir). The long form type=bind,source=NAME,target=PATH,perm=ro also sets the "
        "permission (ro mounts are read-only inside the session).",
    ),
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
        **parse_kv_option(opts.get("mount") or (), "'-m' / '--mount'", parse_mounts),
    }


_MOUNT_KEYS = frozenset({"type", "source", "target", "perm", "permission"})


def _split_unescaped(text: str, seps: str, maxsplit: int = -1) -> list[str]:
    """Split at ``seps`` characters not preceded by a backslash (the escapes stay for later)."""
    parts: list[str] = []
    cur, i = "", 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur += text[i:i + 2]
            i += 2
            continue
        if c in seps and (maxsplit < 0 or len(parts) < maxsplit):
            parts.append(cur)
            cur = ""
        else:
            cur += c
        i += 1
    parts.append(cur)
    return parts


def _unescape(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return text.replace("\\,", ",").replace("\\:", ":").replace("\\=", "=")


def parse_mounts(exprs: Sequence[str]) -> dict[str, Any]:
    """``-m`` expressions -> ``{"mounts", "mount_map", "mount_options"}`` as the official CLI sends
    them: ``NAME``, ``NAME:PATH`` / ``NAME=PATH``, or ``type=bind,source=NAME,target=PATH,perm=ro``
    (``\\,``, ``\\:``, ``\\=`` escape the separators)."""
    mounts: list[str] = []
    mount_map: dict[str, str] = {}
    mount_options: dict[str, dict[str, str | None]] = {}
    for expr in exprs:
        pairs = [_split_unescaped(p, "=:", 1) for p in _split_unescaped(expr, ",") if p.strip()]
        if not pairs:
            raise ValueError(f"{expr!r} is not a mount expression")
        first_key = pairs[0][0].strip()
        if first_key not in _MOUNT_KEYS:
            if len(pairs) > 1:
                raise ValueError(f"{expr!r}: use NAME[:PATH] or type=...,source=...,target=...,perm=...")
            fields = {"source": _unescape(first_key)}
            if len(pairs[0]) > 1 and pairs[0][1].strip():
                fields["target"] = _unescape(pairs[0][1])
        else:
            fields = {}
            for pair in pairs:
                key = pair[0].strip()
                if key not in _MOUNT_KEYS or len(pair) < 2:
                    raise ValueError(f"{expr!r}: {key!r} is not a KEY=VALUE mount option")
                fields["permission" if key == "perm" else key] = _unescape(pair[1])
        source = fields.get("source", "")
        if not source:
            raise ValueError(f"{expr!r} names no virtual folder")
        perm = fields.get("permission") or None
        if perm is not None and perm not in ("ro", "rw", "wd"):
            raise ValueError(f"{expr!r}: the permission must be ro, rw or wd")
        mount_type = fields.get("type") or "bind"
        if source not in mounts:
            mounts.append(source)
        if fields.get("target"):
            mount_map[source] = fields["target"]
        mount_options[source] = {"type": mount_type, "permission": perm}
    return {"mounts": mounts, "mount_map": mount_map, "mount_options": mount_options}
