"""The audit log: who did what, when, from where, and how it ended, for every GraphQL mutation,
admin REST call and failed authentication (beyond the original).

Requests never wait for the log. They hand an :class:`AuditEntry` to :meth:`AuditLog.record`,
which only appends to a bounded in-memory queue; one writer task (:meth:`AuditLog.run`) inserts
what is queued in batches, usually within milliseconds of the response. When PostgreSQL is
unreachable the writer keeps the entries and retries with backoff; requests go on unhindered.
The queue holds at most ``[audit] queue-size`` entries: past that the OLDEST waiting entry is
dropped. Dropping rather than blocking, because a request must never fail or stall for its audit
row (the database being down is exactly when requests must not pile up behind it); the oldest,
because in a flood (a password-guessing run, say) the entries that matter most to an operator
are the latest, such as the administrator's own actions taken during it. Nothing is lost
silently: drops are counted, logged, and written to the log itself as one ``audit.dropped``
entry as soon as the database answers again.

Secrets never reach the log: :func:`redact` replaces the value of every argument whose name
says password, secret, token, private key or credential, at any depth.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from bai.common.tasks import raise_if_cancelling, stop_tasks
from bai.manager import errors
from bai.manager.store import audit as store
from bai.manager.store.keypairs import Requester

from .context import ManagerContext
from .gql_queries import Page, check_page, reads_all
from .outages import is_transient

log = logging.getLogger(__name__)

REDACTED = "***"
#: An argument whose lower-cased name contains one of these has its value replaced by REDACTED.
SECRET_WORDS = ("password", "passwd", "secret", "token", "privkey", "private_key", "credential", "otp")
#: Stored arguments are cut down to their key names past this many characters of JSON.
MAX_ARGS_CHARS = 4096
MAX_TEXT = 1024  # target and message
MAX_DEPTH = 8
#: Entries written per INSERT.
BATCH = 500
#: Entries deleted per statement by the retention purge (keeps each transaction short).
PURGE_BATCH = 10_000

OK, FAILED, DENIED = "ok", "failed", "denied"


@dataclass(frozen=True)
class Actor:
    access_key: str
    user_id: uuid.UUID | None
    email: str | None
    role: str | None

    @classmethod
    def of(cls, req: Requester) -> Actor:
        return cls(req.access_key, req.user_uuid, req.email, req.role)


@dataclass(frozen=True)
class AuditEntry:
    kind: str  # graphql | rest | system
    operation: str
    outcome: str  # ok | failed | denied
    actor: Actor | None = None
    client_ip: str | None = None
    target: str | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    message: str | None = None
    duration_ms: float | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def row(self) -> dict[str, Any]:
        a = self.actor
        return {
            "created_at": self.created_at, "kind": self.kind, "operation": self.operation[:256],
            "outcome": self.outcome, "access_key": a.access_key if a else None, "user_id": a.user_id if a else None,
            "email": a.email if a else None, "role": a.role if a else None,
            "client_ip": (self.client_ip or "")[:64] or None, "target": _clip(self.target),
            "args": compact(self.args), "message": _clip(self.message),
            "duration_ms": None if self.duration_ms is None else round(self.duration_ms, 3),
        }


def _storable(text: str) -> str:
    """Text PostgreSQL stores: no NUL (text and jsonb refuse it) and no lone surrogate (not
    UTF-8); clients may send either, and one bad entry must not cost a batch its place."""
    return text.replace("\x00", "\\0").encode("utf-8", "replace").decode("utf-8")


def _clip(text: str | None) -> str | None:
    if text is None:
        return None
    text = _storable(text)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def is_secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def redact(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-ready data with every secret-named entry's value replaced."""
    if depth > MAX_DEPTH:
        return "…"
    if isinstance(value, Mapping):
        return {_storable(str(k)): REDACTED if is_secret(str(k)) else redact(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact(v, depth + 1) for v in value]
    if value is None or isinstance(value, (bool, int)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    return _storable(str(value))  # including NaN and infinities, which JSON cannot hold


def compact(args: Mapping[str, Any]) -> dict[str, Any]:
    """Redacted arguments, or only their names when they are too long to keep."""
    clean = redact(args)
    if len(json.dumps(clean, default=str)) <= MAX_ARGS_CHARS:
        return dict(clean)
    return {"_truncated": True, "_keys": sorted(clean)[:100]}


def describe_target(pairs: Mapping[str, Any]) -> str | None:
    """``k=v, ...`` of the arguments that name what an operation acts on (secrets redacted)."""
    parts = [f"{k}={REDACTED if is_secret(k) else v}" for k, v in pairs.items()
             if v is not None and not isinstance(v, (Mapping, list, tuple))]
    return ", ".join(parts) or None


def outcome_of_status(status: int) -> str:
    if status < 400:
        return OK
    return DENIED if status in (401, 403, 429) else FAILED


def outcome_of_error(exc: BaseException) -> str:
    """A privilege or authentication failure is a denial; anything else a failure."""
    if isinstance(exc, errors.ApiError):
        return outcome_of_status(exc.status)
    return FAILED


def message_of_error(exc: BaseException) -> str:
    if isinstance(exc, errors.ApiError):
        return f"{exc.status} {exc.error_type.rsplit('/', 1)[-1]}: {exc.msg or exc.title}"
    if isinstance(exc, (ValueError, LookupError, PermissionError)):
        return str(exc)
    return type(exc).__name__  # an unexpected error's text may hold database details


class AuditLog:
    """The bounded queue and its single writer (see the module's docstring)."""

    def __init__(self, db: AsyncEngine, queue_size: int, *, retry_delay: float = 0.2,
                 max_retry_delay: float = 5.0, write_timeout: float = 10.0) -> None:
        self._db = db
        self._capacity = queue_size
        self._queue: deque[AuditEntry] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._retry_delay, self._max_retry_delay = retry_delay, max_retry_delay
        self._write_timeout = write_timeout
        #: Entries dropped since start-up, and those not yet reported in the log itself.
        self.dropped = 0
        self._unreported = 0
        self.written = 0

    @property
    def pending(self) -> int:
        return len(self._queue)

    def record(self, entry: AuditEntry) -> None:
        """Queue ``entry``; never blocks, never raises."""
        if len(self._queue) >= self._capacity:
            self._queue.popleft()
            self._count_dropped(1)
        self._queue.append(entry)
        self._idle.clear()
        self._wakeup.set()

    def _count_dropped(self, n: int) -> None:
        if self._unreported == 0:
            log.warning("audit log: queue full (queue-size %d), dropping the oldest entries", self._capacity)
        self.dropped += n
        self._unreported += n

    async def drain(self, within: float) -> bool:
        """Wait until everything queued is written (False when ``within`` seconds ran out first)."""
        try:
            async with asyncio.timeout(within):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        """The writer: forever, insert what is queued; keep it and retry while the database is away."""
        delay = self._retry_delay
        failing_since: float | None = None
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
            try:
                await self._write(batch)
            except Exception as exc:
                raise_if_cancelling()
                if not is_transient(exc):
                    await self._write_one_by_one(batch)
                    continue
                self._requeue(batch)
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("audit log: the database is unreachable (%r); keeping entries and retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_retry_delay)
                continue
            if failing_since is not None:
                log.info("audit log: writing again after %.1f s", time.monotonic() - failing_since)
                failing_since = None
            delay = self._retry_delay

    async def _write(self, batch: list[AuditEntry]) -> None:
        rows = [e.row() for e in batch]
        unreported = self._unreported
        if unreported:
            rows.append(AuditEntry(
                kind="system", operation="audit.dropped", outcome=FAILED, args={"count": unreported},
                message=f"{unreported} audit entries were dropped: more than queue-size ({self._capacity}) "
                        "waited for the database",
            ).row())
        async with asyncio.timeout(self._write_timeout):
            async with self._db.begin() as conn:
                await store.insert_entries(conn, rows)
        self._unreported -= unreported
        self.written += len(batch)

    async def _write_one_by_one(self, batch: list[AuditEntry]) -> None:
        """After a batch the database refused (not an outage): each entry on its own, so that
        only an entry that cannot be stored is lost."""
        for entry in batch:
            try:
                await self._write([entry])
            except Exception:
                raise_if_cancelling()
                log.error("audit log: an entry could not be written and is dropped: %s %s",
                          entry.kind, entry.operation, exc_info=True)
                self._count_dropped(1)

    def _requeue(self, batch: list[AuditEntry]) -> None:
        """Put a batch that could not be written back in front, the oldest dropped past capacity."""
        self._queue.extendleft(reversed(batch))
        excess = len(self._queue) - self._capacity
        for _ in range(max(excess, 0)):
            self._queue.popleft()
        if excess > 0:
            self._count_dropped(excess)


_KEY = "audit_log"


def audit_of(ctx: ManagerContext) -> AuditLog | None:
    """The manager's audit log (None where none runs, e.g. an app built for one test)."""
    found = ctx.extra.get(_KEY)
    return found if isinstance(found, AuditLog) else None


def record(ctx: ManagerContext, entry: AuditEntry) -> None:
    audit = audit_of(ctx)
    if audit is not None:
        audit.record(entry)


@contextlib.asynccontextmanager
async def running(ctx: ManagerContext, drain_within: float = 5.0) -> AsyncIterator[AuditLog]:
    """The audit log of ``ctx`` and its writer task, from start-up to shutdown (where what is
    still queued gets ``drain_within`` seconds to reach the database)."""
    audit = AuditLog(ctx.db, ctx.config.audit.queue_size)
    ctx.extra[_KEY] = audit
    writer = asyncio.create_task(audit.run(), name="audit-writer")
    try:
        yield audit
    finally:
        if not await audit.drain(drain_within):
            log.warning("audit log: %d entries not written at shutdown", audit.pending)
        await stop_tasks([writer])
        ctx.extra.pop(_KEY, None)


# ------------------------------------------------------------------ retention

async def purge_expired(ctx: ManagerContext) -> int:
    """Delete the entries older than ``[audit] retention``; how many went."""
    cutoff = datetime.now(UTC) - timedelta(seconds=ctx.config.audit.retention)
    total = 0
    while True:
        async with ctx.db.begin() as conn:
            n = await store.purge_before(conn, cutoff, PURGE_BATCH)
        total += n
        if n < PURGE_BATCH:
            return total


async def purge_expired_forever(ctx: ManagerContext) -> None:
    while True:
        try:
            purged = await purge_expired(ctx)
            if purged:
                log.info("audit log: %d entries older than the retention purged", purged)
        except Exception:
            raise_if_cancelling()
            log.warning("audit log purge failed; retrying at the next interval", exc_info=True)
        await asyncio.sleep(ctx.config.audit.purge_interval)


# ------------------------------------------------------------------ reading

def require_reader(req: Requester) -> None:
    """Superadmins read the log, and monitors (who read everything and write nothing); domain
    admins do not: entries span domains and carry other users' addresses."""
    if not reads_all(req):
        raise errors.GenericForbidden("superadmin or monitor privilege required")


async def audit_page(db: AsyncEngine, req: Requester, *, limit: int, offset: int, max_page_size: int,
                     filter_: str | None, order: str | None) -> Page:
    require_reader(req)
    check_page(limit, offset, max_page_size)
    async with db.connect() as conn:
        rows, total = await store.audit_page(conn, filter_=filter_, order=order, limit=limit, offset=offset)
    return Page(rows, total)
