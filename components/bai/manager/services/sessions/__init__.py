"""Sessions, one module per concern, each with an explicit public interface:

- :mod:`.creation`: validate, enqueue and wait for a new session;
- :mod:`.lookup`: owner resolution, finding one session, describing it;
- :mod:`.termination`: destroy, and closing/cancelling with the final-status events (also used by
  the lifecycle handler, the scheduler and the stuck-session sweep);
- :mod:`.execution`: route to the main kernel, execute, logs;
- :mod:`.batch`: a batch session's result (it ends by itself), and restart;
- :mod:`.queries`: counting executes off the hot path;
- :mod:`.payloads`: the ``session_*``/``kernel_*`` broadcast arguments;
- :mod:`.visibility`: who may see a session's events;
- :mod:`.services`: starting a session's service port (start-service, the app proxy).

:class:`SessionService` is what the api holds: one method per endpoint, each one call.
"""

from __future__ import annotations

import uuid
from typing import Any

from bai.manager.store.keypairs import Requester

from ..context import ManagerContext
from ..schemas import CreateSession
from . import batch, creation, execution, lookup, services, termination

__all__ = ["SessionService"]


class SessionService:
    def __init__(self, ctx: ManagerContext) -> None:
        self.ctx = ctx

    async def create(self, requester: Requester, req: CreateSession) -> dict[str, Any]:
        return await creation.create(self.ctx, requester, req)

    async def info(self, requester: Requester, ref: str, owner_access_key: str | None) -> dict[str, Any]:
        return await lookup.describe(self.ctx, requester, ref, owner_access_key)

    async def destroy(self, requester: Requester, ref: str, *, forced: bool,
                      owner_access_key: str | None) -> dict[str, Any]:
        return await termination.destroy(self.ctx, requester, ref, forced=forced, owner_access_key=owner_access_key)

    async def route(self, requester: Requester, ref: str) -> Any:
        return await execution.route(self.ctx, requester, ref)

    async def execute(self, route: Any, *, mode: str, run_id: str | None, code: str,
                      opts: dict[str, Any] | None, flush_timeout: float) -> dict[str, Any]:
        return await execution.execute(self.ctx, route, mode=mode, run_id=run_id, code=code, opts=opts,
                                       flush_timeout=flush_timeout)

    async def logs(self, requester: Requester, ref: str, owner_access_key: str | None = None) -> str:
        return await execution.logs(self.ctx, requester, ref, owner_access_key)

    async def task_logs(self, requester: Requester, task_id: uuid.UUID) -> str:
        return await execution.task_logs(self.ctx, requester, task_id)

    async def count_query(self, session_id: uuid.UUID) -> None:
        execution.count_query(self.ctx, session_id)

    async def restart(self, requester: Requester, ref: str, owner_access_key: str | None) -> None:
        await batch.restart(self.ctx, requester, ref, owner_access_key)

    async def start_service(self, requester: Requester, ref: str, app: str, *, port: int | None = None,
                            envs: Any = None, arguments: Any = None,
                            owner_access_key: str | None = None) -> dict[str, Any]:
        return await services.start_service(self.ctx, requester, ref, app, port=port, envs=envs,
                                            arguments=arguments, owner_access_key=owner_access_key)
