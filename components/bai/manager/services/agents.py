"""One keep-alive HTTP pool for RPCs to every agent."""

from __future__ import annotations

import aiohttp

from bai.common.agent_rpc import AgentClient


class AgentPool:
    def __init__(self, secret: str, timeout: float = 30.0) -> None:
        self._secret = secret
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[str, AgentClient] = {}

    def get(self, addr: str) -> AgentClient:
        client = self._clients.get(addr)
        if client is None:
            if self._session is None:
                # Many concurrent executes may target one agent: don't let the pool serialise them.
                self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, limit_per_host=0))
            client = self._clients[addr] = AgentClient(addr, self._secret, session=self._session,
                                                       timeout=self._timeout)
        return client

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
