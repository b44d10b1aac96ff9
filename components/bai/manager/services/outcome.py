"""What a GraphQL mutation's service answers: the original's ``{ok, msg}`` payload and the object
it wrote or started (a row, a registry entry, a background-task id), for the api to shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """``ok`` false with ``msg`` for a not-found or a conflict; ``row`` what was written, if any."""

    ok: bool
    msg: str
    row: Any = None
