"""Removing a customized image from the agents that hold it, when it is forgotten.

A customized image (a session saved as an image, labelled ``ai.backend.customized-image.owner``)
that no configured registry serves exists only on the agents holding it, and each of their
heartbeats registers every kernel image they hold: deleting its row alone would bring it back,
with a new id, within one heartbeat, and never free their disk. So forgetting one first asks every
ALIVE agent its row lists as a holder (``installed_agents``) to remove it (the ``remove_image``
RPC, all in parallel, each bounded by :data:`REMOVE_TIMEOUT`); the row is dropped only when each
removed it or no longer had it. One that refuses (a container, running or stopped, still uses the
image) or does not answer keeps the row, and the answer names it and why: the owner retries once
the session is gone. Holders that already removed it drop out of the row at their next heartbeat.

Each agent sends a heartbeat right after the removal, under the lock its heartbeats take
(bai.agent.server), so no heartbeat listing the image is handled after that one; the row is
deleted once it lists none of the agents that removed it (at most :data:`SETTLE_TIMEOUT` later),
so a heartbeat still in flight cannot bring it back either. Agents never remove a kernel image
(one without the owner label) on a manager's word, and the manager never asks them to.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from bai.common.agent_rpc import AgentError
from bai.manager.store import images as image_store

from .context import ManagerContext

log = logging.getLogger(__name__)

#: How long one agent may take to remove an image (deleting a big image's layers from its disk).
REMOVE_TIMEOUT = 30.0
#: How long to wait, at most, for the heartbeats that no longer list the image.
SETTLE_TIMEOUT = 10.0
_POLL = 0.05


@dataclass(frozen=True)
class Removal:
    """What asking the holders gave: agent id -> why it did not remove the image, and the
    holders that could not be asked (not ALIVE: they still have their copy)."""

    failures: dict[str, str]
    not_alive: list[str]

    def refusal(self, image: str) -> str:
        """The answer when some holder did not remove it (nothing was forgotten)."""
        whys = "; ".join(f"the agent {agent} could not remove it: {why}" for agent, why in sorted(self.failures.items()))
        return f"{image} was not forgotten ({whys}). Try again once nothing uses it there."

    def caveat(self) -> str:
        """The note for a forgotten image whose not-ALIVE holders keep a copy ("" when none do)."""
        if not self.not_alive:
            return ""
        return (f"the agent{'s' if len(self.not_alive) > 1 else ''} {', '.join(self.not_alive)} "
                "(not ALIVE) could not be asked to remove its copy: it reports the image again when back")


async def remove_from_holders(ctx: ManagerContext, name: str, architecture: str) -> Removal:
    """Ask every ALIVE holder of the image to remove it; wait (bounded) until the row lists none
    of those that did."""
    async with ctx.db.connect() as conn:
        alive, not_alive = await image_store.holders(conn, name, architecture)
    whys = await asyncio.gather(*(_remove_on(ctx, addr, name) for _, addr in alive))
    failures = {agent: why for (agent, _), why in zip(alive, whys, strict=True) if why is not None}
    removed = [agent for (agent, _), why in zip(alive, whys, strict=True) if why is None]
    if removed:
        await _settle(ctx, name, architecture, removed)
    return Removal(failures, not_alive)


async def _remove_on(ctx: ManagerContext, addr: str, canonical: str) -> str | None:
    """None when the agent no longer has the image, else why not."""
    try:
        await ctx.agents.get(addr).remove_image(canonical, request_timeout=REMOVE_TIMEOUT)
    except AgentError as exc:
        return exc.msg or exc.title
    return None


async def _settle(ctx: ManagerContext, name: str, architecture: str, agents: Sequence[str]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(SETTLE_TIMEOUT, ctx.config.manager.heartbeat_timeout)
    while True:
        async with ctx.db.connect() as conn:
            left = await image_store.still_held_by(conn, name, architecture, agents)
        if not left:
            return
        if loop.time() >= deadline:
            # Removed there all the same; at worst a late heartbeat brings back a row no agent holds.
            log.warning("no heartbeat without %s from %s yet; forgetting it anyway", name, ", ".join(sorted(left)))
            return
        await asyncio.sleep(_POLL)
