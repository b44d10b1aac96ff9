"""The checks a pending session must pass before it gets an agent, in the original's order and
with its messages (they reach users in ``status_data.scheduler.failed_predicates``). A failure
leaves the session PENDING: it is retried on the next pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bai.common.types import ResourceSlots

from .dependencies import waiting_message
from .model import PendingSession, SlotLimits, Snapshot, add_slots, describe, humanize


@dataclass(frozen=True)
class Failure:
    name: str
    msg: str


Check = Callable[[PendingSession, Snapshot], str | None]


def reserved_time(sess: PendingSession, snap: Snapshot) -> str | None:
    if sess.starts_at is not None and snap.now < sess.starts_at:
        return "Before start time"
    return None


def dependencies(sess: PendingSession, snap: Snapshot) -> str | None:
    return waiting_message(snap.dependencies.get(sess.id, []))


def concurrency(sess: PendingSession, snap: Snapshot) -> str | None:
    owner = snap.owners[sess.access_key]
    if sess.is_private:
        limit, running = owner.max_concurrent_sftp_sessions, snap.ledger.sftp_sessions.get(sess.access_key, 0)
        if limit > 0 and running >= limit:
            return f"You cannot run more than {limit} concurrent SFTP sessions"
        return None
    limit, running = owner.max_concurrent_sessions, snap.ledger.sessions.get(sess.access_key, 0)
    if limit > 0 and running >= limit:  # 0 disables the check, as with the original
        return f"You cannot run more than {limit} concurrent sessions"
    return None


def _pending_ahead(sess: PendingSession, snap: Snapshot) -> list[PendingSession]:
    """The keypair's still-pending sessions up to and including ``sess`` (oldest first): a limit
    on pending sessions holds back the newest ones, never the ones that came first."""
    ahead = []
    for other in snap.pending_by_keypair.get(sess.access_key, ()):
        if other.id in snap.scheduled or other.is_private:
            continue
        ahead.append(other)
        if other.id == sess.id:
            break
    return ahead


def pending_session_resource_limit(sess: PendingSession, snap: Snapshot) -> str | None:
    limit = snap.owners[sess.access_key].max_pending_session_resource_slots
    if not limit:
        return None
    total: ResourceSlots = {}
    for other in _pending_ahead(sess, snap):
        add_slots(total, other.requested)
    if any(amount > limit[slot] for slot, amount in total.items() if slot in limit):
        return "Your pending session quota is exceeded. ({})".format(
            " ".join(f"{slot}={humanize(slot, amount)}" for slot, amount in sorted(total.items())))
    return None


def pending_session_count_limit(sess: PendingSession, snap: Snapshot) -> str | None:
    limit = snap.owners[sess.access_key].max_pending_session_count
    if limit is None:
        return None
    if len(_pending_ahead(sess, snap)) > limit:
        return f"You cannot create more than {limit} pending session(s)."
    return None


def _quota(kind: str, limits: SlotLimits | None, used: ResourceSlots | None,
           sess: PendingSession) -> str | None:
    if limits is None or not limits.exceeded(used or {}, sess.requested):
        return None
    return f"Your {kind} resource quota is exceeded. ({describe(limits, sess.requested)})"


def keypair_resource_limit(sess: PendingSession, snap: Snapshot) -> str | None:
    return _quota("keypair", snap.owners[sess.access_key].keypair,
                  snap.ledger.by_keypair.get(sess.access_key), sess)


def user_resource_limit(sess: PendingSession, snap: Snapshot) -> str | None:
    return _quota("main-keypair", snap.owners[sess.access_key].main_keypair,
                  snap.ledger.by_user.get(sess.user_uuid), sess)


def user_group_resource_limit(sess: PendingSession, snap: Snapshot) -> str | None:
    return _quota("group", snap.group_limits.get(sess.group_id), snap.ledger.by_group.get(sess.group_id), sess)


def domain_resource_limit(sess: PendingSession, snap: Snapshot) -> str | None:
    return _quota("domain", snap.domain_limits.get(sess.domain_name),
                  snap.ledger.by_domain.get(sess.domain_name), sess)


#: (name, check, also for private sessions)
PREDICATES: tuple[tuple[str, Check, bool], ...] = (
    ("reserved_time", reserved_time, True),
    ("dependencies", dependencies, True),
    ("concurrency", concurrency, True),
    ("pending_session_resource_limit", pending_session_resource_limit, False),
    ("pending_session_count_limit", pending_session_count_limit, False),
    ("keypair_resource_limit", keypair_resource_limit, False),
    ("user_resource_limit", user_resource_limit, False),
    ("user_group_resource_limit", user_group_resource_limit, False),
    ("domain_resource_limit", domain_resource_limit, False),
)


def check_all(sess: PendingSession, snap: Snapshot) -> tuple[list[str], list[Failure]]:
    """The names of the predicates passed and the failures, each predicate run (the original
    reports them all, not only the first)."""
    passed: list[str] = []
    failed: list[Failure] = []
    for name, check, for_private in PREDICATES:
        if sess.is_private and not for_private:
            continue
        msg = check(sess, snap)
        if msg is None:
            passed.append(name)
        else:
            failed.append(Failure(name, msg))
    return passed, failed


__all__ = ["PREDICATES", "Failure", "check_all"]
