"""The ledger the dispatcher writes in SQL follows the audience rules the pre-send audit shows.

A deliberately tangled audience (several contacts and addresses per lead, the same address on
many leads in different cases, unsubscribed and suppressed addresses, addresses the mailer
cannot deliver to, leads that already got the template, leads with no address) is built into a
ledger in small batches, so duplicates also cross batches, and compared row by row with
``audience.decide`` under every preference.
"""

from __future__ import annotations

import random

import pytest
from sqlalchemy import select

from bulkmail.dispatcher import recipients
from bulkmail.dispatcher.recipients import build_recipients
from bulkmail.shared.audience import decide, load_batch, no_email_key
from bulkmail.shared.db import Database
from bulkmail.shared.models import (
    BulkEmail,
    BulkEmailLead,
    Contact,
    ContactEmail,
    ContactPreference,
    EmailActivity,
    Lead,
    Recipient,
    RecipientState,
    Suppression,
)
from tests.data import add_sender

# Three the mailer cannot deliver to, stored straight into the database (the API refuses them).
UNDELIVERABLE = ["a@x.example,b@tangle.example", "<b>@tangle.example", "c d@tangle.example"]
ADDRESSES = [f"person{i}@tangle.example" for i in range(30)] + UNDELIVERABLE


async def _tangled_audience(database: Database, seed: int) -> tuple[int, int, int, list[int]]:
    """(organisation, template, account, lead ids) for 80 leads drawn from 30 addresses."""
    rng = random.Random(seed)
    async with database.session() as session:
        oid, template, account = await add_sender(session, "Tangle")
        leads = [Lead(organization_id=oid, name=f"Lead {i}") for i in range(80)]
        session.add_all(leads)
        await session.flush()
        for lead in leads:
            # Positions out of insertion order, so "first" must come from position, not id.
            for position in rng.sample(range(5), rng.choice([0, 1, 1, 2, 3])):
                contact = Contact(organization_id=oid, lead_id=lead.id, position=position, name="C")
                session.add(contact)
                await session.flush()
                for email_position in rng.sample(range(5), rng.choice([0, 1, 1, 2, 3])):
                    address = rng.choice(ADDRESSES)
                    shown = address.upper() if rng.random() < 0.2 else address
                    session.add(
                        ContactEmail(
                            organization_id=oid,
                            contact_id=contact.id,
                            lead_id=lead.id,
                            position=email_position,
                            email=shown,
                            email_normalized=address,
                            is_unsubscribed=rng.random() < 0.1,
                        )
                    )
        for i, address in enumerate(rng.sample(ADDRESSES, 8)):
            reason = "unsubscribed" if i % 2 else "hard_bounce"
            session.add(Suppression(organization_id=oid, email_normalized=address, reason=reason))
        for lead in rng.sample(leads, 10):
            session.add(EmailActivity(organization_id=oid, lead_id=lead.id, template_id=template.id))
        return oid, template.id, account.id, [lead.id for lead in leads]


async def _bulk(database: Database, oid: int, template_id: int, account_id: int, lead_ids: list[int], **kw) -> int:
    async with database.session() as session:
        bulk = BulkEmail(organization_id=oid, template_id=template_id, email_account_id=account_id, query="*", **kw)
        session.add(bulk)
        await session.flush()
        session.add_all(BulkEmailLead(bulk_email_id=bulk.id, lead_id=lead_id) for lead_id in lead_ids)
        return bulk.id


@pytest.mark.parametrize("preference", list(ContactPreference))
@pytest.mark.parametrize("exclude_already_emailed", [True, False])
async def test_the_ledger_follows_the_audience_rules(
    database: Database, monkeypatch: pytest.MonkeyPatch, preference: ContactPreference, exclude_already_emailed: bool
) -> None:
    oid, template_id, account_id, lead_ids = await _tangled_audience(database, seed=len(preference.value))
    # A snapshot that skips some leads, written in batches of 7 leads.
    snapshot = lead_ids[::4] + lead_ids[1::4] + lead_ids[2::4]
    bulk_id = await _bulk(
        database,
        oid,
        template_id,
        account_id,
        snapshot,
        contact_preference=preference,
        exclude_already_emailed=exclude_already_emailed,
    )
    monkeypatch.setattr(recipients, "LEADS_PER_BATCH", 7)

    async with database.session() as session:
        bulk = await session.get(BulkEmail, bulk_id)
        assert bulk is not None
    report = await build_recipients(database, bulk)

    ordered = sorted(snapshot)
    async with database.session() as session:
        batch = await load_batch(session, oid, ordered, template_id if exclude_already_emailed else None)
        ledger = {
            (r.lead_id, r.contact_id, r.email, r.email_normalized, r.state, r.skip_reason)
            for r in await session.scalars(select(Recipient).where(Recipient.bulk_email_id == bulk_id))
        }
        n_duplicates = (await session.get(BulkEmail, bulk_id)).n_duplicates  # type: ignore[union-attr]
    expected = set()
    duplicates = 0
    for d in decide(batch, ordered, preference, set()):
        if d.duplicate:
            duplicates += 1
        elif d.candidate is None:
            expected.add((d.lead_id, None, "", no_email_key(d.lead_id), RecipientState.skipped, "no_email"))
        else:
            c = d.candidate
            state = RecipientState.skipped if d.reason else RecipientState.pending
            expected.add((d.lead_id, c.contact_id, c.email, c.email_normalized, state, d.reason and d.reason.value))

    assert ledger == expected
    assert n_duplicates == duplicates == report.duplicates
    assert duplicates > 0, "the audience must exercise duplicates"
    reasons = {row[5] for row in expected}
    assert {"no_email", "unsubscribed", "suppressed", "invalid_address", None} <= reasons
    if exclude_already_emailed:
        assert "already_received_template" in reasons
    assert report.leads == len(snapshot)
    assert report.recipients == sum(1 for row in expected if row[5] is None)


async def test_a_rebuild_writes_nothing_twice(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    oid, template_id, account_id, lead_ids = await _tangled_audience(database, seed=7)
    bulk_id = await _bulk(database, oid, template_id, account_id, lead_ids)
    monkeypatch.setattr(recipients, "LEADS_PER_BATCH", 9)
    async with database.session() as session:
        bulk = await session.get(BulkEmail, bulk_id)
        assert bulk is not None
    committed: list[int] = []

    async def after_batch() -> None:  # the dispatcher queues chunks here: it must see the batch
        async with database.session() as session:
            done = await session.scalar(select(BulkEmail.n_leads_processed).where(BulkEmail.id == bulk_id))
            committed.append(int(done or 0))

    first = await build_recipients(database, bulk, after_batch)
    again = await build_recipients(database, bulk, after_batch)  # e.g. a second dispatcher replica, or a redelivery
    async with database.session() as session:
        rows = list(await session.scalars(select(Recipient.email_normalized).where(Recipient.bulk_email_id == bulk_id)))
        stored = await session.get(BulkEmail, bulk_id)
    assert first.leads == len(lead_ids) and again.leads == 0
    assert len(rows) == len(set(rows)) == first.recipients + sum(first.skipped.values())
    assert stored is not None and stored.n_leads_processed == len(lead_ids)
    # After each full batch, committed; not after the last, short one (the ledger is complete).
    assert len(lead_ids) % 9 and committed == list(range(9, len(lead_ids), 9))
