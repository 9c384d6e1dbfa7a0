"""A small CRM crafted so that every clause of the search language changes the result.

Built straight from the models (plus ``refresh_lead_counters``), once per backend, in its own
organisation; a second organisation holds look-alike leads that no query may ever return.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bulkmail.query_api.search import CustomFieldRef, SearchContext, resolver_from
from bulkmail.shared.counters import normalize_email, refresh_lead_counters
from bulkmail.shared.db import Database
from bulkmail.shared.models import (
    Address,
    Call,
    Contact,
    ContactEmail,
    ContactPhone,
    CustomField,
    CustomFieldType,
    EmailActivity,
    EmailTemplate,
    Lead,
    LeadCustomValue,
    LeadStatus,
    Opportunity,
    OpportunityStatus,
    Organization,
    SavedSearch,
    Task,
    User,
)

# "Now" for every query in these tests: a Saturday noon, UTC.
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

SMART_VIEWS = {
    "Hot Leads": "status:potential has:email_addresses",
    "Hot And Called": 'in:"hot leads" has:calls',
    "Loop A": 'in:"Loop B"',
    "Loop B": 'name:x in:"loop a"',
    "Broken": "name:(",
}


@dataclass
class Dataset:
    organization_id: int
    other_organization_id: int
    me: int
    mary: int
    ids: dict[str, int]  # label → lead id
    custom_fields: dict[str, CustomFieldRef]
    statuses: dict[str, int]
    templates: dict[str, int]

    def label_of(self, lead_id: int) -> str:
        return {v: k for k, v in self.ids.items()}[lead_id]

    def context(self, dialect: str, **overrides: object) -> SearchContext:
        values: dict[str, object] = {
            "organization_id": self.organization_id,
            "user_id": self.me,
            "timezone": "UTC",
            "now": NOW,
            "dialect": dialect,
            "custom_fields": self.custom_fields,
            "saved_searches": resolver_from(SMART_VIEWS),
            "statuses": self.statuses,
            "templates": self.templates,
        }
        values.update(overrides)
        return SearchContext(**values)  # type: ignore[arg-type]


def ago(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


async def _build(database: Database) -> Dataset:
    async with database.session() as s:
        org, other = Organization(name="Search Co"), Organization(name="Other Co")
        s.add_all([org, other])
        await s.flush()
        me = User(organization_id=org.id, first_name="Justin", last_name="Case", email="justin@search.example")
        mary = User(organization_id=org.id, first_name="Mary", last_name="Major", email="mary@search.example")
        stranger = User(organization_id=other.id, first_name="Justin", last_name="Other", email="j@other.example")
        s.add_all([me, mary, stranger])
        statuses = {
            label: LeadStatus(organization_id=org.id, label=label)
            for label in ("Potential", "Bad Fit", "Qualified", "Trial Expired")
        }
        other_potential = LeadStatus(organization_id=other.id, label="Potential")
        s.add_all([*statuses.values(), other_potential])
        intro = EmailTemplate(organization_id=org.id, name="Intro")
        follow = EmailTemplate(organization_id=org.id, name="Follow Up")
        other_intro = EmailTemplate(organization_id=other.id, name="Intro")
        s.add_all([intro, follow, other_intro])
        fields = {
            "Lead Source": CustomField(organization_id=org.id, name="Lead Source", type=CustomFieldType.text),
            "Employees": CustomField(organization_id=org.id, name="Employees", type=CustomFieldType.number),
            "Renewal Date": CustomField(organization_id=org.id, name="Renewal Date", type=CustomFieldType.date),
            "Industry": CustomField(organization_id=org.id, name="Industry", type=CustomFieldType.text),
        }
        s.add_all(fields.values())
        s.add_all(SavedSearch(organization_id=org.id, name=name, query=query) for name, query in SMART_VIEWS.items())
        await s.flush()

        def lead(name: str, status: str | None, created: datetime, **kw: object) -> Lead:
            row = Lead(
                organization_id=org.id,
                name=name,
                status_id=statuses[status].id if status else None,
                created_at=created,
                updated_at=kw.pop("updated", created),
                created_by_id=kw.pop("created_by", me.id),
                **kw,
            )
            s.add(row)
            return row

        leads = {
            "acme": lead("Acme Corp", "Potential", datetime(2026, 11, 1, 15, tzinfo=UTC), url="https://acme.com"),
            "bruce": lead("Bruce Wayne", "Bad Fit", datetime(2026, 10, 1, tzinfo=UTC), created_by=mary.id),
            "globex": lead("Globex", "Potential", ago(hours=20), description="Yesterday's lead"),
            "initech": lead('Initech "The Best"', "Qualified", ago(hours=4), updated=ago(days=40)),
            "umbrella": lead("Umbrella", "Potential", datetime(2026, 9, 1, tzinfo=UTC)),
            "stark": lead("Stark Industries", "Trial Expired", datetime(2026, 6, 1, tzinfo=UTC)),
            "hooli": lead("Hooli", None, datetime(2025, 1, 1, tzinfo=UTC), description="newyorker magazine"),
        }
        other_lead = Lead(
            organization_id=other.id, name="Acme Corp", status_id=None, created_by_id=stranger.id, created_at=NOW
        )
        s.add(other_lead)
        await s.flush()
        L = {k: v.id for k, v in leads.items()}

        def contact(
            lead_key: str, name: str, title: str = "", emails: tuple[str, ...] = (), phones: tuple[str, ...] = ()
        ) -> Contact:
            c = Contact(organization_id=org.id, lead_id=L[lead_key], name=name, title=title)
            s.add(c)
            pending.append((c, lead_key, emails, phones))
            return c

        pending: list[tuple[Contact, str, tuple[str, ...], tuple[str, ...]]] = []
        contact("acme", "John Smith", "CEO", ("John.Smith@Acme.com",), ("+1 415-555-0100",))
        contact("bruce", "Bruce Wayne", "Owner", ("bruce@wayneenterprises.com",))
        contact("globex", "Jane Doe", "VP Sales", ("jane@example.com",), ("+44 20 7946 0000",))
        contact("umbrella", "Albert Wesker", "CEO")  # a CEO without an email
        contact("umbrella", "Alice Jones", "Engineer", ("alice@umbrella.example",), ("(212) 555-0199",))
        stark_tony = contact("stark", "Tony Stark", "Chief Executive", ("tony@stark.example",))
        await s.flush()
        for c, key, emails, phones in pending:
            for i, email in enumerate(emails):
                s.add(
                    ContactEmail(
                        organization_id=org.id,
                        contact_id=c.id,
                        lead_id=L[key],
                        position=i,
                        email=email,
                        email_normalized=normalize_email(email),
                    )
                )
            for i, phone in enumerate(phones):
                s.add(ContactPhone(organization_id=org.id, contact_id=c.id, lead_id=L[key], position=i, phone=phone))
        other_contact = Contact(organization_id=other.id, lead_id=other_lead.id, name="John Smith", title="CEO")
        s.add(other_contact)
        await s.flush()
        s.add(
            ContactEmail(
                organization_id=other.id,
                contact_id=other_contact.id,
                lead_id=other_lead.id,
                email="john@acme.com",
                email_normalized="john@acme.com",
            )
        )
        s.add_all(
            [
                Address(
                    organization_id=org.id,
                    lead_id=L["acme"],
                    city="New York",
                    state="NY",
                    country="US",
                    zipcode="10001",
                ),
                Address(organization_id=org.id, lead_id=L["acme"], city="Boston", country="US"),
                Address(
                    organization_id=org.id,
                    lead_id=L["stark"],
                    address_1="10880 Malibu Point",
                    city="San Francisco",
                    state="CA",
                    country="US",
                ),
                Address(organization_id=org.id, lead_id=L["globex"], city="York", country="UK"),
            ]
        )
        # Calls: bruce 2 days ago (long), globex 10 days ago (short), stark 40 days ago.
        s.add_all(
            [
                Call(organization_id=org.id, lead_id=L["bruce"], user_id=me.id, date=ago(days=2), duration=120),
                Call(organization_id=org.id, lead_id=L["globex"], user_id=mary.id, date=ago(days=10), duration=30),
                Call(
                    organization_id=org.id,
                    lead_id=L["stark"],
                    user_id=me.id,
                    date=datetime(2020, 1, 15, tzinfo=UTC),
                    duration=600,
                ),
                Call(organization_id=org.id, lead_id=L["stark"], user_id=me.id, date=ago(days=40), duration=5),
            ]
        )
        # Emails: acme and stark were sent Intro; globex got Follow Up; acme's was opened.
        s.add_all(
            [
                EmailActivity(
                    organization_id=org.id,
                    lead_id=L["acme"],
                    template_id=intro.id,
                    date_sent=ago(days=8),
                    date_opened=ago(days=7),
                    subject="Hello Acme",
                ),
                EmailActivity(
                    organization_id=org.id,
                    lead_id=L["stark"],
                    contact_id=stark_tony.id,
                    template_id=intro.id,
                    date_sent=ago(days=1),
                    subject="Hello Stark",
                ),
                EmailActivity(
                    organization_id=org.id,
                    lead_id=L["globex"],
                    template_id=follow.id,
                    date_sent=ago(days=3),
                    subject="Following up",
                ),
                EmailActivity(
                    organization_id=other.id, lead_id=other_lead.id, template_id=other_intro.id, date_sent=ago(days=1)
                ),
            ]
        )
        s.add_all(
            [
                Opportunity(
                    organization_id=org.id,
                    lead_id=L["initech"],
                    status=OpportunityStatus.won,
                    value=Decimal(5000),
                    user_id=me.id,
                ),
                Opportunity(
                    organization_id=org.id,
                    lead_id=L["umbrella"],
                    status=OpportunityStatus.lost,
                    value=Decimal(200),
                    user_id=mary.id,
                ),
                Opportunity(
                    organization_id=org.id,
                    lead_id=L["umbrella"],
                    status=OpportunityStatus.on_hold,
                    value=Decimal(1500),
                    user_id=mary.id,
                ),
            ]
        )
        s.add_all(
            [
                Task(
                    organization_id=org.id,
                    lead_id=L["umbrella"],
                    text="Call back about renewal",
                    assigned_to_id=me.id,
                    created_by_id=mary.id,
                    is_complete=False,
                    created_at=datetime(2016, 5, 1, 10, tzinfo=UTC),
                ),
                Task(
                    organization_id=org.id,
                    lead_id=L["hooli"],
                    text="DHELD follow-up",
                    assigned_to_id=mary.id,
                    created_by_id=me.id,
                    is_complete=True,
                    created_at=datetime(2016, 4, 1, tzinfo=UTC),
                    completed_at=datetime(2016, 5, 1, 9, tzinfo=UTC),
                ),
            ]
        )
        s.add_all(
            [
                LeadCustomValue(
                    organization_id=org.id, lead_id=L["acme"], field_id=fields["Lead Source"].id, value_text="Web Form"
                ),
                LeadCustomValue(
                    organization_id=org.id,
                    lead_id=L["globex"],
                    field_id=fields["Lead Source"].id,
                    value_text="Trade Show",
                ),
                LeadCustomValue(
                    organization_id=org.id,
                    lead_id=L["acme"],
                    field_id=fields["Employees"].id,
                    value_number=Decimal(250),
                ),
                LeadCustomValue(
                    organization_id=org.id,
                    lead_id=L["globex"],
                    field_id=fields["Employees"].id,
                    value_number=Decimal(40),
                ),
                LeadCustomValue(
                    organization_id=org.id,
                    lead_id=L["hooli"],
                    field_id=fields["Renewal Date"].id,
                    value_date=datetime(2026, 12, 1, tzinfo=UTC),
                ),
                LeadCustomValue(
                    organization_id=org.id, lead_id=L["stark"], field_id=fields["Industry"].id, value_text="Defense"
                ),
            ]
        )
        await s.flush()
        await refresh_lead_counters(s, [*L.values(), other_lead.id])
        refs = {f.name.lower(): CustomFieldRef(f.id, f.name, f.type) for f in fields.values()}
        status_ids = {label.lower(): row.id for label, row in statuses.items()}
        template_ids = {"intro": intro.id, "follow up": follow.id}
        return Dataset(org.id, other.id, me.id, mary.id, L, refs, status_ids, template_ids)


@pytest.fixture(scope="session")
async def dataset(database: Database) -> Dataset:
    return await _build(database)
