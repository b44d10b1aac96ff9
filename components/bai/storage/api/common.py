"""What both apps share: parameter parsing into pydantic models, the problem+json middleware and
the app keys of the shared state."""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from ..config import StorageProxyConfig
from ..errors import FilesystemError, InvalidParams, StorageError
from ..uploads import UploadSessions
from ..volume import VolumePool

log = logging.getLogger("bai.storage.api")

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ProxyContext:
    config: StorageProxyConfig
    volumes: VolumePool
    uploads: UploadSessions


CTX = web.AppKey("storage_ctx", ProxyContext)


def validate(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [{"loc": ".".join(str(p) for p in err["loc"]), "msg": err["msg"]} for err in exc.errors()]
        raise InvalidParams("invalid parameters: " + "; ".join(f"{d['loc']}: {d['msg']}" for d in details)) from None


async def params(request: web.Request, model: type[M]) -> M:
    """The JSON body, or the query string when there is no body (the manager sends GET params
    either way)."""
    if request.can_read_body:
        try:
            data = await request.json(loads=json.loads)
        except ValueError:
            raise InvalidParams("the body is not JSON") from None
        if not isinstance(data, dict):
            raise InvalidParams("the body must be a JSON object")
    else:
        data = dict(request.query)
    return validate(model, data)


_OS_ERRORS: dict[int, tuple[int, str]] = {
    errno.ENOSPC: (507, "no space left on the volume"),
    errno.EDQUOT: (507, "the volume's quota is exhausted"),
    errno.ENAMETOOLONG: (400, "a name is too long"),
    errno.ENOTDIR: (400, "a path component is not a directory"),
    errno.EISDIR: (409, "the path is a directory"),
    errno.ENOTEMPTY: (409, "the directory is not empty"),
    errno.EEXIST: (409, "the entry already exists"),
    errno.ENOENT: (404, "no such file or directory"),
    errno.ELOOP: (400, "the path goes through a symbolic link"),
    errno.EXDEV: (400, "cannot move across volumes"),
}


def _os_error(exc: OSError) -> FilesystemError:
    status, msg = _OS_ERRORS.get(exc.errno or 0, (500, "the storage operation failed"))
    return FilesystemError(status, msg)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except StorageError as exc:
        return exc.response(_cors_headers(request))
    except ConnectionResetError:
        # The client went away mid-request (a closed tab, a killed CLI): its event, not ours.
        client_went_away(request)
        return web.Response(status=400)  # nobody is listening; aiohttp drops it quietly
    except OSError as exc:
        error = _os_error(exc)
        if error.http_status >= 500:
            log.exception("%s %s failed", request.method, request.path)
        return error.response(_cors_headers(request))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        body = {"type": "https://api.backend.ai/probs/storage/http-error", "title": exc.reason}
        return web.Response(status=exc.status, body=json.dumps(body).encode(),
                            content_type="application/problem+json",
                            headers={**_cors_headers(request), **{k: v for k, v in exc.headers.items()
                                                                  if k.lower() == "allow"}})


def client_went_away(request: web.Request) -> None:
    """One log line for a client that disconnected in the middle of its request."""
    log.info("%s %s: the client went away mid-request (%s)", request.method, request.path, request.remote)


def _cors_headers(request: web.Request) -> dict[str, str]:
    if request.app.get(CORS_ENABLED, False):
        return dict(CORS)
    return {}


CORS_ENABLED = web.AppKey("cors_enabled", bool)
TUS_HEADERS = "Tus-Resumable, Upload-Length, Upload-Metadata, Upload-Offset, Content-Type"
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": TUS_HEADERS + ", Range, If-Range, Upload-Checksum",
    "Access-Control-Expose-Headers": TUS_HEADERS + ", Tus-Version, Tus-Max-Size, Content-Disposition, "
                                     "Content-Length, Content-Range, Accept-Ranges, Last-Modified",
    "Access-Control-Max-Age": "86400",
}
