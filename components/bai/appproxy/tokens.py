"""Short-lived HS256 JWTs, three kinds, each checked for its own purpose:

* the *token* ``/v2/conf`` mints for the manager: which service (host, port) of which session, for
  which user, signed with ``jwt-encrypt-key``, valid ``token-ttl`` seconds;
* the *ticket* ``/v2/proxy/auth`` puts in the redirect to a circuit (30 s, one circuit);
* the *cookie* the circuit then sets in the browser (``cookie-ttl``, one circuit, one user).

Tickets and cookies are signed with ``permit-hash-key``; a ``typ`` claim keeps one kind from
being used as another.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import Forbidden, InvalidParams

ALGORITHM = "HS256"
MAX_TOKEN_CHARS = 4096
TICKET_TTL = 30.0


class SessionInfo(BaseModel):
    """``session`` of a /v2/conf body (the original's keys)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    id: uuid.UUID
    user_uuid: uuid.UUID
    group_id: uuid.UUID | None = None
    access_key: str = Field(max_length=64)
    domain_name: str = Field("default", max_length=64)


class ServiceClaims(BaseModel):
    """What a /v2/conf token grants: ``user`` may reach ``kernel_host:kernel_port`` of ``session``."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    typ: Literal["service"] = "service"
    session: uuid.UUID
    user: uuid.UUID
    access_key: str
    kernel_host: str = Field(min_length=1, max_length=255)
    kernel_port: int = Field(ge=1, le=65535)
    login_session_token: str | None = None


class CircuitClaims(BaseModel):
    """A ticket's or a cookie's: ``user`` may use ``circuit`` of ``session``."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    typ: Literal["ticket", "cookie"]
    circuit: uuid.UUID
    session: uuid.UUID
    user: uuid.UUID
    exp: float = 0.0


def mint(claims: BaseModel, key: str, lifetime: float) -> str:
    payload: dict[str, Any] = claims.model_dump(mode="json")
    payload["exp"] = int(time.time() + lifetime)
    return jwt.encode(payload, key, algorithm=ALGORITHM)


def _decode(token: str | None, key: str) -> dict[str, Any]:
    if not token:
        raise InvalidParams("the token is missing")
    if len(token) > MAX_TOKEN_CHARS:
        raise Forbidden("invalid token")
    try:
        payload: dict[str, Any] = jwt.decode(token, key, algorithms=[ALGORITHM], options={"require": ["exp"]})
    except jwt.ExpiredSignatureError:
        raise Forbidden("the token has expired; open the app again") from None
    except jwt.InvalidTokenError:
        raise Forbidden("invalid token") from None
    return payload


def verify_service(token: str | None, key: str) -> ServiceClaims:
    try:
        return ServiceClaims.model_validate(_decode(token, key))
    except ValidationError:
        raise Forbidden("invalid token") from None


def verify_circuit(token: str | None, key: str, typ: Literal["ticket", "cookie"]) -> CircuitClaims:
    try:
        claims = CircuitClaims.model_validate(_decode(token, key))
    except ValidationError:
        raise Forbidden("invalid token") from None
    if claims.typ != typ:
        raise Forbidden("invalid token")
    return claims
