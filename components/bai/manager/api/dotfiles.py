"""The original's dotfile endpoints: ``/user-config/dotfiles`` (a keypair's), ``/domain-config/dotfiles``,
``/group-config/dotfiles`` (POST create, GET list or one ``path``, PATCH update, DELETE), and
``/user-config/bootstrap-script`` (POST store, GET read). Rules and who may do what:
:mod:`bai.manager.services.dotfiles`."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, RootModel, StrictStr

from bai.manager import errors
from bai.manager.services import dotfiles as svc

from . import routing
from .keys import CTX, requester
from .middlewares import auth_required
from .routing import Answer

_Name = Annotated[StrictStr, Field(min_length=1, max_length=256)]
_Path = Annotated[StrictStr, Field(max_length=svc.MAX_PATH_LENGTH, description="Relative to the home directory.")]
_Data = Annotated[StrictStr, Field(description="The file's content (at most 64 KiB).")]
_Perm = Annotated[StrictStr, Field(description="Three octal digits, e.g. `755`.")]
_OwnerKey = Annotated[StrictStr | None, Field(
    None, validation_alias=AliasChoices("owner_access_key", "onwer_access_key"),  # sic: the official client's list
    description="An admin acts on another keypair's dotfiles.")]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserDotfile(_Params):
    path: _Path
    data: _Data
    permission: _Perm
    owner_access_key: _OwnerKey = None


class UserDotfileRef(_Params):
    path: _Path | None = None
    owner_access_key: _OwnerKey = None


class DomainDotfile(_Params):
    domain: _Name
    path: _Path
    data: _Data
    permission: _Perm


class DomainDotfileRef(_Params):
    domain: _Name
    path: _Path | None = None


class GroupDotfile(_Params):
    group: _Name = Field(description="The project's id, or its name (looked up in `domain`, default the caller's).")
    domain: _Name | None = None
    path: _Path
    data: _Data
    permission: _Perm


class GroupDotfileRef(_Params):
    group: _Name
    domain: _Name | None = None
    path: _Path | None = None


class BootstrapScript(_Params):
    script: StrictStr = Field("", description="A shell script (at most 64 KiB; blank removes it).")


class DotfileInfo(BaseModel):
    path: str
    permission: str
    data: str


class DotfileListOrOne(RootModel[list[DotfileInfo] | DotfileInfo]):
    pass


class Empty(BaseModel):
    pass


class Success(BaseModel):
    success: bool


def _scope(params: BaseModel) -> svc.Scope:
    return svc.Scope(owner_access_key=getattr(params, "owner_access_key", None),
                     domain=getattr(params, "domain", None), group=getattr(params, "group", None))


def _handlers(body: type[UserDotfile | DomainDotfile | GroupDotfile],
              ref: type[UserDotfileRef | DomainDotfileRef | GroupDotfileRef]) -> dict[str, routing.Handler]:
    @auth_required()
    async def create(request: web.Request) -> web.Response:
        p = await routing.params(request, body)
        await svc.create(request.app[CTX], requester(request), _scope(p), p.path, p.permission, p.data)
        return web.json_response({})

    @auth_required()
    async def list_or_get(request: web.Request) -> web.Response:
        q = await routing.params(request, ref)
        return web.json_response(await svc.list_or_get(request.app[CTX], requester(request), _scope(q), q.path))

    @auth_required()
    async def update(request: web.Request) -> web.Response:
        p = await routing.params(request, body)
        await svc.update(request.app[CTX], requester(request), _scope(p), p.path, p.permission, p.data)
        return web.json_response({})

    @auth_required()
    async def delete(request: web.Request) -> web.Response:
        q = await routing.params(request, ref)
        if q.path is None:
            raise errors.InvalidAPIParameters("Input validation error", {"path": "is required"})
        await svc.delete(request.app[CTX], requester(request), _scope(q), q.path)
        return web.json_response({"success": True})

    return {"POST": create, "GET": list_or_get, "PATCH": update, "DELETE": delete}


@auth_required()
async def set_bootstrap_script(request: web.Request) -> web.Response:
    p = await routing.params(request, BootstrapScript)
    await svc.set_bootstrap_script(request.app[CTX], requester(request), p.script)
    return web.json_response({})


@auth_required()
async def get_bootstrap_script(request: web.Request) -> web.Response:
    return web.json_response(await svc.get_bootstrap_script(request.app[CTX], requester(request)))


_BAD = (errors.InvalidAPIParameters, svc.DotfileCreationFailed, svc.DotfileAlreadyExists)
_DENIED = (errors.GenericForbidden,)
_SCOPES = (
    ("user", "/user-config/dotfiles", UserDotfile, UserDotfileRef, (), "the caller's keypair (or `owner_access_key`'s)"),
    ("domain", "/domain-config/dotfiles", DomainDotfile, DomainDotfileRef, (errors.DomainNotFound,), "a domain"),
    ("group", "/group-config/dotfiles", GroupDotfile, GroupDotfileRef, (errors.GroupNotFound,), "a project"),
)


def routes(app: web.Application) -> None:
    for scope, path, body, ref, missing, whose in _SCOPES:
        h = _handlers(body, ref)
        routing.add(app, "POST", path, h["POST"], operation_id=f"create_{scope}_dotfile", tag="dotfiles",
                    summary=f"Store a dotfile of {whose}.", body=body,
                    answers=(Answer(200, "Stored.", Empty),), problems=(*_BAD, *_DENIED, *missing))
        routing.add(app, "GET", path, h["GET"], operation_id=f"list_{scope}_dotfiles", tag="dotfiles",
                    summary=f"The dotfiles of {whose}, or the one at `path`.", query=ref,
                    answers=(Answer(200, "A list, or one dotfile when `path` is given.", DotfileListOrOne),),
                    problems=(errors.InvalidAPIParameters, svc.DotfileNotFound, *_DENIED, *missing))
        routing.add(app, "PATCH", path, h["PATCH"], operation_id=f"update_{scope}_dotfile", tag="dotfiles",
                    summary=f"Replace a dotfile of {whose}.", body=body,
                    answers=(Answer(200, "Replaced.", Empty),),
                    problems=(*_BAD, svc.DotfileNotFound, *_DENIED, *missing))
        routing.add(app, "DELETE", path, h["DELETE"], operation_id=f"delete_{scope}_dotfile", tag="dotfiles",
                    summary=f"Delete a dotfile of {whose}.", query=ref,
                    answers=(Answer(200, "Deleted.", Success),),
                    problems=(errors.InvalidAPIParameters, svc.DotfileNotFound, *_DENIED, *missing))
    routing.add(app, "POST", "/user-config/bootstrap-script", set_bootstrap_script,
                operation_id="set_bootstrap_script", tag="dotfiles", body=BootstrapScript,
                summary="Store the script new sessions of this keypair run when their create request brings none.",
                answers=(Answer(200, "Stored.", Empty),), problems=(errors.InvalidAPIParameters, svc.DotfileCreationFailed))
    routing.add(app, "GET", "/user-config/bootstrap-script", get_bootstrap_script,
                operation_id="get_bootstrap_script", tag="dotfiles", summary="The keypair's stored bootstrap script.",
                answers=(Answer(200, "The script (a JSON string; empty when none)."),))
