from datetime import UTC, datetime

from sqlalchemy import func, select

from bulkmail.shared.bulk_load import (
    AddressIn,
    CallIn,
    ContactIn,
    CustomValueIn,
    EmailActivityIn,
    EmailIn,
    LeadIn,
    LeadLoader,
    PhoneIn,
)
from bulkmail.shared.db import Database
from bulkmail.shared.models import (
    Contact,
    ContactEmail,
    CustomField,
    CustomFieldType,
    Lead,
    LeadActivity,
    LeadCustomValue,
    Organization,
)

WHEN = datetime(2025, 5, 1, 12, tzinfo=UTC)


async def _org(database: Database, name: str = "Bulk load") -> int:
    async with database.session() as session:
        org = Organization(name=name)
        session.add(org)
        await session.flush()
        return org.id


def _lead(i: int) -> LeadIn:
    return LeadIn(
        name=f"Lead {i}",
        created_at=WHEN,
        url=f"https://lead{i}.example",
        contacts=[
            ContactIn(
                f"Jane {i}",
                "CEO",
                [EmailIn(f"Jane.{i}@Lead{i}.example"), EmailIn(f"j{i}@home.example", "home", True)],
                [PhoneIn("+15550100")],
            ),
            ContactIn(f"Bob {i}", "CTO"),
        ],
        addresses=[AddressIn("Berlin", "", "DE", "10115")],
        calls=[CallIn(WHEN, 60, "outbound", None)],
        emails=[EmailActivityIn(0, f"jane.{i}@lead{i}.example", "Hi", WHEN, date_opened=WHEN)],
    )


async def test_leads_land_with_their_children_and_counters_across_batches(database):
    org = await _org(database)
    async with database.engine.connect() as conn:
        loader = LeadLoader(conn, org, batch_size=7)
        ids = [await loader.add_lead(_lead(i)) for i in range(20)]
        await loader.flush()
        await conn.commit()
    assert ids == sorted(ids) and len(set(ids)) == 20
    assert loader.counts["leads"] == 20 and loader.counts["contact_emails"] == 40

    async with database.session() as session:
        lead = (await session.execute(select(Lead).where(Lead.id == ids[3]))).scalar_one()
        assert (lead.name, lead.num_contacts, lead.num_email_addresses, lead.num_phone_numbers) == (
            "Lead 3",
            2,
            2,
            1,
        )
        activity = await session.get(LeadActivity, ids[3])
        assert activity is not None and (activity.organization_id, activity.num_emails, activity.num_calls) == (
            org,
            1,
            1,
        )
        assert lead.last_called_at == lead.last_email_opened_at == activity.last_emailed_at == WHEN
        assert "jane 3" in lead.search_text and "berlin" in lead.search_text
        emails = (
            await session.execute(
                select(ContactEmail.email_normalized, ContactEmail.position, ContactEmail.is_unsubscribed)
                .where(ContactEmail.lead_id == ids[3])
                .order_by(ContactEmail.position)
            )
        ).all()
        assert [tuple(e) for e in emails] == [("jane.3@lead3.example", 0, False), ("j3@home.example", 1, True)]
        contacts = await session.scalars(
            select(Contact.name).where(Contact.lead_id == ids[3]).order_by(Contact.position)
        )
        assert list(contacts) == ["Jane 3", "Bob 3"]


async def test_a_rolled_back_load_leaves_nothing_behind(database):
    org = await _org(database)
    async with database.engine.connect() as conn:
        loader = LeadLoader(conn, org, batch_size=3)
        for i in range(10):
            await loader.add_lead(_lead(i))
        await loader.flush()
        await conn.rollback()
    async with database.session() as session:
        assert await session.scalar(select(func.count()).where(Lead.organization_id == org)) == 0
        assert await session.scalar(select(func.count()).where(Contact.organization_id == org)) == 0


async def test_loaded_ids_never_collide_with_ordinary_inserts(database):
    org = await _org(database)
    async with database.engine.connect() as conn:
        loader = LeadLoader(conn, org)
        loaded = [await loader.add_lead(_lead(i)) for i in range(5)]
        await loader.flush()
        await conn.commit()
    async with database.session() as session:
        lead = Lead(organization_id=org, name="By hand")
        session.add(lead)
        await session.flush()
        assert lead.id not in loaded


async def test_custom_dates_round_trip_as_utc(database):
    org = await _org(database)
    async with database.session() as session:
        field = CustomField(organization_id=org, name="Renewal", type=CustomFieldType.date)
        session.add(field)
        await session.flush()
        field_id = field.id
    async with database.engine.connect() as conn:
        loader = LeadLoader(conn, org)
        lead_id = await loader.add_lead(LeadIn("Dated", WHEN, custom=[CustomValueIn(field_id, value_date=WHEN)]))
        await loader.flush()
        await conn.commit()
    async with database.session() as session:
        value = await session.scalar(select(LeadCustomValue.value_date).where(LeadCustomValue.lead_id == lead_id))
        assert value == WHEN


async def test_a_loader_that_commits_between_batches_tolerates_writers_in_between(database):
    org = await _org(database)
    async with database.engine.connect() as conn:
        loader = LeadLoader(conn, org, batch_size=2)
        first = [await loader.add_lead(_lead(i)) for i in range(2)]  # the second add flushes
        await conn.commit()  # releases SQLite's write lock: someone else may insert now
        async with database.session() as session:
            other = Lead(organization_id=org, name="Meanwhile")
            session.add(other)
            await session.flush()
            other_id = other.id
        later = [await loader.add_lead(_lead(i)) for i in range(2, 4)]
        await conn.commit()
    assert other_id not in first + later
    assert len(set(first + later)) == 4


async def test_deferred_indexes_are_rebuilt_exactly_after_a_load(pg_settings):
    from sqlalchemy import text

    from bulkmail.shared.bulk_load import COLUMNS, deferred_indexes

    indexes = text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('leads', 'contact_emails')")
    # Statistics targets of index columns (migration 0011_search sets them on the name index).
    targets = text(
        "SELECT attrelid::regclass::text, attnum, attstattarget FROM pg_attribute"
        " WHERE attrelid IN (SELECT indexname::regclass FROM pg_indexes WHERE tablename = 'leads')"
        " AND attstattarget > 0"
    )
    database = Database(pg_settings)
    try:
        org = await _org(database)
        async with database.engine.connect() as conn:
            before = set((await conn.execute(indexes)).all())
            targets_before = set((await conn.execute(targets)).all())
            async with deferred_indexes(conn, COLUMNS):
                during = {name for name, _ in (await conn.execute(indexes)).all()}
                loader = LeadLoader(conn, org)
                for i in range(3):
                    await loader.add_lead(_lead(i))
                await loader.flush()
            after = set((await conn.execute(indexes)).all())
            targets_after = set((await conn.execute(targets)).all())
            await conn.rollback()
    finally:
        await database.dispose()
    assert "ix_leads_search_text_trgm" in {name for name, _ in before}
    assert during == {"pk_leads", "pk_contact_emails"}  # constraints stay
    assert after == before
    assert ("ix_leads_name_trgm", 1, 1000) in targets_before
    assert targets_after == targets_before
