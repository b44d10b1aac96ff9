"""Which pending session a pass tries next, per resource group's ``scaling_groups.scheduler``:

- ``fifo`` (the original's heuristic FIFO): oldest first; with ``num_retries_to_skip`` N > 0 a
  session that has already failed N times goes behind those that have not, so one unplaceable
  session does not keep taking the first look;
- ``lifo``: newest first;
- ``drf``: dominant resource fairness: the oldest session of the keypair whose dominant share of
  the group's capacity is smallest; shares grow as the pass schedules sessions;
- ``mof``: oldest first (its agent choice differs: see selectors).

Every pending session is tried once per pass, in this order: a session that does not fit does
not stop later ones (the original's dispatcher does the same)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from decimal import Decimal

from bai.common.types import ResourceSlots

from .model import PendingSession, add_slots

SCHEDULERS = ("fifo", "lifo", "drf", "mof")


class SessionQueue:
    """A pass's order over one group's pending sessions (``created_at`` order given)."""

    def __init__(self, sessions: Iterable[PendingSession]) -> None:
        self._left = list(sessions)

    def __bool__(self) -> bool:
        return bool(self._left)

    def next(self) -> PendingSession:
        return self._left.pop(0)

    def scheduled(self, sess: PendingSession) -> None:
        """``sess`` got an agent (DRF updates its shares)."""


class FifoQueue(SessionQueue):
    def __init__(self, sessions: Iterable[PendingSession], num_retries_to_skip: int = 0) -> None:
        ordered = list(sessions)
        if num_retries_to_skip > 0:
            ordered = ([s for s in ordered if s.retries < num_retries_to_skip]
                       + [s for s in ordered if s.retries >= num_retries_to_skip])
        super().__init__(ordered)


class LifoQueue(SessionQueue):
    def __init__(self, sessions: Iterable[PendingSession]) -> None:
        super().__init__(reversed(list(sessions)))


class DrfQueue(SessionQueue):
    """Sessions queue per keypair (oldest first) and each keypair's share is kept up to date
    as the pass schedules, so a pick looks at one head per keypair, not at every session."""

    def __init__(self, sessions: Iterable[PendingSession], capacity: ResourceSlots,
                 occupancy_by_keypair: dict[str, ResourceSlots]) -> None:
        super().__init__(())
        self._capacity = capacity
        self._usage = {k: dict(v) for k, v in occupancy_by_keypair.items()}
        #: keypair -> its sessions with their position in the pass's order (ties go to the oldest)
        self._queues: dict[str, deque[tuple[int, PendingSession]]] = {}
        for pos, sess in enumerate(sessions):
            self._queues.setdefault(sess.access_key, deque()).append((pos, sess))
        self._shares = {key: self._share(key) for key in self._queues}

    def __bool__(self) -> bool:
        return bool(self._queues)

    def _share(self, access_key: str) -> Decimal:
        usage = self._usage.get(access_key, {})
        shares = [amount / self._capacity[slot] for slot, amount in usage.items()
                  if self._capacity.get(slot, Decimal(0)) > 0]
        return max(shares, default=Decimal(0))

    def next(self) -> PendingSession:
        key = min(self._queues, key=lambda k: (self._shares[k], self._queues[k][0][0]))
        queue = self._queues[key]
        _, sess = queue.popleft()
        if not queue:
            del self._queues[key]
        return sess

    def scheduled(self, sess: PendingSession) -> None:
        add_slots(self._usage.setdefault(sess.access_key, {}), sess.requested)
        self._shares[sess.access_key] = self._share(sess.access_key)


def make_queue(scheduler: str, sessions: list[PendingSession], *, num_retries_to_skip: int,
               capacity: ResourceSlots, occupancy_by_keypair: dict[str, ResourceSlots]) -> SessionQueue:
    if scheduler == "lifo":
        return LifoQueue(sessions)
    if scheduler == "drf":
        return DrfQueue(sessions, capacity, occupancy_by_keypair)
    if scheduler == "mof":
        return SessionQueue(sessions)
    return FifoQueue(sessions, num_retries_to_skip)
