"""Loading a bulk email: the ledger is written, and the first chunks go out, whatever the user does meanwhile."""

from __future__ import annotations

from sqlalchemy import func, select

from bulkmail.dispatcher.service import Dispatcher
from bulkmail.shared.broker.memory import MemoryBroker
from bulkmail.shared.db import Database
from bulkmail.shared.models import BulkEmail, BulkEmailLead, BulkEmailStatus, Contact, ContactEmail, Lead, Recipient
from bulkmail.shared.settings import Settings
from tests.data import add_sender

S = BulkEmailStatus


async def test_a_bulk_email_paused_while_loading_keeps_its_ledger_and_total(
    database: Database, settings: Settings, broker: MemoryBroker
) -> None:
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
            status=S.paused,  # the user paused it while it was loading
            n_leads=len(leads),
        )
        session.add(bulk)
        await session.flush()
        session.add_all(BulkEmailLead(bulk_email_id=bulk.id, lead_id=lead.id) for lead in leads)
        bulk_id = bulk.id

    async with database.session() as session:
        bulk = await session.get_one(BulkEmail, bulk_id)
    await Dispatcher(settings, database, broker)._load(bulk)

    async with database.session() as session:
        bulk = await session.get_one(BulkEmail, bulk_id)
        written = await session.scalar(select(func.count()).where(Recipient.bulk_email_id == bulk_id))
        assert (bulk.status, bulk.n_objects, written) == (S.paused, 5, 5)
        assert (
            await session.scalar(
                select(func.count()).where(Recipient.chunk_id.is_not(None), Recipient.bulk_email_id == bulk_id)
            )
            == 0
        )
