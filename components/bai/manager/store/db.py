"""Engine creation; every query module takes an AsyncConnection from here.

Connections that sat idle are pinged before use, so a PostgreSQL restart costs no request more
than the reconnect; :func:`is_transient` tells the errors of a database (or Redis) that is away for a
moment from real failures, and :func:`retry_transient` retries an operation over such a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import asyncpg
import redis.exceptions as redis_exc
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bai.manager.config import DBConfig

log = logging.getLogger(__name__)
T = TypeVar("T")


#: A pooled connection idle for longer than this is pinged before use (see ``_ping_if_idle``).
PING_IF_IDLE_FOR = 1.0


#: Seconds to open one database connection (over all the hosts of a multi-host ``[db] addr``).
CONNECT_TIMEOUT = 10.0
#: Seconds one statement may run.
COMMAND_TIMEOUT = 60.0


def create_engine(cfg: DBConfig, timelines: TimelineRecord | None = None) -> AsyncEngine:
    """``timelines``: where managers share the newest timeline they wrote on (several hosts only;
    see :class:`WritableHostConnector`)."""
    options: dict[str, Any] = {}
    connector = WritableHostConnector(cfg, timelines=timelines) if len(cfg.hosts) > 1 else None
    if connector is not None:
        options["async_creator"] = connector
    else:
        options["connect_args"] = {"timeout": CONNECT_TIMEOUT, "command_timeout": COMMAND_TIMEOUT}
    engine = create_async_engine(
        cfg.dsn,
        pool_size=cfg.pool_size,
        max_overflow=cfg.max_overflow,
        pool_recycle=3600,
        json_serializer=_dumps,
        **options,
    )
    _ping_if_idle(engine)
    if connector is not None:
        _fence_pooled(engine, connector)
        _CONNECTORS[engine.sync_engine] = connector
    return engine


#: The multi-host connector behind each engine that has one (see :func:`following_timelines`).
_CONNECTORS: weakref.WeakKeyDictionary[Any, WritableHostConnector] = weakref.WeakKeyDictionary()
#: Seconds between two reads of the shared timeline record by :func:`following_timelines`.
TIMELINE_REFRESH = 2.0


class NoWritableDatabase(ConnectionError):
    """None of the database hosts accepts writes right now (the primary is down and no standby
    has been promoted yet): a transient outage, answered 503."""


class TimelineRecord(Protocol):
    """The newest timeline written on, per database cluster, shared by every manager (etcd)."""

    async def newest(self, system_id: str) -> int:
        """0 when none is recorded."""

    async def record(self, system_id: str, timeline: int) -> None:
        """Keeps the larger of the recorded timeline and ``timeline``."""


#: The cluster a writable server belongs to and the timeline it writes on (a promoted standby
#: writes on a new, higher timeline than the primary it followed).
POSITION_SQL = ("select system_identifier::text, substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) "
                "from pg_control_system()")
#: Seconds the shared timeline record may take before a connection goes ahead without it.
RECORD_TIMEOUT = 1.0


class WritableHostConnector:
    """Opens connections to whichever of a primary/standby set accepts writes.

    asyncpg's own multi-host connect bounds all hosts together by one timeout, so a primary whose
    host went silent (dropping packets) would use it all and the promoted standby would never be
    reached; here each host still to try gets an equal share of what is left of it. The host that
    last accepted a connection is tried first, so after a promotion new connections go straight
    to the new primary.

    Fencing: an old primary that comes back after its standby was promoted accepts writes too,
    and writing there would split the database in two. A promotion starts a new timeline, so a
    writable host on an older timeline than the newest one any manager wrote on (``timelines``,
    shared through etcd, and what this process saw) is refused as stale, naming it."""

    def __init__(self, cfg: DBConfig, timeout: float = CONNECT_TIMEOUT,
                 timelines: TimelineRecord | None = None) -> None:
        self._hosts = cfg.hosts
        self._params: dict[str, Any] = {"user": cfg.user, "password": cfg.password or None,
                                        "database": cfg.name, "command_timeout": COMMAND_TIMEOUT}
        self._timeout = timeout
        self._first = 0
        self._timelines = timelines
        #: system identifier -> the newest timeline this process wrote on or heard of
        self._seen: dict[str, int] = {}
        #: the (system identifier, timeline) each open connection writes on
        self._positions: weakref.WeakKeyDictionary[asyncpg.Connection, tuple[str, int]] = (
            weakref.WeakKeyDictionary())

    async def __call__(self) -> asyncpg.Connection:
        loop = asyncio.get_running_loop()
        ends = loop.time() + self._timeout
        count = len(self._hosts)
        problems: list[str] = []
        for attempt in range(count):
            index = (self._first + attempt) % count
            host, port = self._hosts[index]
            share = (ends - loop.time()) / (count - attempt)
            if share <= 0:
                break
            try:
                conn = await asyncpg.connect(host=host, port=port, timeout=share,
                                             target_session_attrs="read-write", **self._params)
            except (OSError, TimeoutError, asyncpg.TargetServerAttributeNotMatched,
                    asyncpg.CannotConnectNowError) as exc:
                problems.append(f"{host}:{port}: {_why(exc)}")
                continue
            try:
                stale_or_position = await self._stale(conn)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                conn.terminate()
                problems.append(f"{host}:{port}: {_why(exc)}")
                continue
            except BaseException:
                conn.terminate()
                raise
            if isinstance(stale_or_position, str):
                stale = stale_or_position
                log.error("database: %s:%d is a stale primary (%s): not writing there; stop it, or make it a "
                          "replica of the new primary", host, port, stale)
                problems.append(f"{host}:{port}: a stale primary ({stale})")
                await conn.close()
                continue
            if index != self._first:
                log.warning("database: %s:%d accepts writes (connecting there first from now on)", host, port)
                self._first = index
            self._positions[conn] = stale_or_position
            return conn
        raise NoWritableDatabase("no database host accepts writes: " + "; ".join(problems or ["timed out"]))

    def outdated(self, conn: asyncpg.Connection) -> str | None:
        """Why an open connection must no longer be written on (its server's timeline is older
        than the newest one known now), or None."""
        position = self._positions.get(conn)
        if position is None:
            return None
        system_id, timeline = position
        newest = self._seen.get(system_id, 0)
        return f"timeline {timeline}, while the database was written on timeline {newest}" if timeline < newest else None

    async def refresh(self) -> None:
        """Learn the newest timelines other managers wrote on (a promotion this process has not
        connected to yet), so that its pooled connections to an old primary are given up."""
        if self._timelines is None:
            return
        for system_id in list(self._seen):
            async with asyncio.timeout(RECORD_TIMEOUT):
                newest = await self._timelines.newest(system_id)
            if newest > self._seen.get(system_id, 0):
                log.warning("database: another manager writes on timeline %d (a standby was promoted)", newest)
                self._seen[system_id] = newest

    async def _stale(self, conn: asyncpg.Connection) -> str | tuple[str, int]:
        """Why the writable server behind ``conn`` must not be written on, or its (system
        identifier, timeline) (after recording the timeline when it is the newest yet)."""
        system_id, wal_file = await conn.fetchrow(POSITION_SQL)
        timeline = int(wal_file, 16)
        newest = self._seen.get(system_id, 0)
        if self._timelines is not None:
            try:
                async with asyncio.timeout(RECORD_TIMEOUT):
                    newest = max(newest, await self._timelines.newest(system_id))
            except Exception as exc:  # etcd away: what this process saw still fences
                log.warning("database: the shared timeline record is unreachable (%r)", exc)
        if timeline < newest:
            self._seen[system_id] = newest  # also fences this process's pooled connections to it
            return f"timeline {timeline}, while the database was written on timeline {newest}"
        if timeline > self._seen.get(system_id, 0):
            self._seen[system_id] = timeline
            if self._timelines is not None and timeline > newest:
                try:
                    async with asyncio.timeout(RECORD_TIMEOUT):
                        await self._timelines.record(system_id, timeline)
                except Exception as exc:
                    log.warning("database: cannot record timeline %d in the shared record (%r)", timeline, exc)
        return system_id, timeline


def _fence_pooled(engine: AsyncEngine, connector: WritableHostConnector) -> None:
    """A pooled connection opened before a promotion still writes on the old primary when that
    primary did not die (a network partition; an operator promoting by hand): at checkout, one
    whose timeline is older than the newest known is discarded, and the pool opens another through
    ``connector``, which refuses the old primary. An in-memory comparison: free on the hot path."""

    @event.listens_for(engine.sync_engine.pool, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        why = connector.outdated(dbapi_connection.driver_connection)
        if why is not None:
            log.error("database: giving up a pooled connection to a stale primary (%s)", why)
            raise sa_exc.DisconnectionError(f"pooled connection to a stale primary ({why})")


@contextlib.asynccontextmanager
async def following_timelines(engine: AsyncEngine, interval: float = TIMELINE_REFRESH) -> AsyncIterator[None]:
    """While open, reads the shared timeline record every ``interval`` seconds (engines with
    several hosts only), so that a promotion another manager wrote on fences this one's pool too."""
    connector = _CONNECTORS.get(engine.sync_engine)
    if connector is None:
        yield
        return

    async def follow() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await connector.refresh()
            except Exception as exc:  # etcd away: what this process saw still fences
                log.warning("database: the shared timeline record is unreachable (%r)", exc)

    task = asyncio.create_task(follow(), name="db-timelines")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _why(exc: BaseException) -> str:
    if isinstance(exc, asyncpg.TargetServerAttributeNotMatched):
        return "read-only (a standby)"
    if isinstance(exc, TimeoutError):
        return "no connection in time"
    return str(exc) or type(exc).__name__


def _ping_if_idle(engine: AsyncEngine) -> None:
    """Pre-ping, but only connections that sat idle: a connection the server dropped (restart,
    failover) is replaced before it is used, while a busy pool (the execute hot path returns and
    takes connections back within milliseconds) pays no extra round trip. A connection that
    breaks while busy invalidates the pool (SQLAlchemy's disconnect handling), and callers that
    matter retry (:func:`retry_transient`)."""
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    @event.listens_for(pool, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_IF_IDLE_FOR:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and checks out (or opens) another.
            raise sa_exc.DisconnectionError(f"pooled connection is dead: {exc!r}") from exc


def _dumps(value: object) -> str:
    import json

    return json.dumps(value, default=str)


def is_transient(exc: BaseException) -> bool:
    """True for errors that mean "the database or Redis is unreachable right now"."""
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated or isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return True
        orig = exc.orig
        if orig is not None and is_transient(orig):
            return True
        # asyncpg's own classes, wrapped by SQLAlchemy: 08xxx connection exceptions, 57Pxx shutdown,
        # and a transaction PostgreSQL aborted to break a deadlock or a serialization conflict
        # (40P01, 40001): all succeed when simply tried again.
        sqlstate = str(getattr(orig, "sqlstate", "") or getattr(getattr(orig, "__cause__", None), "sqlstate", "") or "")
        return sqlstate.startswith(("08", "57P", "40P01", "40001"))
    if isinstance(exc, (redis_exc.ConnectionError, redis_exc.TimeoutError)):
        return True
    if isinstance(exc, sa_exc.TimeoutError):  # pool exhausted while connections hang
        return True
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return True
    cause = exc.__cause__
    return cause is not None and cause is not exc and is_transient(cause)


def is_deadlock(exc: BaseException) -> bool:
    """True for a transaction PostgreSQL aborted to break a deadlock (SQLSTATE 40P01)."""
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)
    return state == "40P01"


async def try_advisory_xact_lock(conn: AsyncConnection, lock_id: int) -> bool:
    """Take PostgreSQL advisory lock ``lock_id`` until the transaction ends; False if another holds it."""
    return bool(await conn.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(lock_id))))


async def retry_transient(op: Callable[[], Awaitable[T]], *, attempts: int, what: str,
                          first_delay: float = 0.25, max_delay: float = 3.0) -> T:
    """Run ``op``; on a transient error try again (exponential back-off), ``attempts`` times in
    all, then let the last error through."""
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return await op()
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            log.warning("%s: transient error (attempt %d/%d, retrying in %.2f s): %r",
                        what, attempt, attempts, delay, exc)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")
