"""A synthetic sales CRM: leads, contacts, emails, activities, with a fixed random seed.

Used for the demo account (a few hundred leads), tests (tens) and benchmarks (a million). The
same seed and ``now`` give the same data. Rows go through ``bulkmail.shared.bulk_load``, which
also fills the leads' derived columns, so generation stays the bottleneck: names come from small
word lists and every random draw is a cheap ``random.Random`` call.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.shared import seed_data as data
from bulkmail.shared.bulk_load import (
    COLUMNS,
    AddressIn,
    CallIn,
    ContactIn,
    CustomValueIn,
    EmailActivityIn,
    EmailIn,
    LeadIn,
    LeadLoader,
    OpportunityIn,
    PhoneIn,
    TaskIn,
    deferred_indexes,
)
from bulkmail.shared.db import Database
from bulkmail.shared.models import (
    CustomField,
    CustomFieldType,
    EmailTemplate,
    Lead,
    LeadStatus,
    Organization,
    User,
)

__all__ = ["SeedReport", "seed"]

THREE_YEARS = 3 * 365 * 86_400.0


def _bag(weights: tuple[int, ...]) -> list[int]:
    """``rng.choice(_bag((60, 30, 10)))`` draws 0, 1 or 2 with those odds, 10× cheaper than choices()."""
    return [count for count, weight in enumerate(weights) for _ in range(weight)]


# How many of each thing a lead (or contact) gets.
_CONTACTS = _bag(data.CONTACT_WEIGHTS)
_OPPORTUNITIES = _bag(data.OPPORTUNITY_WEIGHTS)
_CALLS = _bag(data.CALL_WEIGHTS)
_ADDRESSES = _bag((20, 75, 5))
_EMAILS = _bag((15, 70, 15))  # per contact
_PHONES = _bag((30, 60, 10))  # per contact
_TASKS = _bag((60, 30, 10))


@dataclass
class SeedReport:
    organization_id: int
    leads: int
    rows: dict[str, int] = field(default_factory=dict)
    generate_seconds: float = 0.0
    load_seconds: float = 0.0  # COPY/INSERT, and rebuilding deferred indexes
    index_seconds: float = 0.0
    elapsed_seconds: float = 0.0


@dataclass
class _Org:
    """The ids generation needs: users, statuses (weighted), custom fields, templates."""

    id: int
    user_ids: list[int]
    status_ids: list[int]
    fields: dict[str, int]
    templates: dict[str, tuple[int, str]]  # name → (id, subject)


async def seed(
    database: Database,
    *,
    leads: int,
    organization_id: int | None = None,
    random_seed: int = 42,
    now: datetime | None = None,
    batch_size: int = 20_000,
    defer_indexes: bool | None = None,
) -> SeedReport:
    """Add ``leads`` synthetic leads (and the users, statuses, fields, templates they use).

    ``now`` defaults to the start of today (UTC), so a day's runs are identical; dates spread
    over the three years before it. Each batch is committed as it is written: an interrupted
    seed leaves whole leads behind, never half of one.

    ``defer_indexes`` (PostgreSQL): drop the secondary indexes, load, build them again, all in
    one transaction. Maintaining them row by row (the trigram GIN on ``search_text`` above all)
    triples the load time, but the dropped indexes lock the tables for the whole seed, so by
    default (None) this happens only for a big seed into an empty ``leads`` table.
    """
    started = time.perf_counter()
    now = now or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    async with database.session() as session:
        org = await _ensure_organization(session, organization_id)
    generator = _LeadGenerator(random.Random(random_seed), org, now)
    report = SeedReport(organization_id=org.id, leads=leads)

    async with database.engine.connect() as conn:
        postgres = conn.dialect.name == "postgresql"
        if defer_indexes is None:
            defer_indexes = postgres and leads >= 100_000 and await conn.scalar(select(Lead.id).limit(1)) is None
        loader = LeadLoader(conn, org.id, batch_size=batch_size, check_foreign_keys=False)
        if postgres and defer_indexes:
            async with deferred_indexes(conn, COLUMNS) as timing:
                for _ in range(leads):
                    await loader.add_lead(generator.lead())
                await loader.flush()
            report.index_seconds = timing.seconds
        else:
            for _ in range(leads):
                await loader.add_lead(generator.lead())
                if loader.pending_leads == 0:  # a batch was just written
                    await conn.commit()
            await loader.flush()
        if postgres:
            # Fresh statistics, so the first searches on the new rows get sane plans.
            for table in loader.counts:
                await conn.execute(text(f"ANALYZE {table}"))
        await conn.commit()

    report.rows = dict(loader.counts)
    report.load_seconds = loader.load_seconds + report.index_seconds
    report.elapsed_seconds = time.perf_counter() - started
    report.generate_seconds = report.elapsed_seconds - report.load_seconds
    return report


async def _ensure_organization(session: AsyncSession, organization_id: int | None) -> _Org:
    """Create (or find, so seeding an existing organisation twice works) the fixed objects."""
    if organization_id is None:
        organization = Organization(name=data.ORGANIZATION_NAME)
        session.add(organization)
        await session.flush()
        organization_id = organization.id

    async def get_or_create(
        model: type[User] | type[LeadStatus] | type[CustomField] | type[EmailTemplate],
        key: str,
        value: str,
        **extra: object,
    ) -> int:
        found = await session.scalar(
            select(model.id).where(
                model.organization_id == organization_id,
                getattr(model, key) == value,
            )
        )
        if found is not None:
            return int(found)
        row = model(organization_id=organization_id, **{key: value}, **extra)
        session.add(row)
        await session.flush()
        return int(row.id)

    user_ids = [
        await get_or_create(User, "email", f"{first.lower()}.{last.lower()}@{data.ORGANIZATION_DOMAIN}",
                            first_name=first, last_name=last)
        for first, last in data.USERS
    ]  # fmt: skip
    status_ids: list[int] = []
    for position, (label, weight) in enumerate(data.LEAD_STATUSES):
        status_id = await get_or_create(LeadStatus, "label", label, position=position)
        status_ids += [status_id] * weight
    fields = {
        name: await get_or_create(CustomField, "name", name, type=CustomFieldType(kind))
        for name, kind in data.CUSTOM_FIELDS
    }
    templates = {
        name: (await get_or_create(EmailTemplate, "name", name, subject=subject, body=body), subject)
        for name, subject, body in data.TEMPLATES
    }
    return _Org(organization_id, user_ids, status_ids, fields, templates)


class _LeadGenerator:
    """Draws one lead at a time; all randomness comes from one seeded ``random.Random``."""

    def __init__(self, rng: random.Random, org: _Org, now: datetime) -> None:
        self.rng = rng
        self.org = org
        self.now_ts = now.timestamp()
        self.n = 0
        self.recent_emails: list[str] = []  # for addresses shared across leads

    def _date(self, start_ts: float) -> datetime:
        return datetime.fromtimestamp(start_ts + self.rng.random() * (self.now_ts - start_ts), UTC)

    def lead(self) -> LeadIn:
        rng = self.rng
        org = self.org
        self.n += 1
        created_ts = self.now_ts - rng.random() * THREE_YEARS
        created_at = datetime.fromtimestamp(created_ts, UTC)
        company = f"{rng.choice(data.COMPANY_FIRST)} {rng.choice(data.COMPANY_SECOND)}"
        domain = f"{company.replace(' ', '').lower()}{self.n % 97 or ''}.{rng.choice(data.TLDS)}"
        kind = rng.choice(data.COMPANY_KIND)
        user_id = rng.choice(org.user_ids)

        contacts = [self._contact(domain) for _ in range(rng.choice(_CONTACTS))]
        emails = self._email_history(contacts, created_ts, user_id)
        opportunities = [
            OpportunityIn(
                status=rng.choice(data.OPPORTUNITY_STATUSES),
                value=Decimal(rng.randrange(5, 1000) * 100),
                user_id=user_id,
                created_at=self._date(created_ts),
            )
            for _ in range(rng.choice(_OPPORTUNITIES))
        ]
        calls = [
            CallIn(
                date=self._date(created_ts),
                duration=0 if rng.random() < 0.25 else rng.randrange(20, 1800),
                direction="outbound" if rng.random() < 0.8 else "inbound",
                user_id=user_id,
            )
            for _ in range(rng.choice(_CALLS))
        ]
        return LeadIn(
            name=f"{company} {kind}",
            created_at=created_at,
            description=rng.choice(data.DESCRIPTIONS),
            url=f"https://www.{domain}",
            status_id=rng.choice(org.status_ids),
            user_id=user_id,
            contacts=contacts,
            addresses=[
                AddressIn(*rng.choice(data.CITIES), address_1=f"{rng.randrange(1, 2000)} {rng.choice(data.STREETS)}")
                for _ in range(rng.choice(_ADDRESSES))
            ],
            custom=self._custom_values(created_ts),
            opportunities=opportunities,
            calls=calls,
            tasks=self._tasks(created_ts, user_id),
            emails=emails,
        )

    def _contact(self, domain: str) -> ContactIn:
        rng = self.rng
        first = rng.choice(data.FIRST_NAMES)
        last = rng.choice(data.LAST_NAMES)
        emails: list[EmailIn] = []
        for position in range(rng.choice(_EMAILS)):
            roll = rng.random()
            if roll < 0.02 and self.recent_emails:
                # The same person (or a shared inbox) on several leads: duplicate addresses.
                address = rng.choice(self.recent_emails)
            elif position == 0:
                address = f"{first.lower()}.{last.lower()}@{domain}"
            else:
                address = f"{first.lower()}{rng.randrange(10, 99)}@{rng.choice(data.FREE_MAIL)}"
            emails.append(EmailIn(address, "office" if position == 0 else "home", roll > 0.97))
            if roll > 0.995:
                self.recent_emails.append(address)
                del self.recent_emails[:-200]
        phones = [
            PhoneIn(f"+1{rng.randrange(2_000_000_000, 9_999_999_999)}", rng.choice(data.PHONE_TYPES))
            for _ in range(rng.choice(_PHONES))
        ]
        return ContactIn(f"{first} {last}", rng.choice(data.TITLES), emails, phones)

    def _custom_values(self, created_ts: float) -> list[CustomValueIn]:
        rng = self.rng
        fields = self.org.fields
        values: list[CustomValueIn] = []
        if rng.random() < 0.8:
            values.append(CustomValueIn(fields["Lead Source"], value_text=rng.choice(data.LEAD_SOURCES)))
        if rng.random() < 0.7:
            employees = rng.choice(data.EMPLOYEE_COUNTS) + rng.randrange(10)
            # value_text too, as the lead API stores it: the text form is what free-text search sees.
            values.append(CustomValueIn(fields["Employees"], str(employees), value_number=Decimal(employees)))
        if rng.random() < 0.4:
            renewal = datetime.fromtimestamp(created_ts, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            renewal += timedelta(days=rng.randrange(30, 4 * 365))
            values.append(CustomValueIn(fields["Renewal Date"], renewal.date().isoformat(), value_date=renewal))
        if rng.random() < 0.75:
            values.append(CustomValueIn(fields["Industry"], value_text=rng.choice(data.INDUSTRIES)))
        return values

    def _tasks(self, created_ts: float, user_id: int) -> list[TaskIn]:
        rng = self.rng
        tasks: list[TaskIn] = []
        for _ in range(rng.choice(_TASKS)):
            task_created = self._date(created_ts)
            due = task_created + timedelta(days=rng.randrange(1, 30))
            done = due if rng.random() < 0.6 and due.timestamp() < self.now_ts else None
            tasks.append(TaskIn(rng.choice(data.TASK_TEXTS), due, task_created, done, user_id))
        return tasks

    def _email_history(self, contacts: list[ContactIn], created_ts: float, user_id: int) -> list[EmailActivityIn]:
        """Some leads already got "Intro" (and maybe "Follow-up"); some opened it; a few replied."""
        rng = self.rng
        with_email = [(i, c.emails[0].email) for i, c in enumerate(contacts) if c.emails]
        if not with_email or rng.random() > 0.4:
            return []
        index, address = with_email[0]
        intro_id, intro_subject = self.org.templates["Intro"]
        sent = self._date(created_ts)
        history = [self._sent(index, address, intro_id, intro_subject, sent, user_id)]
        if rng.random() < 0.45:
            follow_id, follow_subject = self.org.templates["Follow-up"]
            later = self._date(sent.timestamp())
            history.append(self._sent(index, address, follow_id, follow_subject, later, user_id))
        if rng.random() < 0.1:
            reply = self._date(sent.timestamp())
            history.append(
                EmailActivityIn(index, address, f"Re: {intro_subject}", reply, direction="incoming", status="inbox")
            )
        return history

    def _sent(
        self, index: int, address: str, template_id: int, subject: str, sent: datetime, user_id: int
    ) -> EmailActivityIn:
        rng = self.rng
        opened = sent + timedelta(seconds=rng.randrange(60, 3 * 86_400)) if rng.random() < 0.35 else None
        if opened is not None and opened.timestamp() > self.now_ts:
            opened = None  # not opened yet
        return EmailActivityIn(
            index, address, subject, sent, opened, template_id, user_id,
            message_id=f"<seed-{self.org.id}-{self.n}-{template_id}@bulkmail.invalid>",
        )  # fmt: skip
