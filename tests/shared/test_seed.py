from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from bulkmail.shared.counters import refresh_lead_counters
from bulkmail.shared.db import Database
from bulkmail.shared.models import (
    Contact,
    ContactEmail,
    CustomField,
    EmailActivity,
    EmailTemplate,
    Lead,
    LeadActivity,
    LeadCustomValue,
    LeadStatus,
    User,
)
from bulkmail.shared.seed import seed

NOW = datetime(2026, 11, 1, tzinfo=UTC)

DERIVED = [
    Lead.search_text,
    Lead.num_contacts,
    Lead.num_addresses,
    Lead.num_email_addresses,
    Lead.num_phone_numbers,
    LeadActivity.num_emails,
    LeadActivity.num_calls,
    Lead.num_opportunities,
    Lead.num_tasks,
    LeadActivity.last_emailed_at,
    Lead.last_called_at,
    Lead.last_email_opened_at,
]


async def _derived(database: Database, org_id: int) -> list[tuple[Any, ...]]:
    async with database.session() as session:
        rows = await session.execute(
            select(Lead.id, *DERIVED)
            .join(LeadActivity, LeadActivity.lead_id == Lead.id)
            .where(Lead.organization_id == org_id)
            .order_by(Lead.id)
        )
        return [tuple(row) for row in rows]


@pytest.mark.parametrize("defer_indexes", [False, True])
async def test_seeded_counters_match_what_refresh_lead_counters_computes(database, defer_indexes):
    report = await seed(database, leads=150, now=NOW, batch_size=40, defer_indexes=defer_indexes)
    before = await _derived(database, report.organization_id)
    assert len(before) == 150

    async with database.session() as session:
        await refresh_lead_counters(session, [row[0] for row in before])
    after = await _derived(database, report.organization_id)
    # refresh_lead_counters reads related rows without ORDER BY, so its word order follows the
    # heap (it changes with free space and plans); search matches word prefixes, so compare words.
    assert [_words(row) for row in after] == [_words(row) for row in before]


def _words(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return (row[0], sorted(row[1].split()), *row[2:])


async def test_seed_builds_a_realistic_crm(database):
    report = await seed(database, leads=300, now=NOW)
    org = report.organization_id
    async with database.session() as session:

        async def count(model: Any, *where: Any) -> int:
            return int(
                await session.scalar(
                    select(func.count()).select_from(model).where(model.organization_id == org, *where)
                )
                or 0
            )

        assert await count(User) >= 3
        assert {"Potential", "Bad Fit", "Qualified", "Customer"} <= set(
            await session.scalars(select(LeadStatus.label).where(LeadStatus.organization_id == org))
        )
        assert dict(
            (
                await session.execute(
                    select(CustomField.name, CustomField.type).where(CustomField.organization_id == org)
                )
            ).all()
        ) == {"Lead Source": "text", "Employees": "number", "Renewal Date": "date", "Industry": "choices"}
        assert {"Intro", "Follow-up"} <= set(
            await session.scalars(select(EmailTemplate.name).where(EmailTemplate.organization_id == org))
        )
        assert await count(Lead) == 300 == report.rows["leads"]
        assert await count(Contact) == report.rows["contacts"] > 300
        assert await count(LeadCustomValue) > 300
        # Leads a bulk email would skip or dedupe: no email at all, unsubscribed, shared addresses.
        assert await count(Lead, Lead.num_email_addresses == 0) > 10
        assert await count(ContactEmail, ContactEmail.is_unsubscribed) > 0
        shared = await session.scalar(
            select(func.count()).select_from(
                select(ContactEmail.email_normalized)
                .where(ContactEmail.organization_id == org)
                .group_by(ContactEmail.email_normalized)
                .having(func.count(func.distinct(ContactEmail.lead_id)) > 1)
                .subquery()
            )
        )
        assert shared > 0
        intro_id = await session.scalar(
            select(EmailTemplate.id).where(EmailTemplate.organization_id == org, EmailTemplate.name == "Intro")
        )
        assert await count(EmailActivity, EmailActivity.template_id == intro_id) > 30
        assert await count(Lead, Lead.last_email_opened_at.is_not(None)) > 10
        assert await count(Lead, Lead.created_at < datetime(2024, 6, 1, tzinfo=UTC)) > 30


async def test_the_same_seed_gives_the_same_crm(database):
    def content(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return [row[1:] for row in rows]  # everything but the ids

    first = await seed(database, leads=40, now=NOW, random_seed=7)
    second = await seed(database, leads=40, now=NOW, random_seed=7)
    assert first.rows == second.rows
    a = await _derived(database, first.organization_id)
    b = await _derived(database, second.organization_id)
    assert content(a) == content(b)


async def test_seeding_an_existing_organization_twice_adds_leads_not_duplicates(database):
    first = await seed(database, leads=10, now=NOW)
    await seed(database, leads=10, now=NOW, organization_id=first.organization_id, random_seed=1)
    async with database.session() as session:
        org = first.organization_id
        assert await session.scalar(select(func.count()).where(Lead.organization_id == org)) == 20
        labels = list(await session.scalars(select(LeadStatus.label).where(LeadStatus.organization_id == org)))
        assert len(labels) == len(set(labels))
