"""One keep-alive HTTP pool for RPCs to every agent, and a note of agents found unreachable.

Beside the RPC client it pools (HTTP stays out of the manager's services and store layers)."""

from __future__ import annotations

import aiohttp

from bai.common.agent_rpc import AgentClient, agent_connector


class AgentPool:
    """``timeout`` is the base RPC deadline; ``destroy_kernel`` (which waits for the container to
    stop and be removed) gets twice as long, ``ping``/``list_kernels`` a fraction of it."""

    def __init__(self, secret: str, timeout: float = 30.0, connect_timeout: float = 5.0) -> None:
        self._secret = secret
        self._timeouts = {
            "ping": min(5.0, timeout), "list_kernels": min(10.0, timeout), "interrupt_kernel": min(10.0, timeout),
            "create_kernels": timeout, "execute": timeout, "get_logs": timeout, "destroy_kernel": timeout * 2,
        }
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[str, AgentClient] = {}
        #: Base URLs of agents an RPC could not reach since their last reconciliation: whatever
        #: we asked of them meanwhile (a destroy, typically) may not have happened.
        self.unreachable: set[str] = set()

    def get(self, addr: str) -> AgentClient:
        client = self._clients.get(addr)
        if client is None:
            if self._session is None:
                # Many concurrent executes may target one agent: don't let the pool serialise them.
                self._session = aiohttp.ClientSession(connector=agent_connector(limit=0, limit_per_host=0))
            client = self._clients[addr] = AgentClient(
                addr, self._secret, session=self._session, timeouts=self._timeouts,
                connect_timeout=self._connect_timeout, on_unreachable=self.unreachable.add)
        return client

    def needs_reconciliation(self, addr: str) -> bool:
        base = (addr if "://" in addr else f"http://{addr}").rstrip("/")
        return base in self.unreachable

    def reconciled(self, addr: str) -> None:
        self.unreachable.discard((addr if "://" in addr else f"http://{addr}").rstrip("/"))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
