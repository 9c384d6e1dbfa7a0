"""Moving recipients in and out of chunks: queue, hand back, defer, cancel, queue failed ones again.

A recipient is *queued* when it has a chunk and no ``next_attempt_at``: ``pending`` (never
sent) or ``deferred`` (a retry that came due). A ``deferred`` row with a ``next_attempt_at``
waits for that time; the pump queues it again when it is due.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared.ledger.rows import changed
from bulkmail.shared.models import BulkEmail, Recipient, RecipientState, SkipReason, Suppression

R = RecipientState

# States a recipient can still be sent from, and those with work left for the bulk email.
UNSENT = (R.pending, R.deferred)
OPEN = (R.pending, R.sending, R.deferred)


@dataclass(frozen=True)
class QueuedChunk:
    size: int
    # The greatest id of a never-queued recipient taken, the pump's new cursor; None if only retries.
    last_fresh_id: int | None


async def queue_chunk(
    session: AsyncSession, bulk_email_id: int, queued_through_id: int, chunk_id: int, size: int, now: datetime
) -> QueuedChunk:
    """pending (not in a chunk) | deferred (due) → queued in ``chunk_id``, at most ``size`` of them.

    The caller holds the bulk email's lock, so no other pump takes the same rows. Retries that are
    due go first (they are few), then recipients never queued, in id order from the pump's cursor
    (``queued_through_id``), so neither query walks the recipients already queued.
    """
    retries = (
        select(Recipient.id)
        .where(
            Recipient.bulk_email_id == bulk_email_id, Recipient.state == R.deferred, Recipient.next_attempt_at <= now
        )
        .order_by(Recipient.id)
        .limit(size)
    )
    unqueued = (
        select(Recipient.id)
        .where(
            Recipient.bulk_email_id == bulk_email_id,
            Recipient.state == R.pending,
            Recipient.chunk_id.is_(None),
            Recipient.id > queued_through_id,
        )
        .order_by(Recipient.id)
        .limit(size)
    )
    # (Each as a subquery: SQLite allows no ORDER BY/LIMIT on the members of a UNION.)
    first, then = retries.subquery(), unqueued.subquery()
    due = union_all(select(first.c.id), select(then.c.id)).subquery()
    # next_attempt_at NULL marks a deferred recipient as queued, so the next pump does not take it again.
    taken = (
        await session.execute(
            update(Recipient)
            .where(Recipient.id.in_(select(due.c.id).limit(size).scalar_subquery()), Recipient.state.in_(UNSENT))
            .values(chunk_id=chunk_id, next_attempt_at=None)
            .returning(Recipient.id, Recipient.state)
            .execution_options(synchronize_session=False)
        )
    ).all()
    fresh = [rid for rid, state in taken if state == R.pending]
    return QueuedChunk(len(taken), max(fresh) if fresh else None)


async def hand_back(session: AsyncSession, bulk_email_id: int, chunk_id: int) -> int:
    """queued pending → pending (not in a chunk): a chunk ended (paused, cancelled, stopped) with
    recipients it did not take. The pump's cursor goes back below them so it finds them again.
    Returns how many were handed back."""
    first = await session.scalar(
        select(func.min(Recipient.id)).where(Recipient.chunk_id == chunk_id, Recipient.state == R.pending)
    )
    if first is None:
        return 0
    # The bulk email's row first, as the pump locks it: the other order could deadlock.
    await session.execute(
        update(BulkEmail)
        .where(BulkEmail.id == bulk_email_id, BulkEmail.queued_through_id >= first)
        .values(queued_through_id=first - 1)
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(
        update(Recipient)
        .where(Recipient.chunk_id == chunk_id, Recipient.state == R.pending)
        .values(chunk_id=None)
        .execution_options(synchronize_session=False)
    )
    return changed(result)


async def defer(session: AsyncSession, chunk_id: int, until: datetime, reason: str) -> int:
    """queued (pending | deferred) → deferred until ``until``: the rest of a chunk waits for the
    account (paused, or at a limit). The pump queues them again when the time comes."""
    result = await session.execute(
        update(Recipient)
        .where(Recipient.chunk_id == chunk_id, Recipient.state.in_(UNSENT), Recipient.next_attempt_at.is_(None))
        .values(state=R.deferred, next_attempt_at=until, smtp_reply=reason, updated_at=_now())
        .execution_options(synchronize_session=False)
    )
    return changed(result)


async def cancel_unsent(session: AsyncSession, bulk_email_id: int) -> int:
    """pending | deferred → skipped (cancelled): the bulk email was cancelled."""
    result = await session.execute(
        update(Recipient)
        .where(Recipient.bulk_email_id == bulk_email_id, Recipient.state.in_(UNSENT))
        .values(state=R.skipped, skip_reason=SkipReason.cancelled, next_attempt_at=None, updated_at=_now())
        .execution_options(synchronize_session=False)
    )
    return changed(result)


async def requeue_failed(session: AsyncSession, bulk_email_id: int, organization_id: int, include_unknown: bool) -> int:
    """failed (and, if asked, unknown) → deferred, due now, attempts reset: the user asked to retry.
    A hard-bounced (suppressed) address stays failed. Returns how many."""
    states = [R.failed] + ([R.unknown] if include_unknown else [])
    suppressed = select(Suppression.email_normalized).where(Suppression.organization_id == organization_id)
    now = _now()
    result = await session.execute(
        update(Recipient)
        .where(
            Recipient.bulk_email_id == bulk_email_id,
            Recipient.state.in_(states),
            Recipient.email_normalized.not_in(suppressed),
        )
        .values(state=R.deferred, next_attempt_at=now, attempts=0, chunk_id=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return changed(result)


async def work_left(session: AsyncSession, bulk_email_id: int) -> bool:
    """Whether any recipient may still be sent (or is being sent)."""
    n = await session.scalar(
        select(func.count())
        .select_from(Recipient)
        .where(Recipient.bulk_email_id == bulk_email_id, Recipient.state.in_(OPEN))
    )
    return bool(n)


def _now() -> datetime:
    return datetime.now(UTC)
