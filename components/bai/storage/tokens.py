"""The client-facing API's authorisation: short-lived HS256 JWTs the manager-facing API mints.

Claims are the original's (op, volume, vfid, relpath, archive/unmanaged_path or session/size,
exp), so tokens and the official client's use of them stay interchangeable.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import InvalidParams, Unauthorized

ALGORITHM = "HS256"
MAX_TOKEN_CHARS = 8192


class _Claims(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    volume: str
    vfid: str
    relpath: str


class DownloadClaims(_Claims):
    op: Literal["download"] = "download"
    archive: bool = False
    unmanaged_path: str | None = None


class UploadClaims(_Claims):
    op: Literal["upload"] = "upload"
    session: str = Field(pattern=r"^[0-9a-f]{32}$")
    size: int = Field(ge=0)


C = TypeVar("C", bound=_Claims)


def mint(claims: _Claims, secret: str, lifetime: float) -> str:
    payload: dict[str, Any] = claims.model_dump()
    payload["exp"] = datetime.now(UTC) + timedelta(seconds=lifetime)
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def verify(token: str | None, secret: str, model: type[C]) -> C:
    if not token:
        raise InvalidParams("the 'token' query parameter is required")
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthorized("invalid token")
    try:
        payload = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp"]})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the token has expired; request a new one") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("invalid token") from None
    try:
        return model.model_validate(payload)
    except ValidationError:
        raise Unauthorized("the token is not valid for this operation") from None
