"""/stream/session/{ref}/execute: query-mode execution over a websocket."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web

from bai.manager import errors

from .keys import CTX, SESSIONS, requester
from .middlewares import auth_required

log = logging.getLogger(__name__)
STREAM_FLUSH_TIMEOUT = 0.2


@auth_required()
async def stream_execute(request: web.Request) -> web.StreamResponse:
    svc = request.app[SESSIONS]
    route = await svc.route(requester(request), request.match_info["ref"])  # 404 before upgrading
    ws = web.WebSocketResponse(max_msg_size=request.app[CTX].config.manager.max_wsmsg_size)
    await ws.prepare(request)
    try:
        first = await ws.receive(timeout=300)
        if first.type != WSMsgType.TEXT:
            return ws
        try:
            params: dict[str, Any] = json.loads(first.data)
            code = str(params.get("code", ""))
            mode = params.get("mode", "query")
            if mode != "query":
                raise ValueError(f"unsupported mode {mode!r}")
        except (ValueError, TypeError, AttributeError) as exc:
            await ws.send_json({"status": "error", "msg": f"invalid request: {exc}"})
            return ws
        run_id: str | None = None
        result = await svc.execute(route, mode="query", run_id=None, code=code, opts=params.get("options"),
                                   flush_timeout=STREAM_FLUSH_TIMEOUT)
        while True:
            run_id = result.get("runId") or run_id
            status = result.get("status")
            if result.get("console") or status != "continued":
                await ws.send_json({k: result.get(k) for k in ("status", "console", "exitCode", "options", "files")})
            if status in ("finished", "exec-timeout"):
                break
            if status == "waiting-input":
                msg = await ws.receive()
                if msg.type != WSMsgType.TEXT:
                    break
                result = await svc.execute(route, mode="input", run_id=run_id, code=msg.data, opts={},
                                           flush_timeout=STREAM_FLUSH_TIMEOUT)
            else:
                result = await svc.execute(route, mode="continue", run_id=run_id, code="", opts={},
                                           flush_timeout=STREAM_FLUSH_TIMEOUT)
    except errors.ApiError as exc:
        if not ws.closed:
            await ws.send_json({"status": "error", "msg": exc.msg or exc.title})
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("stream execute failed")
        if not ws.closed:
            await ws.send_json({"status": "error", "msg": repr(exc)})
    finally:
        if not ws.closed:
            await ws.close()
    return ws


def routes(app: web.Application) -> None:
    app.router.add_get("/stream/session/{ref}/execute", stream_execute)
