"""Lead import: every line checked first, then the leads written in short transactions.

Rules (the same as ``POST /api/v1/lead/``, so an imported lead and a created one look alike):

- A bad line refuses the whole import, and nothing is written: the upload is read twice, once
  to check every line (``LeadImportError`` names the line and the problem), then to write.
- The leads are written ``BULKMAIL_IMPORT_BATCH_LEADS`` at a time, each batch its own
  transaction, so no import holds SQLite's single write lock for more than a fraction of a second
  and other writers (the mailer, other requests) go on between batches. A crash midway keeps
  the batches written so far.
- The caps of ``bulkmail.query_api.leads.limits`` hold per line, the organisation's custom field
  cap counts the fields the import creates, and one import holds at most
  ``BULKMAIL_MAX_IMPORT_LEADS`` leads (so none runs for minutes).
- An unknown status label is refused (create the status first); labels match case-insensitively.
- An unknown custom field is created, its type inferred from the first value seen, as the lead
  API does; values are stored in the typed column and as text (what free-text search reads).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from bulkmail.query_api.errors import field_path
from bulkmail.query_api.imports.errors import LeadImportError
from bulkmail.query_api.imports.schemas import ImportedLead, ImportResult
from bulkmail.query_api.leads.limits import LeadLimits, lead_problem, new_fields_problem, number_problem
from bulkmail.shared import bulk_load
from bulkmail.shared.db import Database
from bulkmail.shared.models import CustomField, CustomFieldType, LeadStatus
from bulkmail.shared.settings import Settings

Records = Callable[[], AsyncIterator[tuple[int, Any]]]


@dataclass
class _Field:
    name: str
    type: CustomFieldType
    id: int | None = None  # None: created by this import, once every line has been checked


@dataclass
class _Rules:
    """What a line is checked against, and what the checked lines add up to."""

    statuses: dict[str, int]
    fields: dict[str, _Field]
    limits: LeadLimits
    max_leads: int
    existing_fields: int
    created: list[str]


async def import_leads(
    database: Database, settings: Settings, organization_id: int, user_id: int | None, records: Records
) -> ImportResult:
    """Check then load every ``(line number, lead object)`` that ``records()`` yields (read twice)."""
    async with database.session() as session:
        statuses = {
            label.lower(): status_id
            for status_id, label in await session.execute(
                select(LeadStatus.id, LeadStatus.label).where(LeadStatus.organization_id == organization_id)
            )
        }
        fields = {
            name: _Field(name, CustomFieldType(type_), id_)
            for id_, name, type_ in await session.execute(
                select(CustomField.id, CustomField.name, CustomField.type).where(
                    CustomField.organization_id == organization_id
                )
            )
        }
    rules = _Rules(statuses, fields, LeadLimits.from_settings(settings), settings.max_import_leads, len(fields), [])
    n_leads = 0
    async for line, obj in records():
        n_leads += 1
        if n_leads > rules.max_leads:
            raise LeadImportError(
                line, f"an import holds at most {rules.max_leads:,} leads (BULKMAIL_MAX_IMPORT_LEADS); split the file"
            )
        _checked(line, obj, rules)
    await _create_fields(database, organization_id, rules)
    return await _load(database, settings, organization_id, user_id, records, rules)


async def _create_fields(database: Database, organization_id: int, rules: _Rules) -> None:
    if not rules.created:
        return
    async with database.session() as session:
        for name in rules.created:
            field = rules.fields[name]
            row = CustomField(organization_id=organization_id, name=name, type=field.type)
            session.add(row)
            await session.flush()
            field.id = row.id


async def _load(
    database: Database, settings: Settings, organization_id: int, user_id: int | None, records: Records, rules: _Rules
) -> ImportResult:
    now = datetime.now(UTC)
    batch_size = settings.import_batch_leads
    async with database.engine.connect() as conn:
        loader = bulk_load.LeadLoader(conn, organization_id, batch_size=batch_size + 1)
        batch: list[bulk_load.LeadIn] = []

        async def write() -> None:
            # The batch is parsed and checked before the transaction starts: SQLite's write lock
            # is held only to number and write its rows (~50 ms for 500 leads), not while
            # Python reads the next lines, so other writers get in between batches.
            for lead in batch:
                await loader.add_lead(lead)
            await loader.flush()
            await conn.commit()
            batch.clear()

        async for line, obj in records():
            batch.append(_lead_in(_checked(line, obj, rules), line, rules, user_id, now))
            if len(batch) >= batch_size:
                await write()
        await write()
    counts = loader.counts
    return ImportResult(
        leads=counts["leads"],
        contacts=counts["contacts"],
        contact_emails=counts["contact_emails"],
        contact_phones=counts["contact_phones"],
        addresses=counts["addresses"],
        custom_fields_created=rules.created,
    )


def _checked(line: int, obj: Any, rules: _Rules) -> ImportedLead:
    """The line as a lead, or ``LeadImportError``; new custom fields are planned (typed), not created."""
    try:
        lead = ImportedLead.model_validate(obj)
    except ValidationError as exc:
        raise LeadImportError(line, _describe(exc)) from None
    if (problem := lead_problem(rules.limits, lead.contacts, lead.custom)) is not None:
        raise LeadImportError(line, f"{problem[0]}: {problem[1]}")
    if lead.status and lead.status.strip() and lead.status.strip().lower() not in rules.statuses:
        known = ", ".join(sorted(rules.statuses)) or "none yet"
        raise LeadImportError(line, f"unknown lead status {lead.status!r} (known: {known})")
    for name, value in lead.custom.items():
        if value is None or value == "":
            continue
        if name not in rules.fields:
            if (
                problem_text := new_fields_problem(rules.limits, rules.existing_fields + len(rules.created), 1)
            ) is not None:
                raise LeadImportError(line, f"custom: {problem_text}")
            rules.fields[name] = _Field(name, _infer_type(value))
            rules.created.append(name)
        _custom_value(rules.fields[name], value, line)
    return lead


def _lead_in(lead: ImportedLead, line: int, rules: _Rules, user_id: int | None, now: datetime) -> bulk_load.LeadIn:
    status_id = rules.statuses.get(lead.status.strip().lower()) if lead.status and lead.status.strip() else None
    return bulk_load.LeadIn(
        name=lead.name,
        created_at=now,
        description=lead.description,
        url=lead.url,
        status_id=status_id,
        user_id=user_id,
        contacts=[
            bulk_load.ContactIn(
                c.name,
                c.title,
                [bulk_load.EmailIn(e.email, e.type, e.is_unsubscribed) for e in c.emails],
                [bulk_load.PhoneIn(p.phone, p.type) for p in c.phones],
            )
            for c in lead.contacts
        ],
        addresses=[bulk_load.AddressIn(a.city, a.state, a.country, a.zipcode, a.address_1) for a in lead.addresses],
        custom=[
            _custom_value(rules.fields[name], value, line)
            for name, value in lead.custom.items()
            if value is not None and value != ""
        ],
    )


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = field_path(err["loc"])
        problems.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(problems)


# Type inference and textual forms mirror bulkmail.query_api.leads.service (POST /api/v1/lead/).
def _infer_type(value: object) -> CustomFieldType:
    if isinstance(value, bool):
        return CustomFieldType.text
    if isinstance(value, int | float | Decimal):
        return CustomFieldType.number
    if isinstance(value, date) or (isinstance(value, str) and _parse_date(value) is not None):
        return CustomFieldType.date
    return CustomFieldType.text


def _parse_date(value: str) -> datetime | None:
    if len(value) < 10:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _custom_value(field: _Field, value: object, line: int) -> bulk_load.CustomValueIn:
    """The typed value (checked in the first pass, when the field may not have its id yet)."""
    field_id = field.id or 0
    if field.type == CustomFieldType.number:
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise LeadImportError(line, f"custom field {field.name!r} holds numbers; {value!r} is not one") from None
        if (problem := number_problem(number)) is not None:
            raise LeadImportError(line, f"custom field {field.name!r}: {problem}")
        return bulk_load.CustomValueIn(field_id, str(value), value_number=number)
    if field.type == CustomFieldType.date:
        parsed = None
        if isinstance(value, datetime):
            parsed = value if value.tzinfo else value.replace(tzinfo=UTC)
        elif isinstance(value, date):
            parsed = datetime(value.year, value.month, value.day, tzinfo=UTC)
        elif isinstance(value, str):
            parsed = _parse_date(value)
        if parsed is None:
            raise LeadImportError(line, f"custom field {field.name!r} holds dates; {value!r} is not one (YYYY-MM-DD)")
        text = parsed.date().isoformat() if parsed.time() == datetime.min.time() else parsed.isoformat()
        return bulk_load.CustomValueIn(field_id, text, value_date=parsed)
    return bulk_load.CustomValueIn(field_id, str(value))
