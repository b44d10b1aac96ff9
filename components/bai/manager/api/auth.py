"""The /auth endpoints: test, role, authorize, signup, signout, update-password,
update-full-name and ssh-keypair (GET/PATCH/POST), with the original's shapes and errors; and
rotate-keypair (beyond the original: a successor keypair, the old one valid for a grace period).

Not implemented: ``POST /auth/update-password-no-auth``. In the original it only does anything
when ``max_password_age`` is configured (password expiry), which this manager does not have;
the route is absent, so it answers 404 ``url-not-found``.
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from bai.manager import errors
from bai.manager.services import auth as svc
from bai.manager.services.audit import Actor
from bai.manager.services.schemas import parse

from . import replies as r
from . import routing
from .audit import ACTOR
from .keys import CTX, requester
from .middlewares import auth_required, client_address, read_params

log = logging.getLogger(__name__)

Text = Annotated[str, Field(min_length=1)]  # trafaret's t.String: no blank strings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Open(BaseModel):  # the original passes extra keys on to hook plugins
    model_config = ConfigDict(extra="ignore")


class AuthorizeParams(_Open):
    type: Literal["keypair", "jwt"]
    domain: Text
    username: Text
    password: Text


class SignupParams(_Open):
    domain: Text
    email: Annotated[str, Field(min_length=1, max_length=64)]
    password: Text
    username: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    full_name: Annotated[str, Field(max_length=64)] | None = None
    description: Annotated[str, Field(max_length=500)] | None = None


class SignoutParams(_Strict):
    email: Text = Field(validation_alias=AliasChoices("email", "username"))
    password: Text


class UpdatePasswordParams(_Strict):
    old_password: Text
    new_password: Text
    new_password2: Text


class UpdateFullNameParams(_Strict):
    email: Text
    full_name: Annotated[str, Field(max_length=64)]


class RoleParams(_Strict):
    group: uuid.UUID | None = None


class AuthTestParams(_Open):
    echo: Any = None


class SSHKeypairParams(_Strict):
    pubkey: Text
    privkey: Text


class RotateKeypairParams(_Strict):
    access_key: Annotated[str, Field(min_length=1, max_length=20)] | None = Field(
        None, description="The keypair to rotate (the caller's own when omitted; admins may name another).")


class Rotated(BaseModel):
    access_key: str = Field(description="The new keypair's access key.")
    secret_key: str | None = Field(
        description="Its secret key; null unless the caller owns the keypair or is a superadmin.")
    previous_access_key: str
    previous_expires_at: str = Field(description="When the rotated keypair stops working (ISO 8601).")


@auth_required()
async def auth_test(request: web.Request) -> web.Response:
    p = await routing.params(request, AuthTestParams)
    requester(request)
    return web.json_response({"authorized": "yes", "echo": p.echo})


@auth_required()
async def auth_role(request: web.Request) -> web.Response:
    p: RoleParams = parse(RoleParams, await read_params(request))
    return web.json_response(await svc.get_role(request.app[CTX], requester(request), p.group))


async def authorize(request: web.Request) -> web.Response:
    p: AuthorizeParams = parse(AuthorizeParams, await read_params(request))
    if p.type != "keypair":
        raise errors.InvalidAPIParameters("Unsupported authorization type")
    log.info("AUTH.AUTHORIZE(d:%s, u:%s, passwd:****, type:%s)", p.domain, p.username, p.type)
    ctx = request.app[CTX]
    got = await svc.authorize(ctx, p.domain, p.username, p.password,
                              client_address(request, ctx.config.auth.trusted_proxies))
    request[ACTOR] = Actor(got.access_key, got.user_uuid, got.email, got.role)  # who logged in, for the audit
    return web.json_response({"data": {"access_key": got.access_key, "secret_key": got.secret_key,
                                       "role": got.role, "status": got.status}})


async def signup(request: web.Request) -> web.Response:
    p: SignupParams = parse(SignupParams, await read_params(request))
    log.info("AUTH.SIGNUP(d:%s, email:%s, passwd:****)", p.domain, p.email)
    ctx = request.app[CTX]
    ak, sk = await svc.signup(ctx, svc.Signup(
        domain=p.domain, email=p.email, password=p.password, username=p.username,
        full_name=p.full_name, description=p.description,
    ), client_address(request, ctx.config.auth.trusted_proxies))
    return web.json_response({"access_key": ak, "secret_key": sk}, status=201)


@auth_required()
async def signout(request: web.Request) -> web.Response:
    p: SignoutParams = parse(SignoutParams, await read_params(request))
    r = requester(request)
    log.info("AUTH.SIGNOUT(d:%s, email:%s)", r.domain_name, p.email)
    await svc.signout(request.app[CTX], r, p.email, p.password)
    return web.json_response({})


@auth_required()
async def update_password(request: web.Request) -> web.Response:
    p: UpdatePasswordParams = parse(UpdatePasswordParams, await read_params(request))
    r = requester(request)
    log.info("AUTH.UPDATE_PASSWORD(d:%s, email:%s)", r.domain_name, r.email)
    try:
        await svc.update_password(request.app[CTX], r, p.old_password, p.new_password, p.new_password2)
    except svc.NewPasswordMismatch:
        return web.json_response({"error_msg": "new password mismatch"}, status=400)
    return web.json_response({})


@auth_required()
async def update_full_name(request: web.Request) -> web.Response:
    p: UpdateFullNameParams = parse(UpdateFullNameParams, await read_params(request))
    await svc.update_full_name(request.app[CTX], requester(request), p.full_name)
    return web.json_response({})


@auth_required()
async def get_ssh_keypair(request: web.Request) -> web.Response:
    pubkey = await svc.get_ssh_public_key(request.app[CTX], requester(request))
    return web.json_response({"ssh_public_key": pubkey})


@auth_required()
async def generate_ssh_keypair(request: web.Request) -> web.Response:
    pubkey, privkey = await svc.generate_ssh_keypair()
    await svc.store_ssh_keypair(request.app[CTX], requester(request), pubkey, privkey)
    return web.json_response({"ssh_public_key": pubkey, "ssh_private_key": privkey})


@auth_required()
async def upload_ssh_keypair(request: web.Request) -> web.Response:
    p: SSHKeypairParams = parse(SSHKeypairParams, await read_params(request))
    pubkey, privkey = svc.normalise_ssh_keypair(p.pubkey, p.privkey)
    await svc.store_ssh_keypair(request.app[CTX], requester(request), pubkey, privkey)
    return web.json_response({"ssh_public_key": pubkey, "ssh_private_key": privkey})


@auth_required()
async def rotate_keypair(request: web.Request) -> web.Response:
    p = await routing.params(request, RotateKeypairParams)
    got = await svc.rotate_keypair(request.app[CTX], requester(request), p.access_key)
    return web.json_response(Rotated(
        access_key=got.access_key, secret_key=got.secret_key, previous_access_key=got.previous_access_key,
        previous_expires_at=got.previous_expires_at.isoformat()).model_dump(), status=201)


def routes(app: web.Application) -> None:
    # Contracts for the OpenAPI document (routing.add); the models are the ones the handlers parse with.
    add, A = routing.add, routing.Answer
    ok = (A(200, "Done.", r.Empty),)
    for path, suffix in (("/auth", "_legacy"), ("/auth/test", "")):
        add(app, "GET", path, auth_test, operation_id=f"auth_test{suffix}", tag="auth", query=AuthTestParams,
            summary="Check a signed request; echoes `echo`.", answers=(A(200, "Authorized.", r.AuthTest),))
        add(app, "POST", path, auth_test, operation_id=f"auth_test_post{suffix}", tag="auth", body=AuthTestParams,
            summary="Check a signed request; echoes `echo`.", answers=(A(200, "Authorized.", r.AuthTest),))
    add(app, "GET", "/auth/role", auth_role, operation_id="auth_role", tag="auth", query=RoleParams,
        summary="The caller's global, domain and project roles.", answers=(A(200, "The roles.", r.Role),),
        problems=(errors.GroupNotFound,))
    add(app, "POST", "/auth/authorize", authorize, operation_id="authorize", tag="auth", body=AuthorizeParams,
        summary="Log in with a password: the user's keypair.", answers=(A(200, "The keypair.", r.Authorized),),
        problems=(errors.AuthorizationFailed, errors.TooManyRequests))
    add(app, "POST", "/auth/signup", signup, operation_id="signup", tag="auth", body=SignupParams,
        summary="Create an account (when the operator enables sign-up).",
        answers=(A(201, "The new keypair.", r.Credentials),),
        problems=(errors.SignupDisabled, errors.TooManyRequests, errors.ServerMisconfigured))
    add(app, "POST", "/auth/signout", signout, operation_id="signout", tag="auth", body=SignoutParams,
        summary="Deactivate the caller's own account.", answers=ok,
        problems=(errors.AuthorizationFailed, errors.GenericForbidden))
    add(app, "POST", "/auth/update-password", update_password, operation_id="update_password", tag="auth",
        body=UpdatePasswordParams, summary="Change the caller's password.",
        answers=(*ok, A(400, "The two new passwords differ.", r.PasswordMismatch)),
        problems=(errors.AuthorizationFailed, errors.InvalidAPIParameters))
    add(app, "POST", "/auth/rotate-keypair", rotate_keypair, operation_id="rotate_keypair", tag="auth",
        body=RotateKeypairParams, summary="Replace a keypair by a new one; the old one works for a grace period.",
        answers=(A(201, "The new keypair.", Rotated),),
        problems=(errors.GenericForbidden, errors.ObjectNotFound, errors.InvalidAPIParameters))
    add(app, "POST", "/auth/update-full-name", update_full_name, operation_id="update_full_name", tag="auth",
        body=UpdateFullNameParams, summary="Change the caller's full name.", answers=ok)
    add(app, "GET", "/auth/ssh-keypair", get_ssh_keypair, operation_id="get_ssh_keypair", tag="auth",
        summary="The caller's SSH public key.", answers=(A(200, "The public key.", r.SSHPublicKey),))
    add(app, "PATCH", "/auth/ssh-keypair", generate_ssh_keypair, operation_id="generate_ssh_keypair", tag="auth",
        summary="Generate and store a new SSH keypair.", answers=(A(200, "The keypair.", r.SSHKeypair),))
    add(app, "POST", "/auth/ssh-keypair", upload_ssh_keypair, operation_id="upload_ssh_keypair", tag="auth",
        body=SSHKeypairParams, summary="Store the given SSH keypair.",
        answers=(A(200, "The keypair.", r.SSHKeypair),))
