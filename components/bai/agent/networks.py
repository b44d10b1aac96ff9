"""Cluster networks: how the kernels of one session reach each other by hostname.

A session of one kernel uses Docker's default bridge as always (nothing here runs for it: no
cost on the creation hot path). A session of several kernels gets a network where every kernel
is attached with its cluster hostname (``main1``, ``sub1``, ...) as a DNS alias:

* kernels that are all on this Docker engine (single-node sessions, and multi-node sessions the
  manager kept on one host): a bridge ``bai-singlenode-<session id>`` that this agent creates on
  the first kernel and removes with the last one (egress works as on the default bridge; other
  sessions' kernels are not on it);
* multi-node sessions across hosts: the swarm overlay ``bai-multinode-<session id>`` the manager
  created and named in ``cluster_info.network_name``; the agent only attaches to it.

Bridges left behind by an agent that died are removed when it starts again
(:meth:`SessionNetworks.remove_orphans`). Several agents may share one engine (tests, dense
hosts): a bridge in use by another agent's containers cannot be removed (Docker refuses), which
is what keeps it alive for them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

log = logging.getLogger(__name__)

#: Every cluster network carries it (the original's label), with the session and the creator.
LABEL_CLUSTER_NETWORK = "ai.backend.cluster-network"
LABEL_SESSION_ID = "ai.backend.session-id"
LABEL_OWNER = "ai.backend.owner"
LOCAL_PREFIX = "bai-singlenode-"
OVERLAY_PREFIX = "bai-multinode-"


class NetworkRefused(ValueError):
    """``cluster_info`` names a network this session may not join."""


def local_network_name(session_id: str) -> str:
    return f"{LOCAL_PREFIX}{session_id}"


def overlay_network_name(session_id: str) -> str:
    return f"{OVERLAY_PREFIX}{session_id}"


def network_for(session_id: str, cluster_info: dict[str, Any], kernels_in_session: int) -> tuple[str, bool] | None:
    """The network the session's kernels join here and whether this agent manages it (a local
    bridge) -- or None: a lone kernel stays on the default bridge. Only the session's own overlay
    may be named: a kernel is never put on another network (``host``, another session's)."""
    named = cluster_info.get("network_name")
    if named:
        if named != overlay_network_name(session_id):
            raise NetworkRefused(f"network {str(named)[:80]!r} is not this session's cluster network")
        return named, False
    size = cluster_info.get("size")
    size = size if isinstance(size, int) and not isinstance(size, bool) else kernels_in_session
    if max(size, kernels_in_session) <= 1:
        return None
    return local_network_name(session_id), True


def attach(body: dict[str, Any], network: str, hostname: str) -> None:
    """Put a create-container body on ``network`` only, reachable there as ``hostname``."""
    body.setdefault("HostConfig", {})["NetworkMode"] = network
    body["NetworkingConfig"] = {"EndpointsConfig": {network: {"Aliases": [hostname]}}}


class SessionNetworks:
    """This agent's per-session bridges: made once however many kernels start at once, removed
    when the session has no kernel here any more."""

    def __init__(self, docker: aiodocker.Docker, owner: str) -> None:
        self.docker = docker
        self.owner = owner
        self._locks: dict[str, asyncio.Lock] = {}
        #: bridge name -> the id of the one its kernels join
        self._ready: dict[str, str] = {}

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def ensure(self, session_id: str) -> str:
        """The id of the session's bridge (made now if it is not there)."""
        name = local_network_name(session_id)
        if (net_id := self._ready.get(name)) is not None:
            return net_id
        async with self._lock(name):
            if (net_id := self._ready.get(name)) is not None:
                return net_id
            mine = None
            try:
                mine = (await self.docker.networks.create({
                    "Name": name, "Driver": "bridge", "CheckDuplicate": True, "Internal": False,
                    "Labels": {LABEL_CLUSTER_NETWORK: "1", LABEL_SESSION_ID: session_id, LABEL_OWNER: self.owner},
                })).id
                log.info("session %s: created cluster network %s", session_id, name)
            except DockerError as exc:
                if exc.status != 409:  # 409: it exists (another agent on this engine, or left over)
                    raise
            # Two agents on one engine creating it at once may both succeed (Docker's duplicate
            # check is not atomic): every agent joins the oldest, and a later twin is removed.
            same = sorted((str(n.get("Created") or ""), str(n["Id"])) for n in await self._named(name))
            if not same:
                raise RuntimeError(f"cluster network {name} vanished as it was made")
            net_id = same[0][1]
            if mine is not None and mine != net_id:
                await self._delete(mine, name)
            self._ready[name] = net_id
            return net_id

    async def _named(self, name: str) -> list[dict[str, Any]]:
        # (Docker's name filter matches substrings)
        return [n for n in await self.docker.networks.list(filters={"name": [name]}) if n.get("Name") == name]

    async def release(self, session_id: str, still_used: Callable[[], bool]) -> None:
        """Remove the session's bridge unless ``still_used()`` (a kernel of the session is still
        here); a bridge other containers still use stays (Docker refuses, and we let it)."""
        name = local_network_name(session_id)
        async with self._lock(name):
            if still_used():
                return
            self._ready.pop(name, None)
            await self._remove(name)
        # (creates of one session arrive together, never while its last kernel is going)
        self._locks.pop(name, None)

    async def _remove(self, name: str) -> None:
        for net in await self._named(name):
            await self._delete(str(net["Id"]), name)

    async def _delete(self, net_id: str, name: str) -> None:
        try:
            await aiodocker.networks.DockerNetwork(self.docker, net_id).delete()
            log.info("removed cluster network %s", name)
        except DockerError as exc:
            if exc.status == 404:
                return
            # 403/409: containers (another agent's, or one being removed) still use it
            log.info("cluster network %s stays: %s", name, exc.message)

    async def remove_orphans(self, live_sessions: Collection[str]) -> list[str]:
        """Remove the bridges this agent made for sessions it has no kernel of (it died or was
        stopped before their last kernel went). Returns the names it tried."""
        tried = []
        labels_wanted = [f"{LABEL_CLUSTER_NETWORK}=1", f"{LABEL_OWNER}={self.owner}"]
        for net in await self.docker.networks.list(filters={"label": labels_wanted}):
            labels = net.get("Labels") or {}
            name = str(net.get("Name") or "")
            if not name.startswith(LOCAL_PREFIX) or labels.get(LABEL_SESSION_ID) in live_sessions:
                continue
            tried.append(name)
            await self._remove(name)
        return tried
