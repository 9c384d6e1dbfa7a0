"""The pump queues due retries first, then recipients never queued, in order, each exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bulkmail.dispatcher.pump import pump
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


async def test_due_retries_go_first_then_unqueued_recipients_in_order(database: Database, settings: Settings) -> None:
    now = datetime.now(UTC)
    async with database.session() as session:
        oid, template, account = await add_sender(session, "Pump")
        bulk = BulkEmail(
            organization_id=oid,
            template_id=template.id,
            email_account_id=account.id,
            query="*",
            status=BulkEmailStatus.processing,
        )
        session.add(bulk)
        await session.flush()
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
