"""The pure decisions behind the idle/lifetime checker and session dependencies."""

from __future__ import annotations

import uuid

from bai.manager.services.idle import ACCESS_KEEP_SECONDS, IDLE_TIMEOUT, LIFETIME_EXCEEDED, Limited, expired
from bai.manager.services.scheduling.dependencies import (
    Dependency,
    cancel_reason,
    failed_dependencies,
    waiting_message,
)

NOW = 1_000_000_000.0


def limited(**kw: object) -> Limited:
    base: dict[str, object] = {"id": uuid.uuid4(), "session_type": "interactive", "running_since": NOW - 100,
                               "started": NOW - 100, "idle_timeout": 0, "max_lifetime": 0}
    base.update(kw)
    return Limited(**base)  # type: ignore[arg-type]


def test_idle_counts_from_the_latest_of_activity_and_running() -> None:
    s = limited(idle_timeout=60)
    assert expired(s, None, NOW) == IDLE_TIMEOUT  # running 100 s, never touched
    assert expired(s, NOW - 59, NOW) is None
    assert expired(s, NOW - 60, NOW) == IDLE_TIMEOUT
    # a stamp from before it (re)started running does not count against it
    assert expired(limited(idle_timeout=60, running_since=NOW - 10), NOW - 500, NOW) is None
    # disabled: 0 or negative
    assert expired(limited(idle_timeout=0), None, NOW) is None
    assert expired(limited(idle_timeout=-1), None, NOW) is None


def test_batch_sessions_are_never_idle_but_have_a_lifetime() -> None:
    assert expired(limited(session_type="batch", idle_timeout=1), None, NOW) is None
    assert expired(limited(session_type="batch", max_lifetime=50), None, NOW) == LIFETIME_EXCEEDED


def test_lifetime_wins_and_counts_from_the_start() -> None:
    s = limited(idle_timeout=60, max_lifetime=100)
    assert expired(s, NOW, NOW) == LIFETIME_EXCEEDED
    assert expired(limited(max_lifetime=101), NOW, NOW) is None


def test_a_dropped_stamp_never_ends_a_session_early() -> None:
    # a very long idle timeout, running for longer than the stamps are kept, last stamp gone
    s = limited(idle_timeout=ACCESS_KEEP_SECONDS + 10, running_since=NOW - 3 * ACCESS_KEEP_SECONDS)
    assert expired(s, None, NOW) is None


def dep(name: str, status: str, result: str = "UNDEFINED") -> Dependency:
    return Dependency(uuid.uuid4(), name, status, result)


def test_waiting_message_names_what_has_not_succeeded() -> None:
    ok, running = dep("a", "TERMINATED", "SUCCESS"), dep("b", "RUNNING")
    assert waiting_message([ok]) is None
    assert waiting_message([]) is None
    assert waiting_message([ok, running]) == \
        f"Waiting dependency sessions to finish as success. (b ({running.id}))"


def test_failures_cascade_down_pending_chains() -> None:
    failed = dep("a", "TERMINATED", "FAILURE")
    b, c, d, e = (uuid.uuid4() for _ in range(4))
    deps = {
        b: [failed],
        c: [Dependency(b, "b", "PENDING", "UNDEFINED")],
        d: [Dependency(c, "c", "PENDING", "UNDEFINED"), dep("ok", "TERMINATED", "SUCCESS")],
        e: [dep("running", "RUNNING")],
    }
    doomed = failed_dependencies(deps)
    assert set(doomed) == {b, c, d}
    assert cancel_reason(doomed[b]) == "dependency-failed (a)"
    assert cancel_reason(doomed[d]) == "dependency-failed (c)"
    # cancelled, or terminated without success (an interactive session destroyed), fail too
    assert set(failed_dependencies({b: [dep("x", "CANCELLED")], c: [dep("y", "TERMINATED")]})) == {b, c}
    assert failed_dependencies({b: [dep("z", "ERROR")]}) == {}  # not over yet
