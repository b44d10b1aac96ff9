"""Ending circuits with their sessions: the manager announces every session's end on the pub/sub
channel ``bai.session-events``; the proxy listens and closes the session's circuits (and, on
``session_service_stopped``, those to the service that a shutdown-service stopped).

A subscription lost (Redis restarted, network cut) may have missed an end, and a service port
of a finished session may be handed to another session later: so after a gap every circuit that
existed before it is closed (users reopen their apps; no circuit outlives its session unseen).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any

import redis.asyncio as aioredis

from bai.common.events import BROADCAST_CHANNEL

from .circuits import CircuitRegistry

log = logging.getLogger(__name__)

#: Broadcasts after which a session's services are gone (or going).
END_EVENTS = frozenset({"session_terminating", "session_terminated", "session_cancelled"})


def ended_session(data: bytes | str) -> uuid.UUID | None:
    """The session a broadcast says has ended, if it says that."""
    try:
        payload: dict[str, Any] = json.loads(data)
        if payload.get("name") in END_EVENTS:
            return uuid.UUID(str(payload["args"]["sessionId"]))
    except (TypeError, ValueError, KeyError, AttributeError):
        pass
    return None


#: Broadcast when one service of a session was stopped (shutdown-service).
SERVICE_STOPPED = "session_service_stopped"


def stopped_service(data: bytes | str) -> tuple[uuid.UUID, str, frozenset[int]] | None:
    """``(session, kernel host, host ports)`` of the service a broadcast says was stopped."""
    try:
        payload: dict[str, Any] = json.loads(data)
        if payload.get("name") == SERVICE_STOPPED:
            args = payload["args"]
            return (uuid.UUID(str(args["sessionId"])), str(args["kernelHost"]),
                    frozenset(int(p) for p in args["kernelPorts"]))
    except (TypeError, ValueError, KeyError, AttributeError):
        pass
    return None


async def watch(redis: aioredis.Redis, circuits: CircuitRegistry, subscribed: asyncio.Event | None = None,
                retry: float = 1.0) -> None:
    """Runs for the life of the proxy."""
    gap = False
    while True:
        pubsub = redis.pubsub()
        try:
            await pubsub.subscribe(BROADCAST_CHANNEL)
            if gap:
                log.warning("session events were missed while Redis was away: closing %d circuits", len(circuits))
                await circuits.close_all("session events missed")
                gap = False
            if subscribed is not None:
                subscribed.set()
            async for msg in pubsub.listen():
                if msg.get("type") != "message":
                    continue
                sid = ended_session(msg["data"])
                if sid is not None:
                    await circuits.close_session(sid, "session ended")
                elif (stopped := stopped_service(msg["data"])) is not None:
                    await circuits.close_service(*stopped, why="service stopped")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("session-event subscription lost: %r", exc)
            gap = True
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
        await asyncio.sleep(retry)
