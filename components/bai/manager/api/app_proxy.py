"""A session's apps: ``POST /session/{ref}/start-service`` (a token for the resource group's app
proxy), ``GET /stream/session/{ref}/apps`` (its service ports) and the websocket tunnels
``/stream/session/{ref}/tcpproxy`` and ``/httpproxy`` (one websocket = one TCP connection to
the service, raw bytes in binary frames, as the original's and the official ``backend.ai app``).

A tunnel is bounded like the execute stream: frames over ``max-wsmsg-size`` close it (1009), a
side that takes no data for ``stream-send-timeout`` is dropped, pings every ``ws-heartbeat``;
either side closing closes the other, so a client that vanishes frees its service connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiohttp import WSMsgType, web
from pydantic import BaseModel

from bai.manager import errors
from bai.manager.services import app_proxy as svc

from . import routing
from .keys import CTX, requester
from .middlewares import auth_required
from .routing import Answer

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
CONNECT_TIMEOUT = 10.0


class ServiceToken(BaseModel):
    token: str
    wsproxy_addr: str


@auth_required()
async def start_service(request: web.Request) -> web.Response:
    req = await routing.params(request, svc.StartService)
    result = await svc.start_service(request.app[CTX], requester(request), request.match_info["ref"], req)
    return web.json_response(result)


@auth_required()
async def apps(request: web.Request) -> web.Response:
    q = routing.query(request, svc.AppsQuery)
    found = await svc.apps(request.app[CTX], requester(request), request.match_info["ref"], q.owner_access_key)
    return web.json_response(found)


async def _ws_to_tcp(ws: web.WebSocketResponse, writer: asyncio.StreamWriter, send_timeout: float,
                     on_data: Callable[[], None]) -> None:
    async for msg in ws:
        on_data()
        if msg.type == WSMsgType.BINARY:
            writer.write(msg.data)
        elif msg.type == WSMsgType.TEXT:
            writer.write(msg.data.encode())
        elif msg.type == WSMsgType.ERROR:
            break
        else:
            continue
        async with asyncio.timeout(send_timeout):
            await writer.drain()


async def _tcp_to_ws(reader: asyncio.StreamReader, ws: web.WebSocketResponse, send_timeout: float,
                     on_data: Callable[[], None]) -> None:
    while chunk := await reader.read(CHUNK):
        on_data()
        async with asyncio.timeout(send_timeout):
            await ws.send_bytes(chunk)


@auth_required()
async def tunnel(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    q = routing.query(request, svc.TunnelQuery)
    target = await svc.tunnel_target(ctx, requester(request), request.match_info["ref"], q)  # 4xx before upgrading
    cfg = ctx.config.manager
    ws = web.WebSocketResponse(max_msg_size=cfg.max_wsmsg_size, heartbeat=cfg.ws_heartbeat, writer_limit=CHUNK)
    if not ws.can_prepare(request).ok:
        raise errors.GenericBadRequest("This endpoint needs a websocket upgrade (Connection: Upgrade, "
                                       "Upgrade: websocket).")
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            reader, writer = await asyncio.open_connection(target.kernel_host, target.kernel_port, limit=CHUNK)
    except (OSError, TimeoutError):
        raise errors.ServiceUnavailable(f"The app {q.app} does not accept connections.") from None
    try:
        await ws.prepare(request)
        on_data = svc.traffic_stamper(ctx, target)  # the session's activity while data flows (idle timeout)
        on_data()
        tasks = [asyncio.create_task(_ws_to_tcp(ws, writer, cfg.stream_send_timeout, on_data)),
                 asyncio.create_task(_tcp_to_ws(reader, ws, cfg.stream_send_timeout, on_data))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await writer.wait_closed()
        if not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close()
    return ws


def routes(app: web.Application) -> None:
    ref = (errors.SessionNotFound, errors.TooManySessionsMatched, errors.InvalidAPIParameters)
    routing.add(app, "POST", "/session/{ref}/start-service", start_service, operation_id="start_service",
                tag="session", body=svc.StartService,
                summary="Start one of the session's apps (if not running) and get a token for the resource "
                        "group's app proxy: open {wsproxy_addr}/v2/proxy/auth?token=..&session_id=..&app=..",
                answers=(Answer(200, "The app proxy token and address.", ServiceToken),),
                problems=(*ref, errors.ObjectNotFound, errors.ServiceUnavailable))
    routing.add(app, "GET", "/stream/session/{ref}/apps", apps, operation_id="list_apps", tag="stream",
                query=svc.AppsQuery, summary="The session's service ports (apps).",
                answers=(Answer(200, "The apps: name, protocol, ports and client hints."),),
                problems=(errors.SessionNotFound, errors.TooManySessionsMatched, errors.GenericForbidden))
    for kind in ("tcpproxy", "httpproxy"):
        routing.add(
            app, "GET", f"/stream/session/{{ref}}/{kind}", tunnel, operation_id=f"stream_{kind}", tag="stream",
            query=svc.TunnelQuery, websocket=True,
            summary=f"A websocket tunnelled to one TCP connection to the session's app ({kind}).",
            description="A websocket upgrade; binary frames carry the raw bytes both ways. The app is started "
                        "first if it is not running.",
            answers=(Answer(101, "Switching to the websocket protocol.", media_type=""),),
            problems=(*ref, errors.ObjectNotFound, errors.ServiceUnavailable, errors.GenericBadRequest))
