"""``GET /events/session``: a session's lifecycle events as Server-Sent Events, parsed."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from .exceptions import BackendAPIError, BackendClientError
from .request import APISession

__all__ = ["BACKGROUND_TASK_FINAL_EVENTS", "Event", "background_task_events", "follow_background_task",
           "session_events"]

#: The records that end a background task's stream (then the server sends ``server_close``).
BACKGROUND_TASK_FINAL_EVENTS = frozenset({"bgtask_done", "bgtask_failed", "bgtask_cancelled"})

@dataclass(frozen=True)
class Event:
    name: str
    data: Any


def identity_params(ref: str, owner_access_key: str | None) -> dict[str, str]:
    """What the official SDK sends for a session: its id, else its name (and owner)."""
    try:
        return {"sessionId": str(uuid.UUID(ref))}
    except ValueError:
        params = {"sessionName": ref}
        if owner_access_key:
            params["ownerAccessKey"] = owner_access_key
        return params


async def _records(content: aiohttp.StreamReader, *, cut: str | None) -> AsyncGenerator[Event, None]:
    """The Server-Sent Events records of a stream (``data`` parsed as JSON where it is JSON), until
    the stream ends. ``cut``: None when a cut stream is just its end, else what to say about it."""
    name, data = "message", list[str]()
    while True:
        try:
            raw = await content.readline()  # b"" at the end of the stream
        except aiohttp.ClientPayloadError as e:
            if cut is None:
                return
            raise BackendClientError(f"{cut}: {e}") from e
        except ValueError as e:  # a line over the reader's limit
            raise BackendClientError(f"Malformed event stream: {e}") from e
        if not raw:
            return
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line.startswith(":"):
            continue
        if line == "":
            if data:
                text = "\n".join(data)
                try:
                    payload = json.loads(text)
                except ValueError:
                    payload = text
                yield Event(name, payload)
            name, data = "message", list[str]()
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)


async def _open_stream(api: APISession, url: Any, what: str, content_type: str | None) -> aiohttp.ClientResponse:
    headers = api.make_headers("GET", url, content_type)
    try:
        resp = await api.http.get(url, headers=headers, timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=30, sock_read=None))
    except aiohttp.ClientError as e:
        raise BackendClientError(f"Cannot open the {what} at {api.config.endpoint}: {e}") from e
    if resp.status // 100 != 2:
        async with resp:
            raise BackendAPIError(resp.status, resp.reason or "", await resp.read())
    return resp


async def session_events(api: APISession, ref: str, *, owner_access_key: str | None = None,
                         scope: str = "*", opened: asyncio.Event | None = None) -> AsyncGenerator[Event, None]:
    """The events of session ``ref`` as they come, until the server closes the stream.
    ``opened`` is set once the server has answered: events from then on will be seen."""
    url = api.build_url("/events/session", {**identity_params(ref, owner_access_key), "scope": scope})
    async with await _open_stream(api, url, "event stream", None) as resp:
        if opened is not None:
            opened.set()
        async for event in _records(resp.content, cut=None):
            yield event


async def background_task_events(api: APISession, task_id: str) -> AsyncGenerator[Event, None]:
    """``GET /events/background-task?task_id=...``: the task's records (``bgtask_updated`` ...,
    then one of :data:`BACKGROUND_TASK_FINAL_EVENTS`), until the final one. A task that has ended
    already answers its final record at once, so following a quick task loses nothing."""
    url = api.build_url("/events/background-task", {"task_id": task_id})
    async with await _open_stream(api, url, "background task event stream", "text/plain") as resp:
        async for event in _records(resp.content, cut="The background task event stream has failed"):
            payload = event.data
            yield Event(event.name, payload if isinstance(payload, dict) else {"message": payload})
            if event.name in BACKGROUND_TASK_FINAL_EVENTS:
                return
    raise BackendClientError(f"The background task event stream of {task_id} ended before the task did")


ProgressCallback = Callable[[int, int, str], None]


async def follow_background_task(api: APISession, task_id: str, on_progress: ProgressCallback | None = None) -> str:
    """Follow a background task to its end; its final message (e.g. the image a session was
    saved as). ``on_progress(current, total, message)`` sees each update. A failed or cancelled
    task raises :class:`BackendClientError` with the server's message."""
    async for event in background_task_events(api, task_id):
        payload = event.data
        message = str(payload.get("message") or "")
        if event.name == "bgtask_updated":
            if on_progress is not None:
                on_progress(int(payload.get("current_progress") or 0), int(payload.get("total_progress") or 0),
                            message)
        elif event.name == "bgtask_done":
            return message
        elif event.name == "bgtask_failed":
            raise BackendClientError(message or f"The background task {task_id} has failed")
        elif event.name == "bgtask_cancelled":
            raise BackendClientError(message or f"The background task {task_id} has been cancelled "
                                     "(this may be due to a server shutdown)")
    raise BackendClientError(f"The background task event stream of {task_id} ended before the task did")
