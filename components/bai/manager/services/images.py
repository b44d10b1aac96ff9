"""Images and container registries: who sees which image, registry settings (etcd), the
registry rescan (a background task), aliases and forgetting.

Reads: superadmins and monitors see every image; admins and users those of the local registry
and of their domain's ``allowed_docker_registries`` (as the original's ``filter_allowed``), and
only admins (and monitors) learn which agents hold an image. Writes are superadmin-only
(privileges.require_superadmin_write) and each runs in one transaction.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bai.common.docker_registry import RegistryClient, RegistryError, ScannedImage
from bai.common.service_ports import ServicePortError, parse_service_ports
from bai.common.types import parse_binary_size
from bai.manager import errors
from bai.manager.services.outcome import Outcome
from bai.manager.store import images as image_store
from bai.manager.store import registries as registry_store
from bai.manager.store.keypairs import Requester
from bai.manager.store.registries import RegistrySettings

from . import bgtasks, image_removal
from .context import ManagerContext
from .privileges import require_superadmin_write
from .scheduling.images import is_pullable

log = logging.getLogger(__name__)

LOCAL_REGISTRY = image_store.LOCAL_REGISTRY
PASSWORD_PLACEHOLDER = "*****"
LABEL_KERNELSPEC = "ai.backend.kernelspec"
LABEL_FEATURES = "ai.backend.features"
LABEL_ACCELERATORS = "ai.backend.accelerators"
LABEL_SERVICE_PORTS = "ai.backend.service-ports"
RESOURCE_MIN = "ai.backend.resource.min."
RESOURCE_MAX = "ai.backend.resource.max."
REGISTRY_TYPES = ("docker", "harbor", "harbor2")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(:\d{1,5})?$")


# ------------------------------------------------------------------ image reads

@dataclass(frozen=True)
class ImageInfo:
    id: uuid.UUID
    canonical: str
    name: str  # the repository path, without registry and tag (as the original's Image.name)
    tag: str | None
    registry: str
    architecture: str
    is_local: bool
    digest: str | None
    labels: dict[str, str]
    aliases: list[str]
    size_bytes: int
    resource_limits: list[dict[str, str]]
    supported_accelerators: list[str]
    installed: bool
    installed_agents: list[str] | None  # None: not the caller's business


def repository_of(canonical: str, registry: str) -> str:
    path = canonical.removeprefix(registry + "/") if canonical.startswith(registry + "/") else canonical
    head, sep, tag = path.rpartition(":")
    return head if sep and "/" not in tag else path


def resource_limits(labels: dict[str, str]) -> list[dict[str, str]]:
    """``[{key, min, max}]`` from the image's ``ai.backend.resource.{min,max}.*`` labels (memory
    sizes in bytes; no max label: ``Infinity``, as the original's BigDecimal prints it)."""
    slots = sorted({k.removeprefix(RESOURCE_MIN) for k in labels if k.startswith(RESOURCE_MIN)}
                   | {k.removeprefix(RESOURCE_MAX) for k in labels if k.startswith(RESOURCE_MAX)})

    def amount(slot: str, raw: str | None, default: str) -> str:
        if raw is None:
            return default
        try:
            return str(parse_binary_size(raw)) if slot.endswith("mem") else str(Decimal(raw))
        except (ValueError, ArithmeticError):
            return default
    return [{"key": s, "min": amount(s, labels.get(RESOURCE_MIN + s), "0"),
             "max": amount(s, labels.get(RESOURCE_MAX + s), "Infinity")} for s in slots]


def _accelerators(labels: dict[str, str], column: str | None) -> list[str]:
    raw = labels.get(LABEL_ACCELERATORS) or column or ""
    return [a.strip() for a in raw.split(",") if a.strip()]


def _info(row: Any, alive: set[str], show_agents: bool) -> ImageInfo:
    labels = dict(row.labels or {})
    holders = sorted(a for a in row.installed_agents or [] if a in alive)
    return ImageInfo(
        id=row.id, canonical=row.name, name=repository_of(row.name, row.registry), tag=row.tag,
        registry=row.registry, architecture=row.architecture, is_local=row.is_local, digest=row.config_digest,
        labels=labels, aliases=sorted(row.aliases or []), size_bytes=int(row.size_bytes or 0),
        resource_limits=resource_limits(labels), supported_accelerators=_accelerators(labels, row.accelerators),
        installed=bool(holders), installed_agents=holders if show_agents else None,
    )


def _sees_all(req: Requester) -> bool:
    return req.role in ("superadmin", "monitor")


def _sees_agents(req: Requester) -> bool:
    return req.role in ("superadmin", "monitor", "admin")


async def _visible_registries(conn: Any, req: Requester) -> set[str] | None:
    if _sees_all(req):
        return None
    return {LOCAL_REGISTRY, *await image_store.allowed_registries(conn, req.domain_name)}


def _is_operation(labels: dict[str, str]) -> bool:
    return "operation" in (labels.get(LABEL_FEATURES) or "").split()


def customized_for(labels: dict[str, str], user_uuid: uuid.UUID) -> bool:
    """Whether a user may see and use the image: any image but another user's customized one
    (a session committed as an image, labelled ``ai.backend.customized-image.owner=user:<uuid>``)."""
    owner = labels.get(image_store.CUSTOMIZED_OWNER)
    return not owner or owner == f"user:{user_uuid}"


def _owns_customized(req: Requester, labels: dict[str, str]) -> bool:
    return labels.get(image_store.CUSTOMIZED_OWNER) == f"user:{req.user_uuid}"


def _require_owner_or_superadmin(req: Requester, row: Any) -> None:
    """Forgetting or untagging: superadmins, and the owner of a customized image for that image."""
    if row is None or not _owns_customized(req, dict(row.labels or {})):
        require_superadmin_write(req)


async def list_customized(ctx: ManagerContext, req: Requester) -> list[ImageInfo]:
    """The original's ``customized_images``: the caller's own customized images (any registry)."""
    async with ctx.db.connect() as conn:
        rows = await image_store.image_rows(conn)
        alive = await image_store.alive_agent_ids(conn)
    return [_info(r, alive, _sees_agents(req)) for r in rows if _owns_customized(req, dict(r.labels or {}))]


def check_customized_owner(labels: dict[str, str], user_uuid: uuid.UUID, reference: str) -> None:
    """Session creation: another user's customized image is as unknown as a missing one (404)."""
    if not customized_for(labels, user_uuid):
        raise errors.ImageNotFound(f"Unknown image: {reference}")


async def list_images(ctx: ManagerContext, req: Requester, *, is_installed: bool | None = None,
                      is_operation: bool | None = None) -> list[ImageInfo]:
    """The original's ``images``: operation images only with ``is_operation``, the others
    without it; installed ones only with ``is_installed``."""
    async with ctx.db.connect() as conn:
        registries = await _visible_registries(conn, req)
        rows = await image_store.image_rows(conn, registries=registries)
        alive = await image_store.alive_agent_ids(conn)
    found = [_info(r, alive, _sees_agents(req)) for r in rows]
    found = [i for i in found if _is_operation(i.labels) == bool(is_operation)
             and (_sees_all(req) or customized_for(i.labels, req.user_uuid))]
    if is_installed is not None:
        found = [i for i in found if i.installed == is_installed]
    return found


async def get_image(ctx: ManagerContext, req: Requester, reference: str, architecture: str) -> ImageInfo | None:
    """By canonical name or alias; None when there is none the caller may use."""
    return await _one(ctx, req, lambda conn: image_store.find(conn, reference, architecture))


async def get_image_by_id(ctx: ManagerContext, req: Requester, image_id: str) -> ImageInfo | None:
    try:
        ident = uuid.UUID(image_id)
    except ValueError:
        raise errors.InvalidAPIParameters(f"not an image id: {image_id!r}") from None
    return await _one(ctx, req, lambda conn: image_store.by_id(conn, ident))


async def _one(ctx: ManagerContext, req: Requester,
               lookup: Callable[[Any], Awaitable[Any | None]]) -> ImageInfo | None:
    async with ctx.db.connect() as conn:
        row = await lookup(conn)
        if row is None:
            return None
        registries = await _visible_registries(conn, req)
        alive = await image_store.alive_agent_ids(conn)
    if registries is not None and row.registry not in registries:
        return None  # as if it did not exist: the caller may not use it
    if not _sees_all(req) and not customized_for(dict(row.labels or {}), req.user_uuid):
        return None  # another user's customized image
    return _info(row, alive, _sees_agents(req))


async def check_registry_allowed(conn: Any, registry: str, domain_name: str, group_id: Any = None) -> None:
    """Session creation: the image's registry must be the local one, allowed for the domain, or
    the project's own registry."""
    if registry == LOCAL_REGISTRY:
        return
    if registry not in await image_store.allowed_registries(conn, domain_name, group_id):
        raise errors.GenericForbidden(
            f"Images from the registry {registry!r} are not allowed in the domain {domain_name!r} "
            "(see the domain's allowed_docker_registries and the project's container_registry).")


# ------------------------------------------------------------------ image writes

async def alias_image(ctx: ManagerContext, req: Requester, alias: str, target: str, architecture: str) -> Outcome:
    require_superadmin_write(req)
    alias = alias.strip()
    if not alias:
        return Outcome(False, "the alias must not be empty")
    async with ctx.db.begin() as conn:
        row = await image_store.find(conn, target, architecture)
        if row is None:
            return Outcome(False, f"no image {target!r} ({architecture})")
        if not await image_store.add_alias(conn, alias, row.name):
            return Outcome(False, f"the alias {alias!r} already exists")
    return Outcome(True, "")


async def dealias_image(ctx: ManagerContext, req: Requester, alias: str) -> Outcome:
    require_superadmin_write(req)
    async with ctx.db.begin() as conn:
        if not await image_store.remove_alias(conn, alias):
            return Outcome(False, f"no alias {alias!r}")
    return Outcome(True, "")


async def _forget(ctx: ManagerContext, row: Any, missing: str) -> Outcome:
    """Drop the image's row. A customized image is removed from the ALIVE agents holding it
    first (services/image_removal): when no configured registry serves it (is_pullable), a
    holder that keeps it (in use, no answer) keeps the row too; a pushed one is removed from them
    best effort. Kernel images stay on their agents, which register them again while they hold
    them (the message says so)."""
    notes: list[str] = []
    if dict(row.labels or {}).get(image_store.CUSTOMIZED_OWNER):
        removal = await image_removal.remove_from_holders(ctx, row.name, row.architecture)
        if removal.failures:
            if not await is_pullable(ctx.etcd, row.registry):
                return Outcome(False, removal.refusal(row.name))
            notes.extend(f"the agent {agent} kept its copy ({why})" for agent, why in sorted(removal.failures.items()))
        notes.append(removal.caveat())
    elif row.installed_agents:
        held = ", ".join(sorted(str(a) for a in row.installed_agents))
        notes.append(f"forgotten; agents never delete a kernel image on a forget: {held} still "
                     "hold it and register it again at their next heartbeat")
    async with ctx.db.begin() as conn:
        if not await image_store.forget(conn, row.name, row.architecture):
            return Outcome(False, missing)
    return Outcome(True, "; ".join(n for n in notes if n))


async def forget_image(ctx: ManagerContext, req: Requester, reference: str, architecture: str) -> Outcome:
    async with ctx.db.connect() as conn:
        row = await image_store.find(conn, reference, architecture)
    _require_owner_or_superadmin(req, row)
    missing = f"no image {reference!r} ({architecture})"
    return Outcome(False, missing) if row is None else await _forget(ctx, row, missing)


async def forget_image_by_id(ctx: ManagerContext, req: Requester, image_id: str) -> Outcome:
    try:
        ident = uuid.UUID(image_id)
    except ValueError:
        require_superadmin_write(req)
        return Outcome(False, f"not an image id: {image_id!r}")
    async with ctx.db.connect() as conn:
        row = await image_store.by_id(conn, ident)
    _require_owner_or_superadmin(req, row)
    missing = f"no image with id {image_id}"
    return Outcome(False, missing) if row is None else await _forget(ctx, row, missing)


async def untag_image_from_registry(ctx: ManagerContext, req: Requester, image_id: str) -> Outcome:
    """Delete the image's manifest from its registry (so every tag of it there) and forget it."""
    try:
        ident = uuid.UUID(image_id)
    except ValueError:
        require_superadmin_write(req)
        return Outcome(False, f"not an image id: {image_id!r}")
    async with ctx.db.connect() as conn:
        row = await image_store.by_id(conn, ident)
    _require_owner_or_superadmin(req, row)
    if row is None or row.is_local:
        return Outcome(False, f"no registry image with id {image_id}")
    settings = await registry_store.registry(ctx.etcd, row.registry)
    if settings is None:
        return Outcome(False, f"the registry {row.registry!r} is not configured")
    try:
        async with _client(settings) as client:
            await client.delete_tag(repository_of(row.name, row.registry), row.tag or "latest")
    except RegistryError as exc:
        return Outcome(False, str(exc))
    if dict(row.labels or {}).get(image_store.CUSTOMIZED_OWNER):  # the agents' copies too, best effort
        await image_removal.remove_from_holders(ctx, row.name, row.architecture)
    async with ctx.db.begin() as conn:
        await image_store.forget(conn, row.name, row.architecture)
    return Outcome(True, "")


# ------------------------------------------------------------------ registries

@dataclass(frozen=True)
class RegistryView:
    hostname: str
    url: str
    type: str
    project: list[str]
    username: str | None
    password: str | None  # the placeholder when one is set; never the password
    ssl_verify: bool


def _view(s: RegistrySettings) -> RegistryView:
    return RegistryView(s.hostname, s.url, s.type, s.project, s.username,
                        PASSWORD_PLACEHOLDER if s.password else None, s.ssl_verify)


def _require_read(req: Requester) -> None:
    if not _sees_all(req):
        raise errors.GenericForbidden("superadmin privilege required")


async def container_registries(ctx: ManagerContext, req: Requester) -> list[RegistryView]:
    _require_read(req)
    return [_view(s) for s in (await registry_store.registries(ctx.etcd)).values()]


async def registry_urls(ctx: ManagerContext, req: Requester) -> dict[str, str]:
    """Hostname -> URL of every registry (superadmins): the original's ``GET /config/docker-registries``."""
    return {r.hostname: r.url for r in await container_registries(ctx, req)}


async def container_registry(ctx: ManagerContext, req: Requester, hostname: str) -> RegistryView | None:
    _require_read(req)
    found = await registry_store.registry(ctx.etcd, hostname)
    return None if found is None else _view(found)


def _check_settings(hostname: str, url: str | None, props: dict[str, Any]) -> None:
    if not _HOSTNAME_RE.match(hostname):
        raise errors.InvalidAPIParameters(f"not a registry hostname: {hostname!r} (host or host:port)")
    if url is not None and not re.match(r"^https?://[^\s/]+(/\S*)?$", url):
        raise errors.InvalidAPIParameters(f"not an http(s) URL: {url!r}")
    if props.get("type") is not None and props["type"] not in REGISTRY_TYPES:
        raise errors.InvalidAPIParameters(f"unknown registry type {props['type']!r} (one of {', '.join(REGISTRY_TYPES)})")


async def create_container_registry(ctx: ManagerContext, req: Requester, hostname: str,
                                    props: dict[str, Any]) -> Outcome:
    require_superadmin_write(req)
    url = props.get("url")
    if not url:
        raise errors.InvalidAPIParameters("props.url is required")
    settings = {k: v for k, v in props.items() if k != "url"}
    _check_settings(hostname, url, settings)
    settings.setdefault("type", "docker")
    if not await registry_store.create(ctx.etcd, hostname, url, settings):
        return Outcome(False, f"the registry {hostname!r} already exists")
    return Outcome(True, "", await container_registry(ctx, req, hostname))


async def modify_container_registry(ctx: ManagerContext, req: Requester, hostname: str,
                                    props: dict[str, Any]) -> Outcome:
    require_superadmin_write(req)
    url = props.get("url")
    settings = {k: v for k, v in props.items() if k != "url"}
    _check_settings(hostname, url, settings)
    if await registry_store.registry(ctx.etcd, hostname) is None:
        return Outcome(False, f"no registry {hostname!r}")
    await registry_store.modify(ctx.etcd, hostname, url, settings)
    return Outcome(True, "", await container_registry(ctx, req, hostname))


async def delete_container_registry(ctx: ManagerContext, req: Requester, hostname: str) -> Outcome:
    require_superadmin_write(req)
    found = await registry_store.registry(ctx.etcd, hostname)
    if found is None:
        return Outcome(False, f"no registry {hostname!r}")
    await registry_store.delete(ctx.etcd, hostname)
    return Outcome(True, "", _view(found))


async def registry_for_agent(ctx: ManagerContext, registry: str) -> dict[str, Any] | None:
    """What an agent needs to pull from ``registry`` (URL and credentials), or None for the local
    registry and for registries that are not configured (the agent then pulls anonymously)."""
    if not registry or registry == LOCAL_REGISTRY:
        return None
    try:
        found = await registry_store.registry(ctx.etcd, registry)
    except Exception as exc:  # etcd unreachable: an anonymous pull may still work
        log.warning("cannot read the settings of registry %s: %r", registry, exc)
        return None
    if found is None:
        return None
    return {"name": found.hostname, "url": found.url, "username": found.username, "password": found.password}


# ------------------------------------------------------------------ rescan

def valid_service_ports(raw: str) -> bool:
    """``name:proto:port`` or ``name:proto:[p1,p2]``, comma-separated, as the original checks
    them (``pty`` entries are ignored; other protocols, reserved or duplicate ports refuse):
    :func:`bai.common.service_ports.parse_service_ports`, shared with the agent."""
    try:
        parse_service_ports(raw)
    except ServicePortError as exc:
        log.info("image label refused: %s", exc)
        return False
    return True


def scanned_row(registry: str, image: ScannedImage) -> image_store.ScannedRow | str:
    """The row of a scanned image, or why it is skipped (not a kernel image, bad labels)."""
    ref = f"{registry}/{image.repository}:{image.tag}"
    if LABEL_KERNELSPEC not in image.labels:
        return f"{ref}: no {LABEL_KERNELSPEC} label"
    if not valid_service_ports(image.labels.get(LABEL_SERVICE_PORTS, "")):
        return f"{ref}: invalid {LABEL_SERVICE_PORTS} label"
    resources = {lim["key"]: {"min": lim["min"], "max": None if lim["max"] == "Infinity" else lim["max"]}
                 for lim in resource_limits(image.labels)}
    return image_store.ScannedRow(
        name=ref, architecture=image.architecture, registry=registry, tag=image.tag,
        config_digest=image.config_digest, labels=image.labels, size_bytes=image.size_bytes,
        accelerators=image.labels.get(LABEL_ACCELERATORS) or None, resources=resources)


def _client(s: RegistrySettings) -> RegistryClient:
    return RegistryClient(s.url, username=s.username, password=s.password, ssl_verify=s.ssl_verify)


async def rescan_images(ctx: ManagerContext, req: Requester, registry: str | None) -> Outcome:
    """Start scanning ``registry`` (every configured one when None) in the background; the
    task id is the Outcome's value. A registry that does not answer now fails here at once."""
    require_superadmin_write(req)
    configured = await registry_store.registries(ctx.etcd)
    if registry:
        if registry not in configured:
            return Outcome(False, f"no registry {registry!r} is configured")
        targets = [configured[registry]]
    else:
        targets = list(configured.values())
    if not targets:
        return Outcome(False, "no container registry is configured")
    for s in targets:
        try:
            async with _client(s) as client:
                await client.check()
        except RegistryError as exc:
            return Outcome(False, str(exc))

    async def body(progress: bgtasks.Progress) -> str:
        reports = [await scan_registry(ctx, s, progress) for s in targets]
        return "; ".join(reports)

    task_id = await bgtasks.of(ctx).start(body, owner=req.access_key, name="rescan-images")
    return Outcome(True, "", task_id)


async def scan_registry(ctx: ManagerContext, settings: RegistrySettings, progress: bgtasks.Progress) -> str:
    """Read every tag of the registry, then update its images in one transaction: upsert what
    was found, remove what disappeared. Nothing is written if the listing fails; if some tags
    fail, nothing is removed (they may be there still)."""
    host = settings.hostname
    async with _client(settings) as client:
        repos = await client.repositories()
        if settings.project:
            repos = [r for r in repos if r.split("/", 1)[0] in settings.project]
        refs: list[tuple[str, str]] = []
        for repo in repos:
            refs.extend((repo, tag) for tag in await client.tags(repo))
        await progress.update(total=progress.total + len(refs), message=f"{host}: {len(refs)} tags to read")
        rows: list[image_store.ScannedRow] = []
        skipped: list[str] = []
        failed: list[str] = []
        sem = asyncio.Semaphore(client.limits.concurrency)

        async def read(repo: str, tag: str) -> None:
            async with sem:
                try:
                    images = await client.images(repo, tag)
                except RegistryError as exc:
                    failed.append(f"{repo}:{tag}: {exc}")
                    images = []
            for image in images:
                found = scanned_row(host, image)
                if isinstance(found, str):
                    skipped.append(found)
                else:
                    rows.append(found)
            await progress.update(increment=1, message=f"{host}/{repo}:{tag}")

        await asyncio.gather(*(read(repo, tag) for repo, tag in refs))
    if refs and len(failed) == len(refs):
        raise RegistryError(f"{host}: no tag could be read ({failed[0]})")
    async with ctx.db.begin() as conn:
        added, updated = await image_store.upsert_scanned(conn, rows)
        removed = [] if failed else await image_store.remove_missing(
            conn, host, [(r.name, r.architecture) for r in rows])
    for why in [*skipped, *failed]:
        log.info("rescan %s: skipped %s", host, why)
    report = f"{host}: {added} added, {updated} updated, {len(removed)} removed"
    if skipped:
        report += f", {len(skipped)} skipped (not kernel images or invalid labels)"
    if failed:
        report += f", {len(failed)} unreadable (nothing removed)"
    return report
