"""Lead import: validate each lead object and stream it into the bulk loader, all in one transaction.

Rules (the same as ``POST /api/v1/lead/``, so an imported lead and a created one look alike):

- A bad line refuses the whole import: ``LeadImportError`` names the line and the problem, and
  the request's transaction (which holds every row loaded so far) is rolled back.
- An unknown status label is refused (create the status first); labels match case-insensitively.
- An unknown custom field is created, its type inferred from the first value seen, as the lead
  API does; values are stored in the typed column and as text (what free-text search reads).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.imports.errors import LeadImportError
from bulkmail.query_api.imports.schemas import ImportedLead, ImportResult
from bulkmail.shared import bulk_load
from bulkmail.shared.models import CustomField, CustomFieldType, LeadStatus

BATCH_SIZE = 2_000  # leads buffered per COPY: memory stays flat however long the upload


async def import_leads(
    session: AsyncSession,
    organization_id: int,
    user_id: int | None,
    records: AsyncIterator[tuple[int, Any]],
) -> ImportResult:
    """Load every ``(line number, lead object)`` into the organisation; the caller commits."""
    statuses = {
        label.lower(): status_id
        for status_id, label in await session.execute(
            select(LeadStatus.id, LeadStatus.label).where(LeadStatus.organization_id == organization_id)
        )
    }
    fields = {
        field.name: field
        for field in await session.scalars(select(CustomField).where(CustomField.organization_id == organization_id))
    }
    created_fields: list[str] = []
    loader = bulk_load.LeadLoader(await session.connection(), organization_id, batch_size=BATCH_SIZE)
    now = datetime.now(UTC)

    async for line, obj in records:
        try:
            lead = ImportedLead.model_validate(obj)
        except ValidationError as exc:
            raise LeadImportError(line, _describe(exc)) from None
        status_id = None
        if lead.status and lead.status.strip():
            status_id = statuses.get(lead.status.strip().lower())
            if status_id is None:
                known = ", ".join(sorted(statuses)) or "none yet"
                raise LeadImportError(line, f"unknown lead status {lead.status!r} (known: {known})")
        custom: list[bulk_load.CustomValueIn] = []
        for name, value in lead.custom.items():
            if value is None or value == "":
                continue
            field = fields.get(name)
            if field is None:
                field = CustomField(organization_id=organization_id, name=name, type=_infer_type(value))
                session.add(field)
                await session.flush()
                fields[name] = field
                created_fields.append(name)
            custom.append(_custom_value(field, value, line))
        await loader.add_lead(
            bulk_load.LeadIn(
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
                addresses=[
                    bulk_load.AddressIn(a.city, a.state, a.country, a.zipcode, a.address_1) for a in lead.addresses
                ],
                custom=custom,
            )
        )
    await loader.flush()
    counts = loader.counts
    return ImportResult(
        leads=counts["leads"],
        contacts=counts["contacts"],
        contact_emails=counts["contact_emails"],
        contact_phones=counts["contact_phones"],
        addresses=counts["addresses"],
        custom_fields_created=created_fields,
    )


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"])
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


def _custom_value(field: CustomField, value: object, line: int) -> bulk_load.CustomValueIn:
    if field.type == CustomFieldType.number:
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise LeadImportError(line, f"custom field {field.name!r} holds numbers; {value!r} is not one") from None
        return bulk_load.CustomValueIn(field.id, str(value), value_number=number)
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
        return bulk_load.CustomValueIn(field.id, text, value_date=parsed)
    return bulk_load.CustomValueIn(field.id, str(value))
