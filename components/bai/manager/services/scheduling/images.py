"""Image locality: where a session's image can run.

An image an agent lacks is pulled from its registry when it starts a kernel; an image that no
configured registry serves -- a kernel image built or loaded on one agent host (the local
registry), a session saved with ``convert-to-image`` when its project has no registry, an image
whose registry was deleted -- exists only on the agents that hold it (``images.installed_agents``,
from their heartbeats). Sessions of such an image are placed only on those agents: refused at
create when no ALIVE agent of the resource group holds it, PENDING with a reason while none of
the holders has room. The rule lives here, once; the create-time check and the scheduler's pass
both use it."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from bai.common.etcd import EtcdError, EtcdStore
from bai.manager import errors
from bai.manager.store import images as image_store
from bai.manager.store import registries as registry_store

log = logging.getLogger(__name__)

LOCAL_REGISTRY = image_store.LOCAL_REGISTRY


def pullable(registry: str, configured: Collection[str]) -> bool:
    """Whether an agent that lacks an image of ``registry`` can get it: the registry is
    configured (etcd ``config/docker/registry/<host>``, listed in ``configured``) and is not the
    local registry (``bai.local``: images built on an agent host, which nothing serves). Any
    other image exists only on the agents that hold it."""
    return bool(registry) and registry != LOCAL_REGISTRY and registry in configured


def runs_without_images(compute_plugins: Any) -> bool:
    """An agent of the dummy backend (``compute_plugins.dummy``, bai/agent/dummy.py) starts no
    container, so it lacks no image: it takes sessions of any image (scheduler tests, benches)."""
    return isinstance(compute_plugins, dict) and "dummy" in compute_plugins


def not_held_message(image: str, scaling_group: str) -> str:
    """The PENDING reason (``status_data.scheduler.msg``) while no holder of the image has room."""
    return (f"The image {image} is held by no agent with free slots in resource group {scaling_group} "
            "(no configured registry serves it: only the agents that hold it can run the session)")


async def configured_among(etcd: EtcdStore, registries: Iterable[str]) -> set[str]:
    """Those of ``registries`` configured in etcd now; all of them when etcd cannot say (logged):
    agents then try to pull them, as they did before this rule."""
    wanted = {r for r in registries if r and r != LOCAL_REGISTRY}
    if not wanted:
        return set()  # nothing to look up
    try:
        return wanted & set(await registry_store.registries(etcd))
    except EtcdError as exc:
        log.warning("cannot read the configured registries (%s): images of %s count as pullable",
                    exc, ", ".join(sorted(wanted)))
        return wanted


async def is_pullable(etcd: EtcdStore, registry: str) -> bool:
    """:func:`pullable` for one image at create (the registries read from etcd now)."""
    return pullable(registry, await configured_among(etcd, [registry]))


async def check_at_create(etcd: EtcdStore, conn: AsyncConnection, image: str, registry: str,
                          scaling_group: str, architecture: str, assigned: Sequence[str] | None
                          ) -> frozenset[str] | None:
    """Refuse (400, naming the image) a session of an image agents cannot pull when no ALIVE
    agent of the resource group holds it, or when an agent assigned to it (agentList) does not.
    With no ALIVE agent in the group at all the session may wait for one (as with capacity:
    admission.check_capacity). The ALIVE agents that may take it (None: any agent), for the
    capacity check."""
    if await is_pullable(etcd, registry):
        return None
    agents = await image_store.alive_agents_holding(conn, image, architecture, scaling_group)
    if not agents:
        return None
    holders = {agent_id for agent_id, holds, plugins in agents if holds or runs_without_images(plugins)}
    why = "no configured registry serves it, so agents that lack it cannot pull it"
    if assigned:
        lacking = [aid for aid in dict.fromkeys(assigned) if aid not in holders]
        if lacking:
            problem = (f"The assigned agent{'s' if len(lacking) > 1 else ''} {', '.join(lacking)} "
                       f"{'do' if len(lacking) > 1 else 'does'} not hold the image {image} ({why})")
            raise errors.InvalidAPIParameters(problem, {"config.agentList": problem})
    elif not holders:
        raise errors.InvalidAPIParameters(
            f"No ALIVE agent of resource group {scaling_group!r} holds the image {image} ({why}).")
    return frozenset(holders)


__all__ = ["check_at_create", "configured_among", "is_pullable", "not_held_message", "pullable", "runs_without_images"]
