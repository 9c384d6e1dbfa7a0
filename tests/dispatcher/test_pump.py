"""The pump queues due retries first, then recipients never queued, in order, each exactly once:
never-tried recipients as id ranges (no row written), retries row by row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.dispatcher.pump import pump
from bulkmail.mailer.sender import ChunkSender
from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.contracts import SendChunk
from bulkmail.shared.db import Database
from bulkmail.shared.ledger import ChunkScope
from bulkmail.shared.ledger.rows import table_of
from bulkmail.shared.models import (
    BulkEmail,
    BulkEmailChunk,
    BulkEmailStatus,
    Recipient,
    RecipientState,
)
from bulkmail.shared.settings import Settings
from tests.data import add_sender

R = RecipientState
S = BulkEmailStatus
_recipients = table_of(Recipient)


async def _bulk_email(session: AsyncSession, name: str) -> BulkEmail:
    oid, template, account = await add_sender(session, name)
    bulk = BulkEmail(
        organization_id=oid, template_id=template.id, email_account_id=account.id, query="*", status=S.processing
    )
    session.add(bulk)
    await session.flush()
    return bulk


def _pending(bulk: BulkEmail, n: int, domain: str) -> list[Recipient]:
    return [
        Recipient(
            organization_id=bulk.organization_id,
            bulk_email_id=bulk.id,
            lead_id=i + 1,
            email=f"r{i}@{domain}",
            email_normalized=f"r{i}@{domain}",
        )
        for i in range(n)
    ]


async def _sent(session: AsyncSession, chunk_ids: list[int]) -> None:
    """The chunks as a mailer leaves them: every recipient sent, the chunk done."""
    for chunk in await session.scalars(select(BulkEmailChunk).where(BulkEmailChunk.id.in_(chunk_ids))):
        scope = ChunkScope.of(chunk)
        await session.execute(update(_recipients).where(scope.members(_recipients)).values(state=R.sent), scope.params)
    await session.execute(
        update(BulkEmailChunk).where(BulkEmailChunk.id.in_(chunk_ids)).values(done_at=datetime.now(UTC))
    )


async def test_due_retries_go_first_then_unqueued_recipients_in_order(database: Database, settings: Settings) -> None:
    now = datetime.now(UTC)
    async with database.session() as session:
        bulk = await _bulk_email(session, "Pump")
        oid = bulk.organization_id
        queued = BulkEmailChunk(organization_id=oid, bulk_email_id=bulk.id, size=1, published_at=now)
        session.add(queued)
        await session.flush()
        rows = {
            # Queued earlier (the cursor is past them): tried, waiting, or in a chunk of retries.
            "in-a-chunk": dict(state=R.deferred, chunk_id=queued.id),
            "retry-later": dict(state=R.deferred, next_attempt_at=now + timedelta(hours=1)),
            "sent": dict(state=R.sent),
            # Due: it goes first, ahead of the never-tried recipients below.
            "retry-due": dict(state=R.deferred, next_attempt_at=now - timedelta(seconds=1)),
            # Never queued: past the cursor.
            "fresh-1": dict(state=R.pending),
            "fresh-2": dict(state=R.pending),
            "fresh-3": dict(state=R.pending),
        }
        recipients = {
            name: Recipient(
                organization_id=oid,
                bulk_email_id=bulk.id,
                lead_id=i + 1,
                email=f"{name}@pump.example",
                email_normalized=f"{name}@pump.example",
                **values,
            )
            for i, (name, values) in enumerate(rows.items())
        }
        session.add_all(recipients.values())
        await session.flush()
        bulk.queued_through_id = recipients["retry-due"].id
        ids = {name: recipient.id for name, recipient in recipients.items()}
        bulk_id, queued_id = bulk.id, queued.id

    small = settings.model_copy(update={"chunk_size": 2, "chunks_in_flight": 3})
    async with database.session() as session:
        before = {r.id: (r.state, r.chunk_id, r.updated_at) for r in await session.scalars(select(Recipient))}
        result = await pump(session, small, bulk_id)
    assert len(result.chunks) == 2  # the open chunk counts as in flight: 3 - 1

    async with database.session() as session:
        first, second = [await session.get_one(BulkEmailChunk, c.chunk_id) for c in result.chunks]
        after = {r.id: (r.state, r.chunk_id, r.updated_at) for r in await session.scalars(select(Recipient))}
        bulk = await session.get_one(BulkEmail, bulk_id)
    # The due retry, queued on its row; then the next two never-tried recipients, as a range.
    assert (first.first_recipient_id, first.size) == (None, 1)
    assert after[ids["retry-due"]][1] == first.id
    assert (second.first_recipient_id, second.last_recipient_id, second.size) == (ids["fresh-1"], ids["fresh-2"], 2)
    assert bulk.queued_through_id == ids["fresh-2"]
    # No other row was written: a range is queued without touching its recipients.
    assert {rid for rid in before if before[rid] != after[rid]} == {ids["retry-due"]}
    assert after[ids["in-a-chunk"]][1] == queued_id

    async with database.session() as session:  # the rest: one more range, then nothing
        again = await pump(session, settings.model_copy(update={"chunks_in_flight": 10}), bulk_id)
        (last,) = [await session.get_one(BulkEmailChunk, c.chunk_id) for c in again.chunks]
        assert (last.first_recipient_id, last.last_recipient_id) == (ids["fresh-3"], ids["fresh-3"])
    async with database.session() as session:
        assert (await pump(session, settings.model_copy(update={"chunks_in_flight": 10}), bulk_id)).chunks == []


async def test_a_chunk_taken_while_paused_is_parked_and_sent_on_resume(
    database: Database, settings: Settings, broker: MemoryBroker
) -> None:
    """A chunk a mailer takes while its bulk email is paused sends nothing and stays open,
    unpublished; when the bulk email resumes the pump publishes it again, and every recipient
    is queued exactly once."""
    async with database.session() as session:
        bulk = await _bulk_email(session, "Pump cursor")
        session.add_all(_pending(bulk, 6, "cursor.example"))
        bulk_id, oid = bulk.id, bulk.organization_id

    small = settings.model_copy(update={"chunk_size": 2, "chunks_in_flight": 2})
    async with database.session() as session:
        first = await pump(session, small, bulk_id)
    async with database.session() as session:
        bulk = await session.get_one(BulkEmail, bulk_id)
        ids = sorted(await session.scalars(select(Recipient.id).where(Recipient.bulk_email_id == bulk_id)))
        assert bulk.queued_through_id == ids[3]  # two chunks of two taken
        bulk.status = S.paused

    parked_id = first.chunks[0].chunk_id
    sender = ChunkSender(settings, database, broker)
    await sender.handle(SendChunk(bulk_email_id=bulk_id, organization_id=oid, chunk_id=parked_id))
    async with database.session() as session:
        parked = await session.get_one(BulkEmailChunk, parked_id)
        assert (parked.published_at, parked.done_at) == (None, None)
        states = set(await session.scalars(select(Recipient.state).where(Recipient.bulk_email_id == bulk_id)))
        assert states == {R.pending}  # nothing sent, nothing written
        assert (await session.get_one(BulkEmail, bulk_id)).queued_through_id == ids[3]
        await session.execute(update(BulkEmail).where(BulkEmail.id == bulk_id).values(status=S.processing))  # resumed
        await _sent(session, [first.chunks[1].chunk_id])  # the second chunk was sent meanwhile

    published: list[int] = []
    queued: list[int] = []
    for _ in range(5):  # bounded: two pumps are enough for what is left
        async with database.session() as session:
            result = await pump(session, small, bulk_id)
            chunk_ids = [chunk.chunk_id for chunk in result.chunks]
            published += chunk_ids
            for chunk in await session.scalars(select(BulkEmailChunk).where(BulkEmailChunk.id.in_(chunk_ids))):
                members = ChunkScope.of(chunk).members(_recipients)
                queued += await session.scalars(select(_recipients.c.id).where(members), ChunkScope.of(chunk).params)
            await _sent(session, chunk_ids)
    assert published.count(parked_id) == 1  # the parked chunk itself, published again once
    assert sorted(queued) == ids[:2] + ids[4:]  # the parked two and the last two, once each
    async with database.session() as session:
        assert (await session.get_one(BulkEmail, bulk_id)).status == S.done


async def test_while_loading_chunks_go_out_but_the_send_is_never_done(database: Database, settings: Settings) -> None:
    """The first chunks are queued while the ledger is still being written; an empty queue then
    means "not written yet", not "finished"."""
    async with database.session() as session:
        bulk = await _bulk_email(session, "Pump loading")
        bulk.status = S.loading
        session.add_all(_pending(bulk, 1, "loading.example"))
        bulk_id = bulk.id
    async with database.session() as session:
        chunks = (await pump(session, settings, bulk_id)).chunks
        assert len(chunks) == 1
        await _sent(session, [chunks[0].chunk_id])
    async with database.session() as session:
        result = await pump(session, settings, bulk_id)
        assert result.chunks == [] and result.events == []
        assert (await session.get_one(BulkEmail, bulk_id)).status == S.loading
        await session.execute(update(BulkEmail).where(BulkEmail.id == bulk_id).values(status=S.processing))
    async with database.session() as session:  # loaded: now nothing left means done
        assert [e.type for e in (await pump(session, settings, bulk_id)).events] == ["bulk_email.done"]
