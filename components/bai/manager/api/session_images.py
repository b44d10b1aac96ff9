"""``POST /session/{ref}/imagify``: save a running session as an image of its owner (a
background task; see bai.manager.services.sessions.imagify)."""

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


@auth_required()
async def convert_to_image(request: web.Request) -> web.Response:
    params = await routing.params(request, ImagifyParams)
    task_id = await imagify.imagify(request.app[CTX], requester(request), request.match_info["ref"],
                                    params.image_name, visibility=params.image_visibility,
                                    owner_access_key=params.owner_access_key)
    return web.json_response({"task_id": str(task_id)})


def routes(app: web.Application) -> None:
    routing.add(app, "POST", "/session/{ref}/imagify", convert_to_image, operation_id="convert_session_to_image",
                tag="session", summary="Save the running session's main container as an image only its owner "
                                       "sees and uses (a background task).",
                query=ImagifyParams, answers=(Answer(200, "The background task started.", ImagifyStarted),),
                problems=(errors.SessionNotFound, errors.TooManySessionsMatched, errors.InvalidAPIParameters,
                          errors.GenericForbidden, errors.QuotaExceeded, imagify.CommitInProgress))
