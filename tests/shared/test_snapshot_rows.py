"""A bulk email's snapshot (``bulk_email_leads``) goes with it, though no foreign key ties them.

The key was dropped because it was checked once per snapshot row (migration 0016_search_scale);
a trigger on ``bulk_emails`` deletes the rows instead. Deleting one bulk email, or the whole
organisation (whose bulk emails go by cascade), must leave no snapshot row behind, and must not
touch another bulk email's snapshot.
"""

from __future__ import annotations

import uuid

from sqlalchemy import delete, func, select

from bulkmail.shared.db import Database
from bulkmail.shared.models import BulkEmail, BulkEmailLead, EmailAccount, EmailTemplate, Organization


async def _bulk_email_with_snapshot(database: Database, organization_id: int, lead_ids: range) -> int:
    async with database.session() as session:
        template = EmailTemplate(organization_id=organization_id, name=f"T {uuid.uuid4().hex[:6]}")
        account = EmailAccount(organization_id=organization_id, email="s@snapshot.example", smtp_host="h")
        session.add_all([template, account])
        await session.flush()
        bulk = BulkEmail(organization_id=organization_id, template_id=template.id, email_account_id=account.id)
        session.add(bulk)
        await session.flush()
        session.add_all(BulkEmailLead(bulk_email_id=bulk.id, lead_id=i) for i in lead_ids)
        return bulk.id


async def _snapshot_rows(database: Database, bulk_email_id: int) -> int:
    async with database.session() as session:
        count = select(func.count()).where(BulkEmailLead.bulk_email_id == bulk_email_id)
        return int(await session.scalar(count) or 0)


async def _organization(database: Database) -> int:
    async with database.session() as session:
        org = Organization(name=f"Snapshot {uuid.uuid4().hex[:6]}")
        session.add(org)
        await session.flush()
        return org.id


async def test_deleting_a_bulk_email_deletes_its_snapshot_and_no_other(database: Database, backend: str):
    org = await _organization(database)
    gone = await _bulk_email_with_snapshot(database, org, range(1, 501))
    kept = await _bulk_email_with_snapshot(database, org, range(1, 11))
    async with database.session() as session:
        await session.execute(delete(BulkEmail).where(BulkEmail.id == gone))
    assert await _snapshot_rows(database, gone) == 0
    assert await _snapshot_rows(database, kept) == 10


async def test_deleting_an_organisation_leaves_no_snapshot_rows(database: Database, backend: str):
    org = await _organization(database)
    bulks = [await _bulk_email_with_snapshot(database, org, range(1, 101)) for _ in range(2)]
    assert [await _snapshot_rows(database, b) for b in bulks] == [100, 100]
    async with database.session() as session:
        # The account and template are referenced by the bulk emails without a cascade of their
        # own; the organisation's delete takes them all together.
        await session.execute(delete(Organization).where(Organization.id == org))
    assert [await _snapshot_rows(database, b) for b in bulks] == [0, 0]
    async with database.session() as session:
        orphans = select(func.count()).where(BulkEmailLead.bulk_email_id.not_in(select(BulkEmail.id)))
        assert await session.scalar(orphans) == 0
