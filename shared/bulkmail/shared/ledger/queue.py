"""Putting recipients into chunks, and taking them out: queue, defer, cancel, queue failed ones again.

A chunk of never-tried recipients is an id range of the ledger (``next_range``): queueing it
writes no recipient row. Retries that are due are queued row by row (``queue_retries``): their
``chunk_id`` names the chunk and ``next_attempt_at`` goes back to NULL. A ``deferred`` row with
a ``next_attempt_at`` waits for that time. ``ChunkScope`` says which rows a chunk carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared.ledger.chunks import ChunkScope
from bulkmail.shared.ledger.rows import changed, table_of
from bulkmail.shared.models import Recipient, RecipientState, SkipReason, Suppression

R = RecipientState

# States a recipient can still be sent from, and those with work left for the bulk email.
UNSENT = (R.pending, R.deferred)
OPEN = (R.pending, R.sending, R.deferred)

_recipients = table_of(Recipient)


@dataclass(frozen=True)
class IdRange:
    first_id: int
    last_id: int
    size: int  # rows in the range (those skipped when the ledger was written included)


async def next_range(session: AsyncSession, bulk_email_id: int, queued_through_id: int, size: int) -> IdRange | None:
    """The next ``size`` recipients after the pump's cursor (``queued_through_id``), as an id range:
    a chunk of never-tried recipients. A read: the rows are not written.

    Every row past the cursor is unqueued (the cursor only moves forward, and the ledger's rows
    are written in id order, a batch at a time, under the bulk email's lock the pump takes too).
    """
    ahead = (
        select(Recipient.id)
        .where(Recipient.bulk_email_id == bulk_email_id, Recipient.id > queued_through_id)
        .order_by(Recipient.id)
        .limit(size)
        .subquery()
    )
    n, first, last = (await session.execute(select(func.count(), func.min(ahead.c.id), func.max(ahead.c.id)))).one()
    return IdRange(first, last, n) if n else None


async def retries_due(session: AsyncSession, bulk_email_id: int, now: datetime) -> bool:
    """Whether a deferred recipient's time has come (a look into the small index of waiting rows)."""
    due = await session.scalar(select(Recipient.id).where(_due(bulk_email_id, now)).limit(1))
    return due is not None


async def queue_retries(session: AsyncSession, bulk_email_id: int, chunk_id: int, size: int, now: datetime) -> int:
    """deferred (due) → queued in the chunk of retries ``chunk_id``, at most ``size``, in id order.
    The caller holds the bulk email's lock, so no other pump takes the same rows. Returns how many."""
    due = select(Recipient.id).where(_due(bulk_email_id, now)).order_by(Recipient.id).limit(size).scalar_subquery()
    # next_attempt_at NULL marks the row as queued: the next pump does not take it again.
    result = await session.execute(
        update(Recipient)
        .where(Recipient.id.in_(due), Recipient.state == R.deferred)
        .values(chunk_id=chunk_id, next_attempt_at=None)
        .execution_options(synchronize_session=False)
    )
    return changed(result)


async def defer(session: AsyncSession, chunk: ChunkScope, until: datetime, reason: str) -> int:
    """queued (pending | deferred, in ``chunk``) → deferred until ``until``: the rest of a chunk waits
    for the account (paused, or at a limit). The pump queues them again when the time comes."""
    result = await session.execute(
        update(_recipients)
        .where(chunk.takeable(_recipients))
        .values(state=R.deferred, next_attempt_at=until, smtp_reply=reason, updated_at=_now())
        .execution_options(synchronize_session=False),
        chunk.params,
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
    found = await session.scalar(
        select(Recipient.id).where(Recipient.bulk_email_id == bulk_email_id, Recipient.state.in_(OPEN)).limit(1)
    )
    return found is not None


def _due(bulk_email_id: int, now: datetime) -> ColumnElement[bool]:
    # Through the partial index of waiting rows (next_attempt_at <= now implies NOT NULL).
    return and_(
        Recipient.bulk_email_id == bulk_email_id, Recipient.next_attempt_at <= now, Recipient.state == R.deferred
    )


def _now() -> datetime:
    return datetime.now(UTC)
