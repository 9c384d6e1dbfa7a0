"""Loading a bulk email: the ledger is written, and the first chunks go out, whatever the user does meanwhile."""

from __future__ import annotations

from sqlalchemy import func, select

from bulkmail.dispatcher.service import Dispatcher
from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.db import Database
from bulkmail.shared.models import (
    BulkEmail,
    BulkEmailChunk,
    BulkEmailLead,
    BulkEmailStatus,
    Contact,
    ContactEmail,
    Lead,
    Recipient,
)
from bulkmail.shared.settings import Settings
from tests.data import add_sender

S = BulkEmailStatus


async def _paused_while_loading(database: Database, status: BulkEmailStatus) -> int:
    """A bulk email of five leads, one address each, whose ledger is not written yet."""
    async with database.session() as session:
        oid, template, account = await add_sender(session, "Loading")
        leads = [Lead(organization_id=oid, name=f"L{i}") for i in range(5)]
        session.add_all(leads)
        await session.flush()
        for i, lead in enumerate(leads):
            contact = Contact(organization_id=oid, lead_id=lead.id, name=f"C{i}")
            session.add(contact)
            await session.flush()
            address = f"c{i}@loading.example"
            session.add(
                ContactEmail(
                    organization_id=oid, contact_id=contact.id, lead_id=lead.id, email=address, email_normalized=address
                )
            )
        bulk = BulkEmail(
            organization_id=oid,
            template_id=template.id,
            email_account_id=account.id,
            query="*",
            status=status,
            n_leads=len(leads),
        )
        session.add(bulk)
        await session.flush()
        session.add_all(BulkEmailLead(bulk_email_id=bulk.id, lead_id=lead.id) for lead in leads)
        return bulk.id


async def test_a_bulk_email_paused_while_loading_keeps_its_ledger_and_total(
    database: Database, settings: Settings, broker: MemoryBroker
) -> None:
    bulk_id = await _paused_while_loading(database, S.paused)  # the user paused it while loading

    async with database.session() as session:
        bulk = await session.get_one(BulkEmail, bulk_id)
    await Dispatcher(settings, database, broker)._load(bulk)

    async with database.session() as session:
        bulk = await session.get_one(BulkEmail, bulk_id)
        written = await session.scalar(select(func.count()).where(Recipient.bulk_email_id == bulk_id))
        assert (bulk.status, bulk.n_objects, written) == (S.paused, 5, 5)
        assert await session.scalar(select(func.count()).where(BulkEmailChunk.bulk_email_id == bulk_id)) == 0


async def test_a_build_cut_short_while_paused_is_finished_on_resume(
    database: Database, settings: Settings, broker: MemoryBroker
) -> None:
    # Paused while loading, then the dispatcher stopped before the build was done: nothing
    # sweeps a paused bulk email, so the resume is what finishes the ledger.
    bulk_id = await _paused_while_loading(database, S.resuming)
    await Dispatcher(settings, database, broker).handle(bulk_id)

    async with database.session() as session:
        bulk = await session.get_one(BulkEmail, bulk_id)
        queued = await session.scalar(
            select(func.sum(BulkEmailChunk.size)).where(BulkEmailChunk.bulk_email_id == bulk_id)
        )
        assert (bulk.status, bulk.n_objects, bulk.n_leads_processed, queued) == (S.processing, 5, 5, 5)
