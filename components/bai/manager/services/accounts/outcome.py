"""How an account write ends: ``Outcome`` (the original's ``{ok, msg}`` payload and the written
row), ``Refused`` for the not-found / conflict answers, and ``write`` that runs one transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from bai.manager.services.context import ManagerContext
from bai.manager.services.outcome import Outcome


class Refused(Exception):
    """The write cannot happen (no such object, a name taken, something still depends on it):
    the transaction is rolled back and the caller gets ``ok=False`` with this message."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


def integrity_message(exc: IntegrityError) -> str:
    """PostgreSQL's own words for a constraint a concurrent write won (a key taken, a name that
    refers to nothing): its DETAIL line when the driver gives one."""
    cause = getattr(exc.orig, "__cause__", None) or exc.orig
    detail = getattr(cause, "detail", None) or getattr(cause, "constraint_name", None)
    return f"integrity error: {detail or 'a constraint was violated'}"


async def write(ctx: ManagerContext, body: Callable[[AsyncConnection], Awaitable[Any]],
                *, invalidates_auth: bool = False) -> Outcome:
    """Run ``body`` in one transaction; its return value is the outcome's row. ``invalidates_auth``:
    the write may change who can authenticate or as what (roles, keypairs, allow lists), so the
    cached requesters are dropped once it is committed."""
    try:
        async with ctx.db.begin() as conn:
            row = await body(conn)
    except Refused as exc:
        return Outcome(False, exc.msg)
    except IntegrityError as exc:
        return Outcome(False, integrity_message(exc))
    if invalidates_auth:
        ctx.requesters.invalidate()
    return Outcome(True, "success", row)
