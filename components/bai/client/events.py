"""``GET /events/session``: a session's lifecycle events as Server-Sent Events, parsed."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import aiohttp

from .exceptions import BackendAPIError, BackendClientError
from .request import APISession

__all__ = ["Event", "session_events"]

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


async def session_events(api: APISession, ref: str, *, owner_access_key: str | None = None,
                         scope: str = "*", opened: asyncio.Event | None = None) -> AsyncGenerator[Event, None]:
    """The events of session ``ref`` as they come, until the server closes the stream.
    ``opened`` is set once the server has answered: events from then on will be seen."""
    url = api.build_url("/events/session", {**identity_params(ref, owner_access_key), "scope": scope})
    headers = api.make_headers("GET", url, None)
    try:
        resp = await api.http.get(url, headers=headers, timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=30, sock_read=None))
    except aiohttp.ClientError as e:
        raise BackendClientError(f"Cannot open the event stream at {api.config.endpoint}: {e}") from e
    async with resp:
        if resp.status != 200:
            raise BackendAPIError(resp.status, resp.reason or "", await resp.read())
        if opened is not None:
            opened.set()
        name, data = "message", list[str]()
        while True:
            try:
                raw = await resp.content.readline()  # b"" at the end of the stream
            except aiohttp.ClientPayloadError:
                return
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
