"""The agent's pool of host ports (``[container] port-range``) for kernels' service ports.

Allocation is in memory (no Docker or system call on the hot path but one test bind per port):
a port is handed out only if no kernel of ours holds it and nothing else on the host is bound
to it on ``bind-host`` right now. A kernel's ports go back to the pool when it is cleaned up; a
restarted agent rebuilds the pool from its containers' published ports (:meth:`restore`).
"""

from __future__ import annotations

import socket

__all__ = ["NoFreePorts", "PortPool"]


class NoFreePorts(Exception):
    pass


class PortPool:
    def __init__(self, first: int, last: int, bind_host: str = "127.0.0.1") -> None:
        if not 0 < first <= last < 65536:
            raise ValueError(f"bad port range {first}-{last}")
        self.first, self.last = first, last
        self.bind_host = bind_host
        #: kernel id -> the host ports it holds.
        self._held: dict[str, list[int]] = {}
        self._taken: set[int] = set()
        #: Where the next search starts: ports are handed out round-robin, so a port just freed
        #: (whose old connections may linger in TIME_WAIT) is the last to be reused.
        self._next = first

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    @property
    def free(self) -> int:
        return self.size - len(self._taken)

    def held(self, kernel_id: str) -> list[int]:
        return list(self._held.get(kernel_id, ()))

    def _bindable(self, port: int) -> bool:
        """Whether nothing on the host holds ``port`` on our bind host (Docker's proxy would
        fail to start the container otherwise)."""
        family = socket.AF_INET6 if ":" in self.bind_host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((self.bind_host, port))
            except OSError:
                return False
        return True

    def allocate(self, kernel_id: str, count: int) -> list[int]:
        """``count`` free host ports for ``kernel_id`` (added to what it holds already)."""
        if count <= 0:
            return []
        chosen: list[int] = []
        port = self._next
        for _ in range(self.size):
            if port not in self._taken and self._bindable(port):
                chosen.append(port)
                if len(chosen) == count:
                    break
            port = self.first if port >= self.last else port + 1
        if len(chosen) < count:
            raise NoFreePorts(f"no {count} free host ports in {self.first}-{self.last} "
                              f"({self.free} not held by kernels)")
        self._next = self.first if chosen[-1] >= self.last else chosen[-1] + 1
        self._taken.update(chosen)
        self._held.setdefault(kernel_id, []).extend(chosen)
        return chosen

    def restore(self, kernel_id: str, ports: list[int]) -> None:
        """Record ports a kernel already holds (a container found at start-up)."""
        mine = [p for p in ports if self.first <= p <= self.last and p not in self._taken]
        self._taken.update(mine)
        if mine:
            self._held.setdefault(kernel_id, []).extend(mine)

    def release(self, kernel_id: str) -> None:
        for port in self._held.pop(kernel_id, ()):
            self._taken.discard(port)
