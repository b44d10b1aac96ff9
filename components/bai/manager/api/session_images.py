"""``POST /session/{ref}/imagify``: save a running session as an image of its owner; ``POST
/session/{ref}/commit``: save it as an image tar on its agent; ``GET /session/{ref}/commit``: whether
such a commit is ongoing. Both commits are background tasks (bai.manager.services.sessions.imagify)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from bai.manager import errors
from bai.manager.services.schemas import SessionQuery
from bai.manager.services.sessions import imagify

from . import routing
from .keys import CTX, requester
from .middlewares import auth_required
from .routing import Answer


class ImagifyParams(SessionQuery):
    model_config = ConfigDict(extra="ignore")
    image_name: str = Field(max_length=imagify.MAX_IMAGE_NAME, pattern=imagify.IMAGE_NAME_PATTERN,
                            description="The new image's name (its `ai.backend.customized-image.name` label).")
    image_visibility: str = Field("user", description="Only `user`: the image is its owner's alone.")


class ImagifyStarted(BaseModel):
    task_id: str = Field(description="The background task (`GET /events/background-task?task_id=`); its final "
                                     "message is the new image's reference.")


class CommitParams(SessionQuery):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    filename: str | None = Field(None, max_length=124, alias="fname", pattern=imagify.FILENAME_PATTERN,
                                 description="The tar's name (`.tar` is added); default: the session's name and "
                                             "the time. Also accepted as `filename`.")


class CommitStarted(BaseModel):
    bgtask_id: str = Field(description="The background task (`GET /events/background-task?task_id=`); its final "
                                       "message is the tar's path on the agent host.")
    kernel: str
    path: str = Field(description="`<owner e-mail>/<file>.tar` under the agent's `image-commit-path`.")


class CommitStatus(BaseModel):
    status: str = Field(description="`ongoing` or `ready`.")
    kernel: str


@auth_required()
async def commit(request: web.Request) -> web.Response:
    params = await routing.params(request, CommitParams)
    started = await imagify.commit_to_file(request.app[CTX], requester(request), request.match_info["ref"],
                                           params.filename, owner_access_key=params.owner_access_key)
    return web.json_response(started, status=201)


@auth_required()
async def commit_status(request: web.Request) -> web.Response:
    q = routing.query(request, SessionQuery)
    status = await imagify.commit_status(request.app[CTX], requester(request), request.match_info["ref"],
                                         owner_access_key=q.owner_access_key)
    return web.json_response(status)


@auth_required()
async def convert_to_image(request: web.Request) -> web.Response:
    params = await routing.params(request, ImagifyParams)
    task_id = await imagify.imagify(request.app[CTX], requester(request), request.match_info["ref"],
                                    params.image_name, visibility=params.image_visibility,
                                    owner_access_key=params.owner_access_key)
    return web.json_response({"task_id": str(task_id)})


def routes(app: web.Application) -> None:
    running = (errors.SessionNotFound, errors.TooManySessionsMatched, errors.InvalidAPIParameters,
               errors.GenericForbidden)
    routing.add(app, "POST", "/session/{ref}/commit", commit, operation_id="commit_session", tag="session",
                summary="Save the running session's main container as an image tar on its agent host "
                        "(a background task).", query=CommitParams,
                answers=(Answer(201, "The background task started.", CommitStarted),),
                problems=(*running, imagify.CommitInProgress))
    routing.add(app, "GET", "/session/{ref}/commit", commit_status, operation_id="get_commit_status",
                tag="session", summary="Whether a commit of the session's main container is in progress.",
                query=SessionQuery, answers=(Answer(200, "The commit status.", CommitStatus),),
                problems=(*running, errors.InternalServerError))
    routing.add(app, "POST", "/session/{ref}/imagify", convert_to_image, operation_id="convert_session_to_image",
                tag="session", summary="Save the running session's main container as an image only its owner "
                                       "sees and uses (a background task).",
                query=ImagifyParams, answers=(Answer(200, "The background task started.", ImagifyStarted),),
                problems=(errors.SessionNotFound, errors.TooManySessionsMatched, errors.InvalidAPIParameters,
                          errors.GenericForbidden, errors.QuotaExceeded, imagify.CommitInProgress))
