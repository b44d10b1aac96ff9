"""/folders sharing: invitations, leaving, shared-folder permissions, project-folder overrides
and cloning (the original's 24.03 routes, as the official client 24.3.11 calls them: it sends
``DELETE`` for ``invitations/delete`` and ``unshare``, ``user_ids`` with emails for ``invite``).
Thin handlers: the rules are in services/vfolders/{invitations,sharing,clone}.py."""

from __future__ import annotations

import uuid
from typing import Annotated

from aiohttp import web
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StrictBool

from bai.manager import errors
from bai.manager.services.vfolders import clone as clone_svc
from bai.manager.services.vfolders import invitations as inv_svc
from bai.manager.services.vfolders import sharing as share_svc

from . import routing
from .keys import CTX, requester
from .middlewares import auth_required
from .routing import Answer

Permission = Annotated[str, Field(json_schema_extra={"enum": ["ro", "rw", "wd"]})]
Email = Annotated[str, Field(min_length=1, max_length=64)]
Emails = Annotated[list[Email], Field(min_length=1, max_length=100)]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class InviteParams(_Params):
    perm: Permission = Field("rw", validation_alias=AliasChoices("perm", "permission"))
    emails: Emails = Field(validation_alias=AliasChoices("emails", "user_ids", "userIDs"),
                           description="The invitees' emails (users of the caller's domain).")


class InvitationIdParams(_Params):
    inv_id: uuid.UUID


class UpdateInvitationParams(_Params):
    perm: Permission = Field(validation_alias=AliasChoices("perm", "permission"))


class LeaveParams(_Params):
    shared_user_uuid: uuid.UUID | None = Field(None, description="Superadmins: remove this user instead.")


class SharedQuery(_Params):
    vfolder_id: uuid.UUID | None = Field(None, description="Only this folder's grants.")


class UpdateSharedParams(_Params):
    vfolder: uuid.UUID
    user: uuid.UUID
    perm: Permission | None = Field(None, description="The new permission; null removes the grant.")


class UserPerm(_Params):
    user_id: uuid.UUID
    perm: Permission | None = None


class SharingParams(_Params):
    vfolder_id: uuid.UUID
    user_perm_list: Annotated[list[UserPerm], Field(max_length=100)]


class ShareParams(_Params):
    permission: Permission = Field("rw", validation_alias=AliasChoices("permission", "perm"))
    emails: Emails


class UnshareParams(_Params):
    emails: Emails


class CloneParams(_Params):
    target_name: Annotated[str, Field(min_length=1, max_length=128)] = Field(
        validation_alias=AliasChoices("target_name", "targetName"))
    target_host: Annotated[str, Field(max_length=128)] | None = Field(
        None, validation_alias=AliasChoices("target_host", "targetHost", "folder_host"),
        description="Default: the source's host (it must be on the same storage proxy).")
    usage_mode: Annotated[str, Field(json_schema_extra={"enum": ["general", "model", "data"]})] | None = "general"
    permission: Permission | None = "rw"
    cloneable: StrictBool = False


class _Reply(BaseModel):
    model_config = ConfigDict(extra="allow")


class Invited(_Reply):
    invited_ids: list[str] = Field(description="The emails invited now.")


class Invitation(_Reply):
    id: str
    inviter: str
    invitee: str
    perm: str
    state: str
    created_at: str
    modified_at: str
    vfolder_id: str
    vfolder_name: str


class InvitationList(_Reply):
    invitations: list[Invitation]


class Message(_Reply):
    msg: str


class SharedTo(_Reply):
    uuid: str
    email: str


class Shared(_Reply):
    vfolder_id: str
    vfolder_name: str
    status: str
    owner: str
    type: str
    shared_to: SharedTo
    perm: str


class SharedList(_Reply):
    shared: list[Shared]


class SharedEmails(_Reply):
    shared_emails: list[str]


class UnsharedEmails(_Reply):
    unshared_emails: list[str]


class Cloned(_Reply):
    id: str
    name: str
    host: str
    bgtask_id: str = Field(description="Follow it on GET /events/background-task.")


def _name(request: web.Request) -> str:
    return request.match_info["name"]


# ------------------------------------------------------------------ invitations


@auth_required()
async def invite(request: web.Request) -> web.Response:
    p = await routing.params(request, InviteParams)
    invited = await inv_svc.invite(request.app[CTX], requester(request), _name(request), p.perm, p.emails)
    return web.json_response({"invited_ids": invited}, status=201)


@auth_required()
async def invitations(request: web.Request) -> web.Response:
    return web.json_response({"invitations": await inv_svc.received(request.app[CTX], requester(request))})


@auth_required()
async def sent_invitations(request: web.Request) -> web.Response:
    return web.json_response({"invitations": await inv_svc.sent(request.app[CTX], requester(request))})


@auth_required()
async def update_invitation(request: web.Request) -> web.Response:
    p = await routing.params(request, UpdateInvitationParams)
    try:
        inv_id = uuid.UUID(request.match_info["inv_id"])
    except ValueError:
        raise errors.ObjectNotFound("No such vfolder invitation.") from None
    await inv_svc.update(request.app[CTX], requester(request), inv_id, p.perm)
    return web.json_response({"msg": f"vfolder invitation updated: {inv_id}."})


@auth_required()
async def accept_invitation(request: web.Request) -> web.Response:
    p = await routing.params(request, InvitationIdParams)
    await inv_svc.accept(request.app[CTX], requester(request), p.inv_id)
    return web.json_response({})


@auth_required()
async def delete_invitation(request: web.Request) -> web.Response:
    p = await routing.params(request, InvitationIdParams)
    await inv_svc.delete(request.app[CTX], requester(request), p.inv_id)
    return web.json_response({})


# ------------------------------------------------------------------ shares


@auth_required()
async def leave(request: web.Request) -> web.Response:
    p = await routing.params(request, LeaveParams)
    await share_svc.leave(request.app[CTX], requester(request), _name(request), p.shared_user_uuid)
    return web.json_response({"msg": "left the shared vfolder"})


@auth_required()
async def list_shared(request: web.Request) -> web.Response:
    p = routing.query(request, SharedQuery)
    return web.json_response({"shared": await share_svc.list_shared(request.app[CTX], requester(request),
                                                                     p.vfolder_id)})


@auth_required()
async def update_shared(request: web.Request) -> web.Response:
    p = await routing.params(request, UpdateSharedParams)
    await share_svc.update_shared(request.app[CTX], requester(request), p.vfolder, p.user, p.perm)
    return web.json_response({"msg": "shared vfolder permission updated"})


@auth_required()
async def update_sharing(request: web.Request) -> web.Response:
    p = await routing.params(request, SharingParams)
    changes = {u.user_id: u.perm for u in p.user_perm_list}
    if len(changes) != len(p.user_perm_list):
        raise errors.InvalidAPIParameters("A user appears twice in user_perm_list.")
    await share_svc.update_sharing(request.app[CTX], requester(request), p.vfolder_id, changes)
    return web.Response(status=201)


@auth_required()
async def share(request: web.Request) -> web.Response:
    p = await routing.params(request, ShareParams)
    shared = await share_svc.share(request.app[CTX], requester(request), _name(request), p.permission, p.emails)
    return web.json_response({"shared_emails": shared}, status=201)


@auth_required()
async def unshare(request: web.Request) -> web.Response:
    p = await routing.params(request, UnshareParams)
    unshared = await share_svc.unshare(request.app[CTX], requester(request), _name(request), p.emails)
    return web.json_response({"unshared_emails": unshared})


# ------------------------------------------------------------------ clone


@auth_required()
async def clone(request: web.Request) -> web.Response:
    p = await routing.params(request, CloneParams)
    reply = await clone_svc.clone(request.app[CTX], requester(request), _name(request), clone_svc.CloneRequest(
        target_name=p.target_name, target_host=p.target_host, usage_mode=p.usage_mode or "general",
        permission=p.permission or "rw", cloneable=p.cloneable))
    return web.json_response(reply, status=201)


_FOLDER_PROBLEMS: tuple[type[errors.ApiError], ...] = (
    errors.InvalidAPIParameters, errors.VFolderNotFound, errors.TooManyVFoldersFound,
    errors.VFolderPermissionError)
_INVITATION_PROBLEMS = (errors.InvalidAPIParameters, errors.ObjectNotFound)


def routes(app: web.Application) -> None:
    add = routing.add
    tag = "vfolders"
    add(app, "GET", "/folders/invitations/list", invitations, operation_id="vfolder_invitations", tag=tag,
        summary="Pending invitations to the caller.", answers=(Answer(200, "The invitations.", InvitationList),))
    for path, op in (("/folders/invitations/list-sent", "vfolder_sent_invitations"),
                     ("/folders/invitations/list_sent", "vfolder_sent_invitations_")):
        add(app, "GET", path, sent_invitations, operation_id=op, tag=tag,
            summary="Pending invitations the caller sent.", answers=(Answer(200, "The invitations.", InvitationList),))
    add(app, "POST", "/folders/invitations/update/{inv_id}", update_invitation, operation_id="update_vfolder_invitation",
        tag=tag, body=UpdateInvitationParams, summary="Change the permission a pending invitation offers (inviter).",
        answers=(Answer(200, "Updated.", Message),), problems=_INVITATION_PROBLEMS)
    add(app, "POST", "/folders/invitations/accept", accept_invitation, operation_id="accept_vfolder_invitation",
        tag=tag, body=InvitationIdParams, summary="Accept an invitation: the folder is shared with the caller.",
        answers=(Answer(200, "Accepted: {}."),),
        problems=(*_INVITATION_PROBLEMS, errors.VFolderNotFound, errors.VFolderAlreadyExists))
    for method, op in (("POST", "delete_vfolder_invitation"), ("DELETE", "delete_vfolder_invitation_")):
        add(app, method, "/folders/invitations/delete", delete_invitation, operation_id=op, tag=tag,
            body=InvitationIdParams, summary="Reject (invitee) or cancel (inviter) a pending invitation.",
            answers=(Answer(200, "Done: {}."),), problems=_INVITATION_PROBLEMS)
    add(app, "GET", "/folders/_/shared", list_shared, operation_id="list_shared_vfolders", tag=tag,
        query=SharedQuery, summary="Who the caller's folders are shared with (admins: their domain's).",
        answers=(Answer(200, "The grants.", SharedList),), problems=(errors.InvalidAPIParameters,))
    add(app, "POST", "/folders/_/shared", update_shared, operation_id="update_shared_vfolder", tag=tag,
        body=UpdateSharedParams, summary="Change or remove one user's permission on a shared folder.",
        answers=(Answer(200, "Updated.", Message),), problems=(*_FOLDER_PROBLEMS, errors.ObjectNotFound))
    add(app, "POST", "/folders/_/sharing", update_sharing, operation_id="update_vfolder_sharing", tag=tag,
        body=SharingParams, summary="Change or remove several users' permissions on a folder (all or none).",
        answers=(Answer(201, "Updated (empty body).", media_type=""),),
        problems=(*_FOLDER_PROBLEMS, errors.ObjectNotFound))
    add(app, "POST", "/folders/{name}/invite", invite, operation_id="invite_to_vfolder", tag=tag, body=InviteParams,
        summary="Invite users of the caller's domain to a user folder the caller owns.",
        answers=(Answer(201, "The emails invited.", Invited),),
        problems=(*_FOLDER_PROBLEMS, errors.ObjectNotFound, errors.VFolderAlreadyExists,
                  errors.VFolderHostNotAllowed))
    add(app, "POST", "/folders/{name}/leave", leave, operation_id="leave_vfolder", tag=tag, body=LeaveParams,
        summary="Stop having a folder shared with the caller.", answers=(Answer(200, "Left.", Message),),
        problems=(*_FOLDER_PROBLEMS, errors.ObjectNotFound, errors.InsufficientPrivilege))
    add(app, "POST", "/folders/{name}/share", share, operation_id="share_project_vfolder", tag=tag, body=ShareParams,
        summary="Give members of a project folder's project their own permission on it (admins).",
        answers=(Answer(201, "The emails shared with.", SharedEmails),),
        problems=(*_FOLDER_PROBLEMS, errors.GenericForbidden, errors.ObjectNotFound))
    for method, op in (("DELETE", "unshare_project_vfolder"), ("POST", "unshare_project_vfolder_")):
        add(app, method, "/folders/{name}/unshare", unshare, operation_id=op, tag=tag, body=UnshareParams,
            summary="Remove per-user permissions on a project folder (admins).",
            answers=(Answer(200, "The emails unshared.", UnsharedEmails),),
            problems=(*_FOLDER_PROBLEMS, errors.GenericForbidden, errors.ObjectNotFound))
    add(app, "POST", "/folders/{name}/clone", clone, operation_id="clone_vfolder", tag=tag, body=CloneParams,
        summary="Clone a folder into a new user folder of the caller, as a background task.",
        answers=(Answer(201, "The new folder and its background task.", Cloned),),
        problems=(*_FOLDER_PROBLEMS, errors.GenericForbidden, errors.VFolderAlreadyExists,
                  errors.VFolderHostNotAllowed, errors.VFolderOperationFailed, errors.StorageProxyUnavailable))
