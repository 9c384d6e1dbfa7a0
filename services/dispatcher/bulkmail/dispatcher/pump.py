"""Keeping a bulk email's chunks flowing: a few in flight, retries when due, done when nothing is left.

A pump is cheap and idempotent, so it runs on every signal (a chunk finished, a bulk email was
created or resumed) and on a timer; whichever runs first does the work, the others find none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared import bulk_emails, ledger
from bulkmail.shared.contracts import BulkEmailEvent, NotifyBulkEmailDone, SendChunk
from bulkmail.shared.models import BulkEmail, BulkEmailChunk, BulkEmailStatus
from bulkmail.shared.settings import Settings

S = BulkEmailStatus


@dataclass
class PumpResult:
    chunks: list[SendChunk] = field(default_factory=list)
    events: list[BulkEmailEvent] = field(default_factory=list)
    notify: NotifyBulkEmailDone | None = None


async def pump(session: AsyncSession, settings: Settings, bulk_email_id: int) -> PumpResult:
    """Queue what may be queued now; the caller commits, then publishes the result."""
    result = PumpResult()
    bulk = await _lock(session, bulk_email_id)
    if bulk is None:
        return result
    now = datetime.now(UTC)
    if bulk.status == S.cancelled:
        await ledger.cancel_unsent(session, bulk.id)
        return result
    if bulk.status not in bulk_emails.SENDING_STATUSES:
        return result
    if bulk.status == S.resuming:
        await bulk_emails.transition(session, bulk.id, [S.resuming], S.processing)

    open_chunks = list(
        await session.scalars(
            select(BulkEmailChunk).where(BulkEmailChunk.bulk_email_id == bulk.id, BulkEmailChunk.done_at.is_(None))
        )
    )
    # A chunk whose mailer vanished without finishing it is queued again; the ledger makes the
    # second delivery harmless (only recipients still pending are sent). So is a chunk parked
    # while the bulk email was paused (published_at NULL): it is sending again now.
    stale_before = now - timedelta(seconds=settings.chunk_timeout_s)
    for chunk in open_chunks:
        if chunk.published_at is None or chunk.published_at < stale_before:
            chunk.published_at = now
            result.chunks.append(_message(bulk, chunk.id))

    in_flight = len(open_chunks)
    while in_flight < settings.chunks_in_flight:
        chunk_id = await _claim_chunk(session, bulk, settings.chunk_size, now)
        if chunk_id is None:
            break
        result.chunks.append(_message(bulk, chunk_id))
        in_flight += 1

    # Never while loading: an empty queue then means the ledger's next batch is not written yet.
    finished = bulk.status != S.loading and in_flight == 0 and not await ledger.work_left(session, bulk.id)
    if finished and await bulk_emails.transition(session, bulk.id, [S.processing, S.resuming], S.done, done_at=now):
        result.events.append(await bulk_emails.event_for(session, bulk, S.done))
        if bulk.send_done_email:
            result.notify = NotifyBulkEmailDone(bulk_email_id=bulk.id, organization_id=bulk.organization_id)
    return result


async def _lock(session: AsyncSession, bulk_email_id: int) -> BulkEmail | None:
    # One pump per bulk email at a time across dispatcher replicas (SQLite serialises writers anyway).
    # FOR NO KEY UPDATE, not FOR UPDATE: the mailers' inserts that reference this row (email
    # activities) take KEY SHARE locks on it, and FOR UPDATE would make every one of them wait.
    stmt = select(BulkEmail).where(BulkEmail.id == bulk_email_id).with_for_update(key_share=True)
    return await session.scalar(stmt)


async def _claim_chunk(session: AsyncSession, bulk: BulkEmail, size: int, now: datetime) -> int | None:
    """A new chunk: due retries first (they are few, and wait behind nothing), else the next id
    range of never-tried recipients, which writes no recipient row."""
    if await ledger.retries_due(session, bulk.id, now):
        retries = BulkEmailChunk(organization_id=bulk.organization_id, bulk_email_id=bulk.id, published_at=now)
        session.add(retries)
        await session.flush()
        retries.size = await ledger.queue_retries(session, bulk.id, retries.id, size, now)
        if retries.size:
            return retries.id
        await session.delete(retries)
    ahead = await ledger.next_range(session, bulk.id, bulk.queued_through_id, size)
    if ahead is None:
        return None
    chunk = BulkEmailChunk(
        organization_id=bulk.organization_id,
        bulk_email_id=bulk.id,
        size=ahead.size,
        first_recipient_id=ahead.first_id,
        last_recipient_id=ahead.last_id,
        published_at=now,
    )
    session.add(chunk)
    await session.flush()
    bulk.queued_through_id = ahead.last_id
    return chunk.id


def _message(bulk: BulkEmail, chunk_id: int) -> SendChunk:
    return SendChunk(bulk_email_id=bulk.id, organization_id=bulk.organization_id, chunk_id=chunk_id)
