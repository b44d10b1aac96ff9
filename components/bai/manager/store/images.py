"""Images and their aliases: learned from agent heartbeats (local images) and from registry
scans, read by the GraphQL ``image`` / ``images`` queries and by session creation."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from . import tables as t

#: Images built on the node (the kernel image role) live under this registry name; there is
#: nothing to pull them from, and every domain may use them.
LOCAL_REGISTRY = "bai.local"

_i = t.images
_a = t.image_aliases


@dataclass(frozen=True)
class ImageRow:
    name: str
    architecture: str
    registry: str
    labels: dict[str, str]


@dataclass(frozen=True)
class ScannedRow:
    """What a registry scan learned of one image (one architecture of one tag)."""

    name: str  # canonical: <registry>/<repository>:<tag>
    architecture: str
    registry: str
    tag: str
    config_digest: str
    labels: dict[str, str]
    size_bytes: int
    accelerators: str | None
    resources: dict[str, Any]


def split_registry(canonical: str) -> tuple[str, str | None]:
    """``bai.local/stable/python:3.11-debian12`` -> (``bai.local``, ``3.11-debian12``)."""
    first, _, _rest = canonical.partition("/")
    registry = first if ("." in first or ":" in first) and _rest else "index.docker.io"
    _, sep, tag = canonical.rpartition(":")
    return registry, (tag if sep and "/" not in tag else None)


async def upsert_local_images(conn: AsyncConnection, architecture: str, items: list[dict[str, Any]]) -> None:
    for item in items:
        canonical = item.get("canonical")
        if not canonical:
            continue
        registry, tag = split_registry(canonical)
        stmt = insert(t.images).values(
            id=uuid.uuid4(), name=canonical, architecture=architecture, registry=registry, tag=tag,
            config_digest=item.get("digest"), labels=item.get("labels") or {}, is_local=True,
        )
        await conn.execute(stmt.on_conflict_do_update(
            constraint="uq_images_name_architecture",
            set_={"config_digest": stmt.excluded.config_digest, "labels": stmt.excluded.labels},
            where=t.images.c.config_digest.is_distinct_from(stmt.excluded.config_digest),
        ))


async def note_installed(conn: AsyncConnection, agent_id: str, architecture: str, names: Sequence[str],
                         *, settle_seconds: float) -> None:
    """Record that ``agent_id`` has exactly ``names`` (of its architecture) now. Both statements
    match no row (and write nothing) while an agent's image list stays the same, which is every
    heartbeat but the first after a pull or removal.

    A heartbeat lists the agent's images when it is sent, and may be handled after a commit on
    that agent registered a new image (``register_customized``): its list predates the image. So an
    image registered less than ``settle_seconds`` ago (the age of the oldest heartbeat still
    handled) keeps its agent; a later heartbeat settles it."""
    agents = _i.c.installed_agents
    has_agent = agents.has_key(agent_id)  # jsonb `?`: a string element of the array
    await conn.execute(sa.update(_i).where(
        _i.c.architecture == architecture, _i.c.name.in_(list(names)), ~has_agent,
    ).values(installed_agents=agents.op("||", return_type=JSONB)(sa.func.jsonb_build_array(sa.cast(agent_id, sa.Text)))))
    settled = sa.or_(_i.c.registered_at.is_(None),
                     _i.c.registered_at < sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, settle_seconds))
    await conn.execute(sa.update(_i).where(
        _i.c.architecture == architecture, _i.c.name.not_in(list(names)), has_agent, settled,
    ).values(installed_agents=agents.op("-", return_type=JSONB)(sa.cast(agent_id, sa.Text))))


async def labels_of(conn: AsyncConnection, name: str, architecture: str) -> dict[str, str] | None:
    labels: dict[str, str] | None = await conn.scalar(sa.select(t.images.c.labels).where(
        t.images.c.name == name, t.images.c.architecture == architecture))
    return labels


async def resolve(conn: AsyncConnection, ref: str, architecture: str) -> ImageRow | None:
    """By canonical name, or through an alias."""
    alias_target = await conn.scalar(sa.select(t.image_aliases.c.image).where(t.image_aliases.c.alias == ref))
    name = alias_target or ref
    row = (await conn.execute(
        sa.select(t.images.c.name, t.images.c.architecture, t.images.c.registry, t.images.c.labels)
        .where(t.images.c.name == name, t.images.c.architecture == architecture)
    )).first()
    return None if row is None else ImageRow(row.name, row.architecture, row.registry, dict(row.labels))


# ------------------------------------------------------------------ GraphQL reads

def _with_aliases() -> sa.Select[Any]:
    aliases = (sa.select(sa.func.coalesce(sa.func.array_agg(_a.c.alias),
                                          sa.text("'{}'::varchar[]")))
               .where(_a.c.image == _i.c.name).scalar_subquery())
    return sa.select(_i, aliases.label("aliases"))


async def image_rows(conn: AsyncConnection, *, registries: Iterable[str] | None = None) -> list[sa.Row[Any]]:
    """Every image (of ``registries`` only, when given) with its aliases, by name then architecture."""
    q = _with_aliases().order_by(_i.c.name, _i.c.architecture)
    if registries is not None:
        q = q.where(_i.c.registry.in_(list(registries)))
    return list((await conn.execute(q)).all())


async def find(conn: AsyncConnection, reference: str, architecture: str) -> sa.Row[Any] | None:
    """One image by canonical name or alias, with its aliases."""
    target = await conn.scalar(sa.select(_a.c.image).where(_a.c.alias == reference))
    q = _with_aliases().where(_i.c.name == (target or reference), _i.c.architecture == architecture)
    return (await conn.execute(q)).first()


async def by_id(conn: AsyncConnection, image_id: uuid.UUID) -> sa.Row[Any] | None:
    return (await conn.execute(_with_aliases().where(_i.c.id == image_id))).first()


async def alive_agent_ids(conn: AsyncConnection) -> set[str]:
    """Agents whose images count as installed (a LOST agent's do not)."""
    return set((await conn.scalars(sa.select(t.agents.c.id).where(t.agents.c.status == "ALIVE"))).all())


async def alive_agents_holding(conn: AsyncConnection, name: str, architecture: str,
                               scaling_group: str) -> list[tuple[str, bool, Any]]:
    """The ALIVE agents of the resource group and architecture (schedulable or not, as
    ``agents.capacities_in_group``): id, whether the image's row lists it among its holders, and
    its ``compute_plugins``; one query."""
    a = t.agents.c
    holds = sa.func.coalesce(_i.c.installed_agents.has_key(a.id), sa.false())  # jsonb `?`
    q = (sa.select(a.id, holds, a.compute_plugins)
         .select_from(t.agents.outerjoin(_i, sa.and_(_i.c.name == name, _i.c.architecture == architecture)))
         .where(a.status == "ALIVE", a.scaling_group == scaling_group, a.architecture == architecture)
         .order_by(a.id))
    return [(agent_id, bool(held), plugins) for agent_id, held, plugins in await conn.execute(q)]


async def holders(conn: AsyncConnection, name: str, architecture: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The agents the image's row lists as holding it (``installed_agents``): ``(id, RPC address)``
    of the ALIVE ones, and the ids of the others (LOST, gone: they cannot be asked now)."""
    listed = await conn.scalar(sa.select(_i.c.installed_agents).where(_i.c.name == name,
                                                                       _i.c.architecture == architecture))
    ids = sorted({str(a) for a in listed or []})
    if not ids:
        return [], []
    a = t.agents.c
    alive = [(r.id, r.addr) for r in await conn.execute(
        sa.select(a.id, a.addr).where(a.id.in_(ids), a.status == "ALIVE").order_by(a.id))]
    return alive, [i for i in ids if i not in {aid for aid, _ in alive}]


async def still_held_by(conn: AsyncConnection, name: str, architecture: str, agent_ids: Iterable[str]) -> set[str]:
    """Those of ``agent_ids`` the image's row still lists as holders (none when there is no row)."""
    listed = await conn.scalar(sa.select(_i.c.installed_agents).where(_i.c.name == name,
                                                                       _i.c.architecture == architecture))
    return {str(a) for a in listed or []} & set(agent_ids)


async def locality_of(conn: AsyncConnection, refs: Iterable[tuple[str, str]]) -> list[sa.Row[Any]]:
    """Registry and holders (``installed_agents``) of the images ``refs`` ((name, architecture)
    pairs) that have a row, in one query (a scheduling pass asks once for all its sessions)."""
    wanted = sorted(set(refs))
    if not wanted:
        return []
    q: sa.Select[Any] = (sa.select(_i.c.name, _i.c.architecture, _i.c.registry, _i.c.installed_agents)
         .where(sa.tuple_(_i.c.name, _i.c.architecture).in_(wanted)))
    return list((await conn.execute(q)).all())


async def allowed_registries(conn: AsyncConnection, domain_name: str, group_id: uuid.UUID | None = None) -> list[str]:
    """The registries a domain's sessions (in the project ``group_id``, when given) may use
    besides the local one: the domain's ``allowed_docker_registries`` and the project's own
    ``container_registry``."""
    found = await conn.scalar(sa.select(t.domains.c.allowed_docker_registries)
                              .where(t.domains.c.name == domain_name))
    allowed = [str(r) for r in found or []]
    if group_id is not None:
        own = await conn.scalar(sa.select(t.groups.c.container_registry).where(t.groups.c.id == group_id))
        if isinstance(own, dict) and own.get("registry"):
            allowed.append(str(own["registry"]))
    return allowed


# ------------------------------------------------------------------ registry scans and admin writes

async def upsert_scanned(conn: AsyncConnection, rows: Sequence[ScannedRow]) -> tuple[int, int]:
    """Insert or refresh scanned images (they become registry images: ``is_local`` false).
    Returns (added, updated)."""
    added = updated = 0
    for row in rows:
        values = {"config_digest": row.config_digest, "labels": row.labels, "size_bytes": row.size_bytes,
                  "accelerators": row.accelerators, "resources": row.resources, "registry": row.registry,
                  "tag": row.tag, "is_local": False}
        stmt = insert(_i).values(id=uuid.uuid4(), name=row.name, architecture=row.architecture, **values)
        inserted = await conn.scalar(stmt.on_conflict_do_update(
            constraint="uq_images_name_architecture", set_=values,
        ).returning(sa.literal_column("xmax = 0")))
        if inserted:
            added += 1
        else:
            updated += 1
    return added, updated


async def remove_missing(conn: AsyncConnection, registry: str, keep: Iterable[tuple[str, str]]) -> list[str]:
    """Delete the scanned (non-local) images of ``registry`` that are not in ``keep`` ((name,
    architecture) pairs), and the aliases left without a target; the names removed."""
    q = sa.delete(_i).where(_i.c.registry == registry, _i.c.is_local.is_(False))
    kept = list(keep)
    if kept:
        q = q.where(sa.tuple_(_i.c.name, _i.c.architecture).not_in(kept))
    gone = sorted(set((await conn.scalars(q.returning(_i.c.name))).all()))
    await _drop_orphan_aliases(conn, gone)
    return gone


async def _drop_orphan_aliases(conn: AsyncConnection, names: Sequence[str]) -> None:
    if names:
        remaining = sa.select(_i.c.name).where(_i.c.name.in_(list(names)))
        await conn.execute(sa.delete(_a).where(_a.c.image.in_(list(names)), _a.c.image.not_in(remaining)))


async def add_alias(conn: AsyncConnection, alias: str, image_name: str) -> bool:
    """False when the alias exists already (it is left as it is)."""
    stmt = insert(_a).values(alias=alias, image=image_name).on_conflict_do_nothing(index_elements=[_a.c.alias])
    return bool((await conn.execute(stmt)).rowcount)


async def remove_alias(conn: AsyncConnection, alias: str) -> bool:
    return bool((await conn.execute(sa.delete(_a).where(_a.c.alias == alias))).rowcount)


async def forget(conn: AsyncConnection, name: str, architecture: str) -> bool:
    """Delete one image row (the registry keeps its copy; services/image_removal removes a
    customized image from the agents first); its aliases go with the image's last architecture."""
    res = await conn.execute(sa.delete(_i).where(_i.c.name == name, _i.c.architecture == architecture))
    await _drop_orphan_aliases(conn, [name])
    return bool(res.rowcount)


# ------------------------------------------------------------------ customized images (imagify)

#: ``user:<uuid>``: whose image a session's commit made (only its owner sees and uses it).
CUSTOMIZED_OWNER = "ai.backend.customized-image.owner"


async def customized_of(conn: AsyncConnection, owner: str) -> list[sa.Row[Any]]:
    """The images whose owner label is ``owner`` (``user:<uuid>``): name, architecture, labels."""
    q: sa.Select[Any] = (sa.select(_i.c.name, _i.c.architecture, _i.c.labels)
         .where(_i.c.labels[CUSTOMIZED_OWNER].astext == owner).order_by(_i.c.name))
    return list((await conn.execute(q)).all())


async def customized_image_limit(conn: AsyncConnection, user_uuid: uuid.UUID) -> int | None:
    """``max_customized_image_count`` of the user's resource policy (None: no such user)."""
    u, p = t.users.c, t.user_resource_policies.c
    found: int | None = await conn.scalar(
        sa.select(p.max_customized_image_count)
        .select_from(t.users.join(t.user_resource_policies, u.resource_policy == p.name))
        .where(u.uuid == user_uuid))
    return found


async def register_customized(conn: AsyncConnection, name: str, architecture: str, digest: str,
                              labels: dict[str, str], agent_id: str | None) -> None:
    """Record an image an agent has just committed, as held by that agent (its heartbeats
    agree); a commit to the same name replaces what the row said of the previous one."""
    registry, tag = split_registry(name)
    holders = [agent_id] if agent_id else []
    local = registry == LOCAL_REGISTRY  # else pushed: other agents pull it from there
    stmt = insert(_i).values(id=uuid.uuid4(), name=name, architecture=architecture, registry=registry, tag=tag,
                             config_digest=digest, labels=labels, is_local=local, installed_agents=holders,
                             registered_at=sa.func.now())
    await conn.execute(stmt.on_conflict_do_update(
        constraint="uq_images_name_architecture",
        set_={"config_digest": digest, "labels": labels, "is_local": local, "installed_agents": holders,
              "registered_at": sa.func.now()},
    ))


async def project_registry(conn: AsyncConnection, group_id: uuid.UUID) -> tuple[str, str] | None:
    """The project's own registry and project there (``groups.container_registry``), if set."""
    found = await conn.scalar(sa.select(t.groups.c.container_registry).where(t.groups.c.id == group_id))
    if isinstance(found, dict) and found.get("registry") and found.get("project"):
        return str(found["registry"]), str(found["project"])
    return None
