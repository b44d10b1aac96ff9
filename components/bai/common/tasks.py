"""Background-task hygiene shared by the daemons.

Some client libraries (redis-py's asyncio client, notably) can turn a cancellation that lands
inside a blocking call into an ordinary error. A loop that catches ``Exception`` and carries on
would then never stop, and shutdown would hang. Loops call :func:`raise_if_cancelling` in their
error handlers, and owners stop tasks with :func:`stop_tasks`, which never waits forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that a library swallowed (the task still says it is cancelling)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], grace: float = 10.0) -> None:
    """Cancel ``tasks`` and wait for them, at most ``grace`` seconds; log any that hang."""
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return
    _done, stuck = await asyncio.wait(pending, timeout=grace)
    for task in stuck:
        log.error("background task %s did not stop within %.0f s", task.get_name(), grace)
