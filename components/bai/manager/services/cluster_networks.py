"""Overlay networks of multi-node sessions whose kernels are on several hosts.

Kernels on different hosts reach each other by hostname only over a Docker swarm overlay: when
etcd ``config/network/overlay/enabled`` is ``true`` (the ``overlay`` role writes it on the swarm
manager host, where the manager runs), the manager creates ``bai-multinode-<session id>``
(overlay, attachable, labelled ``ai.backend.cluster-network=1``, MTU from etcd
``config/network/overlay/mtu``, 1500 by default) through the local Docker engine before the
kernels are created, names it in ``cluster_info.network_name``, and removes it when the session
ends. Without the overlay the scheduler keeps a multi-node session on one host
(services/scheduler.py); the agents then connect its kernels with a local bridge.

Only a swarm MANAGER engine can create an overlay, and the manager that schedules a session
prepares it. So a manager schedules sessions across hosts only when its local engine is a swarm
manager (:meth:`ClusterNetworks.usable`, asked only while a multi-node session waits, cached a
few seconds); one that is not (a manager host without Docker, or a swarm worker) keeps such
sessions on one host or leaves them PENDING, saying why, for a manager that can (with several
managers, whichever takes the scheduler lock next). The ``overlay`` role makes every
manager-group host a swarm manager.

Least privilege: the manager opens the Docker socket (``DOCKER_HOST`` or
``/var/run/docker.sock``) only when the overlay is enabled and a session needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiodocker
from aiodocker.exceptions import DockerError

from bai.common.etcd import EtcdStore
from bai.common.tasks import raise_if_cancelling

log = logging.getLogger(__name__)

OVERLAY_ENABLED_KEY = "config/network/overlay/enabled"
OVERLAY_MTU_KEY = "config/network/overlay/mtu"
DEFAULT_MTU = 1500
LABEL_CLUSTER_NETWORK = "ai.backend.cluster-network"
LABEL_SESSION_ID = "ai.backend.session-id"
OVERLAY_PREFIX = "bai-multinode-"
#: How long etcd's overlay settings are reused (the scheduler asks on every pass with a multi-node session).
CONFIG_TTL = 10.0
#: How long a removal keeps trying while agents still detach their kernels (swarm gossip lags).
REMOVE_DEADLINE = 60.0
#: Seconds one Docker call may take.
DOCKER_TIMEOUT = 20.0
#: Seconds the scheduler waits for the engine's swarm state (it holds the scheduler lock).
INFO_TIMEOUT = 5.0
#: How often a manager looks for overlays of ended sessions (one Docker call when enabled).
LEFTOVER_SWEEP_SECONDS = 300.0


def overlay_name(session_id: uuid.UUID | str) -> str:
    return f"{OVERLAY_PREFIX}{session_id}"


def host_of(agent_addr: str) -> str:
    """The host part of an agent's RPC address: agents with the same one share a Docker engine
    (several agents on one machine), so their kernels can share a local bridge."""
    try:
        return urlsplit(agent_addr).hostname or agent_addr
    except ValueError:
        return agent_addr


def spans_hosts(agent_addrs: list[str]) -> bool:
    return len({host_of(a) for a in agent_addrs}) > 1


@dataclass(frozen=True)
class OverlayConfig:
    enabled: bool = False
    mtu: int = DEFAULT_MTU


class OverlayUnavailable(RuntimeError):
    """The overlay network of a session could not be created (the message says why)."""


def _truthy(raw: str | None) -> bool:
    return (raw or "").strip().lower() in ("1", "true", "yes", "on")


class ClusterNetworks:
    def __init__(self, etcd: EtcdStore, docker_factory: Callable[[], aiodocker.Docker] = aiodocker.Docker,
                 manager_id: str = "") -> None:
        self._etcd = etcd
        self._docker_factory = docker_factory
        self._manager_id = manager_id
        self._config: tuple[float, OverlayConfig] | None = None
        #: (when asked, None or why the local engine cannot create overlays)
        self._engine_problem: tuple[float, str | None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def usable(self) -> bool:
        """Whether this manager can give a session across hosts its overlay: enabled in etcd and
        the local Docker engine is a swarm manager. When not, :meth:`needs` says why."""
        if not (await self.overlay()).enabled:
            return False
        return await self.engine_problem() is None

    async def engine_problem(self) -> str | None:
        """None when the local Docker engine is a swarm manager; else why it cannot create
        overlays (cached like the etcd settings)."""
        now = time.monotonic()
        if self._engine_problem is None or now - self._engine_problem[0] > CONFIG_TTL:
            problem: str | None = None
            try:
                async with asyncio.timeout(INFO_TIMEOUT), self._engine() as docker:
                    info = await docker.system.info()
                swarm = info.get("Swarm") or {}
                if swarm.get("LocalNodeState") != "active":
                    problem = "its Docker engine is in no swarm"
                elif not swarm.get("ControlAvailable"):
                    problem = "its Docker engine is a swarm worker, not a manager"
            except (DockerError, OSError, TimeoutError, ValueError) as exc:
                # DockerError 900: no engine behind the socket; ValueError: aiodocker finds no
                # Docker socket at all (a host without Docker)
                problem = f"it reaches no Docker engine ({exc})"
            if problem is not None:
                log.info("this manager cannot create overlay networks: %s", problem)
            self._engine_problem = (now, problem)
        return self._engine_problem[1]

    def needs(self) -> str:
        """Why a multi-node session across hosts cannot be placed by this manager now (after
        :meth:`usable` said False): "needs the overlay network ..."."""
        config = self._config[1] if self._config else OverlayConfig()
        problem = self._engine_problem[1] if self._engine_problem else None
        if not config.enabled or problem is None:
            return f"needs the overlay network (etcd {OVERLAY_ENABLED_KEY})"
        me = f" ({self._manager_id})" if self._manager_id else ""
        return (f"needs the overlay network, which this manager{me} cannot create: {problem}; a manager "
                "whose Docker engine is a swarm manager places it")

    async def overlay(self) -> OverlayConfig:
        now = time.monotonic()
        if self._config is None or now - self._config[0] > CONFIG_TTL:
            enabled = _truthy(await self._etcd.get(OVERLAY_ENABLED_KEY))
            raw_mtu = await self._etcd.get(OVERLAY_MTU_KEY)
            mtu = DEFAULT_MTU
            if raw_mtu:
                try:
                    mtu = int(raw_mtu)
                except ValueError:
                    mtu = 0
                if not 576 <= mtu <= 9000:  # what an Ethernet overlay can carry at all
                    log.warning("ignoring %s = %r (not an MTU between 576 and 9000)", OVERLAY_MTU_KEY, raw_mtu)
                    mtu = DEFAULT_MTU
            self._config = (now, OverlayConfig(enabled, mtu))
        return self._config[1]

    @contextlib.asynccontextmanager
    async def _engine(self) -> AsyncIterator[aiodocker.Docker]:
        """A Docker connection for one operation (they are rare: a few per multi-node session),
        so the manager holds no Docker connection between them."""
        docker = self._docker_factory()
        try:
            yield docker
        finally:
            await docker.close()

    async def create(self, session_id: uuid.UUID) -> str:
        """The session's overlay, made now (an existing one of that name is reused: a prepare
        that ran again)."""
        config = await self.overlay()
        name = overlay_name(session_id)
        try:
            async with asyncio.timeout(DOCKER_TIMEOUT), self._engine() as docker:
                await docker.networks.create({
                    "Name": name, "Driver": "overlay", "Attachable": True, "CheckDuplicate": True,
                    "Labels": {LABEL_CLUSTER_NETWORK: "1", LABEL_SESSION_ID: str(session_id)},
                    "Options": {"com.docker.network.driver.mtu": str(config.mtu)},
                })
        except DockerError as exc:
            if exc.status == 409:
                return name
            hint = " (is this manager's Docker engine a swarm manager?)" if exc.status in (500, 503) else ""
            raise OverlayUnavailable(f"cannot create the overlay network {name}: {exc.message}{hint}") from exc
        except (OSError, TimeoutError) as exc:
            raise OverlayUnavailable(f"cannot create the overlay network {name}: Docker does not answer "
                                     f"({exc!r})") from exc
        log.info("session %s: created overlay network %s (mtu %d)", session_id, name, config.mtu)
        return name

    async def remove(self, session_id: uuid.UUID, deadline: float = REMOVE_DEADLINE) -> bool:
        """Remove the session's overlay, trying again while kernels still hold endpoints on it.
        True when it is gone."""
        name = overlay_name(session_id)
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        delay = 0.2
        while True:
            try:
                async with asyncio.timeout(DOCKER_TIMEOUT), self._engine() as docker:
                    await (await docker.networks.get(name)).delete()
                log.info("session %s: removed overlay network %s", session_id, name)
                return True
            except DockerError as exc:
                if exc.status == 404:
                    return True
                problem: Any = exc.message
            except (OSError, TimeoutError) as exc:
                problem = repr(exc)
            if loop.time() + delay > end:
                log.warning("session %s: overlay network %s stays: %s", session_id, name, problem)
                return False
            await asyncio.sleep(delay)  # endpoints of removed containers leave shortly
            delay = min(delay * 2, 5.0)

    def remove_later(self, session_id: uuid.UUID) -> None:
        """Remove it in the background (session endings must not wait for the swarm)."""
        task = asyncio.create_task(self._remove_logged(session_id), name=f"overlay-remove-{session_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _remove_logged(self, session_id: uuid.UUID) -> None:
        try:
            problem = await self.engine_problem()
            if problem is not None:  # a swarm manager's sweep removes it (remove_leftovers)
                log.info("session %s: its overlay network is left to a manager that can remove it "
                         "(this one cannot: %s)", session_id, problem)
                return
            await self.remove(session_id)
        except Exception:
            raise_if_cancelling()
            log.exception("removing the overlay network of session %s", session_id)

    async def remove_leftovers(self, is_live: Callable[[list[uuid.UUID]], Awaitable[set[uuid.UUID]]]) -> list[str]:
        """Remove the overlays of sessions that are not live any more (a manager that stopped
        before their removal, or that ended on a manager whose engine cannot remove them). Only
        when the overlay is enabled (otherwise Docker is not ours) and this engine can."""
        if not (await self.overlay()).enabled or await self.engine_problem() is not None:
            return []
        async with asyncio.timeout(DOCKER_TIMEOUT), self._engine() as docker:
            nets = await docker.networks.list(filters={"label": [f"{LABEL_CLUSTER_NETWORK}=1"]})
        by_session: dict[uuid.UUID, str] = {}
        for net in nets:
            name = str(net.get("Name") or "")
            if name.startswith(OVERLAY_PREFIX):
                try:
                    by_session[uuid.UUID(name[len(OVERLAY_PREFIX):])] = name
                except ValueError:
                    continue
        live = await is_live(list(by_session))
        gone = [sid for sid in by_session if sid not in live]
        for sid in gone:
            await self.remove(sid, deadline=0)
        return [by_session[sid] for sid in gone]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def of(ctx: Any) -> ClusterNetworks:
    """The manager's one ClusterNetworks (in ``ctx.extra``), made on first use."""
    networks = ctx.extra.get("cluster_networks")
    if networks is None:
        networks = ctx.extra["cluster_networks"] = ClusterNetworks(ctx.etcd, manager_id=ctx.config.manager.id)
    assert isinstance(networks, ClusterNetworks)
    return networks
