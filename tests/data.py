"""Test and benchmark data made in bulk."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared.db import Database
from bulkmail.shared.models import EmailAccount, EmailTemplate
from bulkmail.shared.organizations import create_organization


async def add_audience(database: Database, n: int, domain: str = "crash.example") -> tuple[int, str]:
    """A new organisation with ``n`` leads, one contact and one unique address each (PostgreSQL,
    set-based, seconds for 100,000); returns (organisation id, API key)."""
    async with database.session() as session:
        org = await create_organization(session, f"Crash {uuid.uuid4().hex[:6]}", user_email=f"owner@{domain}")
        params = {"org": org.organization_id, "n": n}
        await session.execute(
            text(
                "INSERT INTO leads (organization_id, name, description, url, search_text, num_contacts,"
                " num_email_addresses, created_at, updated_at)"
                " SELECT :org, 'Lead ' || g, '', '', 'lead ' || g, 1, 1, now(), now() FROM generate_series(1, :n) g"
            ),
            params,
        )
        # Every lead has its counters' row (models.LeadActivity): the ORM and the bulk loader add it.
        await session.execute(
            text(
                "INSERT INTO lead_activity (lead_id, organization_id)"
                " SELECT id, organization_id FROM leads WHERE organization_id = :org"
            ),
            {"org": org.organization_id},
        )
        await session.execute(
            text(
                "INSERT INTO contacts (organization_id, lead_id, position, name, title)"
                " SELECT :org, id, 0, 'Person ' || id, '' FROM leads WHERE organization_id = :org"
            ),
            {"org": org.organization_id},
        )
        await session.execute(
            text(
                "INSERT INTO contact_emails (organization_id, contact_id, lead_id, position, email,"
                " email_normalized, type, is_unsubscribed)"
                " SELECT :org, id, lead_id, 0, 'p' || lead_id || '@' || :domain, 'p' || lead_id || '@' || :domain,"
                " 'office', false FROM contacts WHERE organization_id = :org"
            ),
            {"org": org.organization_id, "domain": domain},
        )
    async with database.engine.connect() as conn:
        # Fresh statistics, as after any bulk load: the planner must know these tables grew.
        for table in ("leads", "lead_activity", "contacts", "contact_emails"):
            await conn.execute(text(f"ANALYZE {table}"))
        await conn.commit()
    return org.organization_id, org.api_key


async def add_sender(session: AsyncSession, name: str) -> tuple[int, EmailTemplate, EmailAccount]:
    """A new organisation with a template and an email account (no leads): (organisation id, template, account)."""
    domain = f"{name.lower()}.example"
    org = await create_organization(session, f"{name} {uuid.uuid4().hex[:6]}", user_email=f"o@{domain}")
    oid = org.organization_id
    template = EmailTemplate(organization_id=oid, name="t", subject="s", body="b")
    account = EmailAccount(organization_id=oid, email=f"me@{domain}", smtp_host="127.0.0.1")
    session.add_all([template, account])
    await session.flush()
    return oid, template, account
