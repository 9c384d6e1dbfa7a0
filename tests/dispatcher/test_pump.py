"""The pump queues due retries first, then recipients never queued, in order, each exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.dispatcher.pump import pump
from bulkmail.mailer.sender import ChunkSender
from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.contracts import SendChunk
from bulkmail.shared.db import Database
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
    await session.execute(update(Recipient).where(Recipient.chunk_id.in_(chunk_ids)).values(state=R.sent))
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
            "fresh-1": dict(state=R.pending),
            "in-a-chunk": dict(state=R.pending, chunk_id=queued.id),
            "retry-later": dict(state=R.deferred, next_attempt_at=now + timedelta(hours=1), chunk_id=queued.id),
            "sent": dict(state=R.sent, chunk_id=queued.id),
            "fresh-2": dict(state=R.pending),
            "fresh-3": dict(state=R.pending),
            # Last by id, yet first to go: a due retry does not wait behind the whole send.
            "retry-due": dict(state=R.deferred, next_attempt_at=now - timedelta(seconds=1), chunk_id=queued.id),
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
        ids = {recipient.id: name for name, recipient in recipients.items()}
        bulk_id, queued_id = bulk.id, queued.id

    small = settings.model_copy(update={"chunk_size": 2, "chunks_in_flight": 3})
    async with database.session() as session:
        result = await pump(session, small, bulk_id)
    assert len(result.chunks) == 2  # the open chunk counts as in flight: 3 - 1

    async with database.session() as session:
        chunk_of = {
            ids[rid]: chunk
            for rid, chunk in await session.execute(select(Recipient.id, Recipient.chunk_id))
            if rid in ids
        }
    first, second = result.chunks[0].chunk_id, result.chunks[1].chunk_id
    assert chunk_of["retry-due"] == first and chunk_of["fresh-1"] == first
    assert chunk_of["fresh-2"] == second and chunk_of["fresh-3"] == second
    for untouched in ("in-a-chunk", "retry-later", "sent"):
        assert chunk_of[untouched] == queued_id, untouched

    async with database.session() as session:  # nothing left to queue: a second pump takes nothing
        again = await pump(session, settings.model_copy(update={"chunks_in_flight": 10}), bulk_id)
    assert again.chunks == []


async def test_recipients_a_paused_chunk_hands_back_are_queued_again_on_resume(
    database: Database, settings: Settings, broker: MemoryBroker
) -> None:
    """The pump starts each chunk where the last one stopped; a chunk that ends with recipients
    untaken (its bulk email was paused) hands them back below that point, and they still go."""
    async with database.session() as session:
        bulk = await _bulk_email(session, "Pump cursor")
        session.add_all(_pending(bulk, 6, "cursor.example"))
        bulk_id, oid = bulk.id, bulk.organization_id

    small = settings.model_copy(update={"chunk_size": 2, "chunks_in_flight": 2})
    async with database.session() as session:
        first = await pump(session, small, bulk_id)
    async with database.session() as session:
        bulk = await session.get_one(BulkEmail, bulk_id)
        ids = list(await session.scalars(select(Recipient.id).where(Recipient.bulk_email_id == bulk_id)))
        assert bulk.queued_through_id == sorted(ids)[3]  # two chunks of two taken
        bulk.status = S.paused

    # A mailer takes the first chunk while the bulk email is paused: it sends nothing and hands
    # the chunk's two recipients back.
    sender = ChunkSender(settings, database, broker)
    await sender.handle(SendChunk(bulk_email_id=bulk_id, organization_id=oid, chunk_id=first.chunks[0].chunk_id))
    async with database.session() as session:
        assert (await session.get_one(BulkEmail, bulk_id)).queued_through_id < sorted(ids)[0]
        await session.execute(update(BulkEmail).where(BulkEmail.id == bulk_id).values(status=S.processing))  # resumed
        await _sent(session, [first.chunks[1].chunk_id])  # the second chunk was sent meanwhile

    queued: list[int] = []
    for _ in range(5):  # bounded: three chunks are enough for what is left
        async with database.session() as session:
            result = await pump(session, small, bulk_id)
            chunk_ids = [chunk.chunk_id for chunk in result.chunks]
            queued += await session.scalars(select(Recipient.id).where(Recipient.chunk_id.in_(chunk_ids)))
            await _sent(session, chunk_ids)
    sent_first = set(sorted(ids)[2:4])
    assert sorted(queued) == sorted(set(ids) - sent_first)  # the handed-back two and the last two, once each
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
