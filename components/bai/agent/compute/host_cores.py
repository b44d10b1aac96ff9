"""Cores pinned by the agents of one host, shared through a claims directory, so that two agents
on one machine (their ``reserved-cores`` not splitting the cores between them) never pin kernels
to the same core.

Each agent keeps one file ``<dir>/<agent id>.json`` -- ``{"pid": ..., "cores": [...]}``, the
cores its kernels hold whole -- and rewrites it whenever that set changes. Choosing cores and
publishing the choice happen under an exclusive ``flock`` on ``<dir>/.lock``, so two agents
allocating at once cannot both take a core. A claim whose process is gone is ignored (agents on
one host share a PID namespace). The directory defaults to ``/run/bai/pinned-cores``
(``[plugins.cpu] pinned-cores-dir``); where it cannot be used, coordination is off, with a warning.

Not covered: while an agent restarts, its claim lapses (its process is gone) although its
containers stay pinned; another agent pinning in that gap may share those cores until the
restarted agent republishes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_DIR = Path("/run/bai/pinned-cores")
#: A claims file is a few hundred bytes; anything larger is not ours.
MAX_CLAIM_BYTES = 64 * 1024
_OWNER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's process: alive
        return True
    return True


class HostCoreClaims:
    def __init__(self, owner: str, directory: Path = DEFAULT_DIR) -> None:
        if not _OWNER_RE.fullmatch(owner):
            raise ValueError(f"agent id {owner!r} cannot name a claims file")
        self.owner = owner
        self.directory = directory
        self.own_file = directory / f"{owner}.json"
        directory.mkdir(parents=True, exist_ok=True, mode=0o755)
        self._lock_fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        # an agent that is never cleaned up (tests in one process) must not leave a live claim
        self._finalizer = weakref.finalize(self, _drop, self.own_file, self._lock_fd)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def others(self) -> dict[int, str]:
        """``{core: agent id}`` pinned by the other live agents of this host (call locked)."""
        taken: dict[int, str] = {}
        for path in sorted(self.directory.glob("*.json")):
            if path == self.own_file:
                continue
            try:
                if path.stat().st_size > MAX_CLAIM_BYTES:
                    continue
                claim = json.loads(path.read_text())
                pid, cores = int(claim["pid"]), [int(c) for c in claim["cores"]]
            except (OSError, ValueError, KeyError, TypeError):
                continue   # being replaced, or not a claim: nothing to honour
            if _alive(pid):
                taken.update(dict.fromkeys(cores, path.stem))
        return taken

    def publish(self, cores: Iterable[int]) -> None:
        """Replace this agent's claim (call locked)."""
        tmp = self.own_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "cores": sorted(set(cores))}))
        os.replace(tmp, self.own_file)

    def close(self) -> None:
        """The agent stops: its claim goes (its pinned containers keep their cpusets)."""
        if not self._finalizer.alive:
            return
        with contextlib.suppress(OSError):
            with self.locked():
                self.own_file.unlink(missing_ok=True)
        self._finalizer()


def _drop(own_file: Path, lock_fd: int) -> None:
    with contextlib.suppress(OSError):
        own_file.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        os.close(lock_fd)


def open_claims(owner: str, directory: Path = DEFAULT_DIR) -> HostCoreClaims | None:
    """The claims of this host, or None (with a warning) where the directory cannot be used."""
    try:
        return HostCoreClaims(owner, directory)
    except (OSError, ValueError) as exc:
        log.warning("pinned cores are not coordinated with other agents on this host (%s): give each agent "
                    "its own cores with [resource] reserved-cores", exc)
        return None
