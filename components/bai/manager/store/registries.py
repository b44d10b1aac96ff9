"""Container registry settings, kept in etcd exactly where the original keeps them:
``config/docker/registry/<quoted hostname>`` holds the URL (the empty-string sub-key of the JSON
form), and ``.../<quoted hostname>/{type,project,username,password,ssl-verify}`` the rest
(``project`` a comma list). Hostnames are URL-quoted in keys (``127.0.0.1:5000`` ->
``127.0.0.1%3A5000``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bai.common.etcd import EtcdStore, quote_key, unquote_key

PREFIX = "config/docker/registry"
#: Sub-keys besides the URL, as the original names them.
SUBKEYS = ("type", "project", "username", "password", "ssl-verify")


@dataclass(frozen=True)
class RegistrySettings:
    hostname: str
    url: str
    type: str = "docker"
    project: list[str] = field(default_factory=list)
    username: str | None = None
    password: str | None = None
    ssl_verify: bool = True


def _key(hostname: str, sub: str = "") -> str:
    return f"{PREFIX}/{quote_key(hostname)}" + (f"/{sub}" if sub else "")


def _settings(hostname: str, flat: Mapping[str, str]) -> RegistrySettings | None:
    url = flat.get("")
    if not url:
        return None  # sub-keys without a URL: not a usable registry
    return RegistrySettings(
        hostname=hostname, url=url, type=flat.get("type") or "docker",
        project=[p.strip() for p in (flat.get("project") or "").split(",") if p.strip()],
        username=flat.get("username") or None, password=flat.get("password") or None,
        ssl_verify=(flat.get("ssl-verify") or "true").lower() not in ("false", "no", "0", "off"),
    )


async def registries(etcd: EtcdStore) -> dict[str, RegistrySettings]:
    """Every configured registry by hostname."""
    grouped: dict[str, dict[str, str]] = {}
    for rel, value in (await etcd.get_prefix(PREFIX + "/")).items():
        quoted, _, sub = rel.partition("/")
        grouped.setdefault(unquote_key(quoted), {})[sub] = value
    found = {host: _settings(host, flat) for host, flat in grouped.items()}
    return {host: s for host, s in sorted(found.items()) if s is not None}


async def registry(etcd: EtcdStore, hostname: str) -> RegistrySettings | None:
    flat = {sub: value for sub, value in (await etcd.get_prefix(_key(hostname) + "/")).items()}
    url = await etcd.get(_key(hostname))
    if url is not None:
        flat[""] = url
    return _settings(hostname, flat)


def _flat(changes: Mapping[str, object]) -> dict[str, str | None]:
    """Field changes -> sub-key values (None: delete the sub-key)."""
    out: dict[str, str | None] = {}
    for name, value in changes.items():
        sub = "ssl-verify" if name == "ssl_verify" else name
        if sub not in SUBKEYS:
            raise ValueError(f"unknown registry setting {name!r}")
        if value is None:
            out[sub] = None
        elif sub == "project":
            out[sub] = ",".join(str(p) for p in value) if isinstance(value, (list, tuple)) else str(value)
        elif sub == "ssl-verify":
            out[sub] = "true" if value else "false"
        else:
            out[sub] = str(value)
    return out


async def create(etcd: EtcdStore, hostname: str, url: str, settings: Mapping[str, object]) -> bool:
    """Add a registry; False (and nothing written) when ``hostname`` already has one."""
    flat = _flat(settings)
    if not await etcd.put_if_absent(_key(hostname), url):
        return False
    for sub, value in flat.items():
        if value is not None:
            await etcd.put(_key(hostname, sub), value)
    return True


async def modify(etcd: EtcdStore, hostname: str, url: str | None, settings: Mapping[str, object]) -> None:
    flat = _flat(settings)  # validated before anything is written
    if url is not None:
        await etcd.put(_key(hostname), url)
    for sub, value in flat.items():
        if value is None:
            await etcd.delete(_key(hostname, sub))
        else:
            await etcd.put(_key(hostname, sub), value)


async def delete(etcd: EtcdStore, hostname: str) -> None:
    # The slash matters: "127.0.0.1%3A5000" must not take "127.0.0.1%3A50001" with it.
    await etcd.delete_prefix(_key(hostname) + "/")
    await etcd.delete(_key(hostname))
