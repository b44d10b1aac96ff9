"""Session dependencies as the scheduler sees them (pure: no I/O).

A session waits, PENDING, until every session it depends on has TERMINATED with result SUCCESS
(the original's ``dependencies`` predicate and message). Beyond the original, which leaves such
a session waiting for ever, one whose dependency ended any other way (CANCELLED, or TERMINATED
with a result other than SUCCESS) is cancelled with ``dependency-failed (<its name>)``, its
id and end in ``status_data``; the cancellation cascades down a chain within one scheduling pass."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

__all__ = ["CANCEL_REASON", "Dependency", "cancel_data", "cancel_reason", "failed_dependencies",
           "waiting_message"]

#: status_info (and the session_cancelled event's reason) of a session whose dependency failed
#: starts with this; the dependency's name follows in parentheses.
CANCEL_REASON = "dependency-failed"


def cancel_reason(dep: Dependency) -> str:
    return f"{CANCEL_REASON} ({dep.name})"


@dataclass(frozen=True)
class Dependency:
    id: uuid.UUID
    name: str
    status: str
    result: str

    @property
    def succeeded(self) -> bool:
        return self.status == "TERMINATED" and self.result == "SUCCESS"

    @property
    def failed(self) -> bool:
        """Ended for good without success: it never will succeed."""
        return self.status == "CANCELLED" or (self.status == "TERMINATED" and self.result != "SUCCESS")


def waiting_message(deps: list[Dependency]) -> str | None:
    """The predicate's failure message (the original's wording), None when all succeeded."""
    waiting = [d for d in deps if not d.succeeded]
    if not waiting:
        return None
    return "Waiting dependency sessions to finish as success. ({})".format(
        ", ".join(f"{d.name} ({d.id})" for d in waiting))


def failed_dependencies(deps_of: dict[uuid.UUID, list[Dependency]]) -> dict[uuid.UUID, Dependency]:
    """The pending sessions (keys of ``deps_of``) to cancel, each with the dependency that failed
    it. A session cancelled here fails the pending sessions that depend on it in turn."""
    doomed: dict[uuid.UUID, Dependency] = {}
    changed = True
    while changed:  # a fixpoint: at most one round per link of the longest chain
        changed = False
        for sid, deps in deps_of.items():
            if sid in doomed:
                continue
            for dep in deps:
                if dep.failed:
                    doomed[sid] = dep
                elif dep.id in doomed:  # pending too, and cancelled just now
                    doomed[sid] = Dependency(dep.id, dep.name, "CANCELLED", "UNDEFINED")
                else:
                    continue
                changed = True
                break
    return doomed


def cancel_data(dep: Dependency) -> dict[str, Any]:
    """status_data of a session cancelled because of ``dep``."""
    return {
        "error": {"src": "scheduler", "name": "DependencyFailed",
                  "repr": f"the dependency session {dep.name} ({dep.id}) ended {dep.status} "
                          f"with result {dep.result}"},
        "dependency": {"id": str(dep.id), "name": dep.name, "status": dep.status, "result": dep.result},
    }
