"""Circuits: one port of the proxy forwarding to one service of one session, for one user.

A circuit is opened by ``/v2/proxy/auth`` (or reused: the same user, session, service and
protocol get the same circuit back), listens on a port of ``bind-proxy-port-range`` and lives as
long as its session: the session's end (see :mod:`.session_watch`) closes its circuits, their
listeners and every connection they carry, and gives their ports back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bai.common.session_activity import PendingStamps, Throttled

from .config import ProxySection
from .errors import NoPortLeft
from .tokens import ServiceClaims

log = logging.getLogger(__name__)

Protocol_ = Literal["http", "tcp"]


class Listener(Protocol):
    """What serves a circuit's port (HTTP or TCP)."""

    async def close(self) -> None: ...


@dataclass(eq=False)
class Circuit:
    id: uuid.UUID
    app: str
    protocol: Protocol_
    session_id: uuid.UUID
    user_uuid: uuid.UUID
    access_key: str
    kernel_host: str
    kernel_port: int
    port: int
    #: TCP circuits: the addresses that may connect (the one that opened the circuit).
    allowed_client_ips: frozenset[str] = frozenset()
    created_at: float = field(default_factory=time.time)
    #: Websockets and TCP connections in flight, cancelled when the circuit closes.
    active: set[asyncio.Task[object]] = field(default_factory=set)
    #: Plain HTTP requests in flight (ended by the listener's cleanup).
    in_flight: int = 0
    listener: Listener | None = None
    closed: bool = False
    #: Cookie values already verified for this circuit -> until when the check holds.
    permits: dict[str, float] = field(default_factory=dict)
    #: When a request or connection last arrived (time.monotonic()).
    last_used: float = field(default_factory=time.monotonic)
    #: Stamps the session's activity (the manager's idle timeout) on traffic, throttled.
    stamper: Throttled | None = None

    @property
    def cookie_name(self) -> str:
        # Browsers send a host's cookies to all its ports: one name per circuit keeps them apart.
        return f"bai_appproxy_{self.id.hex}"

    def key(self) -> tuple[object, ...]:
        return (self.session_id, self.user_uuid, self.kernel_host, self.kernel_port, self.protocol)

    def note_traffic(self) -> None:
        """A request, message or chunk went through (either way)."""
        if self.stamper is not None:
            self.stamper()

    def track(self, task: asyncio.Task[object]) -> None:
        self.last_used = time.monotonic()
        self.active.add(task)
        task.add_done_callback(self.active.discard)


ListenerFactory = Callable[[Circuit, str, int], Awaitable[Listener]]


class CircuitRegistry:
    """The open circuits, by id, port and what they lead to; allocates ports from the range."""

    def __init__(self, config: ProxySection, listeners: dict[Protocol_, ListenerFactory],
                 activity: PendingStamps | None = None) -> None:
        self.config = config
        self._listeners = listeners
        #: Where circuits stamp their sessions' activity (None: not counted).
        self.activity = activity
        self._by_id: dict[uuid.UUID, Circuit] = {}
        self._by_key: dict[tuple[object, ...], Circuit] = {}
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, circuit_id: uuid.UUID) -> Circuit | None:
        return self._by_id.get(circuit_id)

    def of_session(self, session_id: uuid.UUID) -> list[Circuit]:
        return [c for c in self._by_id.values() if c.session_id == session_id]

    async def open(self, claims: ServiceClaims, app: str, protocol: Protocol_,
                   client_ip: str | None) -> tuple[Circuit, bool]:
        """The circuit for ``claims``' user and service (reused when one is open), and whether it
        was reused."""
        async with self._lock:
            key = (claims.session, claims.user, claims.kernel_host, claims.kernel_port, protocol)
            found = self._by_key.get(key)
            if found is not None and not found.closed:
                found.last_used = time.monotonic()
                if client_ip and protocol == "tcp":
                    found.allowed_client_ips = found.allowed_client_ips | {client_ip}
                return found, True
            circuit = Circuit(id=uuid.uuid4(), app=app, protocol=protocol, session_id=claims.session,
                              user_uuid=claims.user, access_key=claims.access_key,
                              kernel_host=claims.kernel_host, kernel_port=claims.kernel_port, port=0,
                              allowed_client_ips=frozenset({client_ip} if client_ip else ()),
                              stamper=None if self.activity is None else
                              Throttled(functools.partial(self.activity.touch, claims.session)))
            await self._listen(circuit)
            self._by_id[circuit.id] = circuit
            self._by_key[key] = circuit
        log.info("circuit %s: %s %s of session %s on port %d", circuit.id, protocol, app, claims.session,
                 circuit.port)
        return circuit, False

    async def _listen(self, circuit: Circuit) -> None:
        low, high = self.config.bind_proxy_port_range
        taken = {c.port for c in self._by_id.values()}
        for port in range(low, high + 1):
            if port in taken:
                continue
            try:
                circuit.listener = await self._listeners[circuit.protocol](circuit, self.config.bind_host, port)
            except OSError:
                continue  # in use by something else
            circuit.port = port
            return
        raise NoPortLeft(f"all {high - low + 1} circuit ports are in use")

    async def close(self, circuit: Circuit, why: str) -> None:
        """Stop listening, end every request and connection of the circuit, free its port."""
        async with self._lock:
            if circuit.closed:
                return
            circuit.closed = True
            self._by_id.pop(circuit.id, None)
            if self._by_key.get(circuit.key()) is circuit:
                del self._by_key[circuit.key()]
        log.info("circuit %s closed (%s)", circuit.id, why)
        tasks = list(circuit.active)
        for task in tasks:
            task.cancel()
        if circuit.listener is not None:
            with contextlib.suppress(Exception):
                await circuit.listener.close()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close_session(self, session_id: uuid.UUID, why: str) -> int:
        circuits = self.of_session(session_id)
        for circuit in circuits:
            await self.close(circuit, why)
        return len(circuits)

    async def close_service(self, session_id: uuid.UUID, kernel_host: str, kernel_ports: frozenset[int],
                            why: str) -> int:
        """Close the session's circuits to ``kernel_host`` on one of ``kernel_ports`` (a service
        that was stopped)."""
        circuits = [c for c in self.of_session(session_id)
                    if c.kernel_host == kernel_host and c.kernel_port in kernel_ports]
        for circuit in circuits:
            await self.close(circuit, why)
        return len(circuits)

    async def close_all(self, why: str) -> None:
        for circuit in list(self._by_id.values()):
            await self.close(circuit, why)

    async def close_idle(self, idle_for: float) -> int:
        """Close the circuits with nothing in flight and no use for ``idle_for`` seconds."""
        limit = time.monotonic() - idle_for
        idle = [c for c in self._by_id.values() if c.last_used < limit and not c.active and not c.in_flight]
        for circuit in idle:
            await self.close(circuit, "idle")
        return len(idle)


async def sweep_idle_forever(circuits: CircuitRegistry, idle_for: float) -> None:
    """Runs for the life of the proxy: idle circuits are closed (checked every idle_for / 10, at
    most a minute apart)."""
    while True:
        await asyncio.sleep(min(60.0, idle_for / 10))
        try:
            await circuits.close_idle(idle_for)
        except Exception:
            log.exception("idle circuit sweep failed")
