"""Creating, changing and showing leads with their contacts, addresses and custom fields."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.auth import Principal
from bulkmail.query_api.errors import BadRequest, NotFound
from bulkmail.query_api.leads import repository
from bulkmail.query_api.leads.documents import load_lead_documents
from bulkmail.query_api.leads.limits import LeadLimits, LimitExceeded, check_lead, new_fields_problem, number_problem
from bulkmail.query_api.leads.schemas import (
    AddressIn,
    ContactIn,
    ContactUpdate,
    CustomValue,
    EmailIn,
    LeadIn,
    LeadUpdate,
)
from bulkmail.query_api.ownership import MAX_ID, get_owned
from bulkmail.query_api.pagination import Page, fetch_page
from bulkmail.query_api.recent import Kept
from bulkmail.query_api.search import compile_search, context_for
from bulkmail.query_api.search.paging import KnownSearch, SearchPage, search_page
from bulkmail.shared.counters import normalize_email, refresh_lead_counters
from bulkmail.shared.models import (
    Address,
    Contact,
    ContactEmail,
    ContactPhone,
    CustomField,
    CustomFieldType,
    Lead,
    LeadCustomValue,
)


@dataclass(frozen=True)
class LeadPage:
    """A page of leads as the API shows them (``documents``), with the search's total."""

    documents: list[dict[str, Any]]
    has_more: bool
    total: int
    total_approximate: bool = False


async def list_page(
    session: AsyncSession, principal: Principal, page: Page, query: str | None, kept: Kept | None = None
) -> LeadPage:
    """A page of the organisation's leads, or of those ``query`` finds (QueryError when refused).

    ``kept``: what recent requests read (``query_api.recent``): catalogues, searches' totals.
    """
    org = principal.organization_id
    if query is None or not query.strip():
        ids, has_more = await fetch_page(
            session, select(Lead.id).where(Lead.organization_id == org).order_by(Lead.id), page
        )
        documents = await load_lead_documents(session, org, ids)
        return LeadPage(documents, has_more, await repository.count_leads(session, org))
    found = await find_leads(session, principal, query, page.skip, page.limit, kept)
    documents = await load_lead_documents(session, org, found.ids)
    return LeadPage(documents, found.has_more, found.total.value, found.total.approximate)


async def find_leads(
    session: AsyncSession, principal: Principal, query: str, skip: int, limit: int, kept: Kept | None = None
) -> SearchPage:
    """The ids of a page of what ``query`` finds, and its total (QueryError when refused).

    The total is exact when quick; past a budget, the planner's estimate, flagged (the search
    box shows "~"). ``kept``: what recent requests read (the catalogue, this search's total).
    """
    org = principal.organization_id
    compiled = compile_search(query, await context_for(session, principal, kept))
    key = (principal.user_id, principal.timezone, query)
    known = kept.counts.get(org, key) if kept is not None else None
    found = await search_page(session, compiled, skip, limit, known)
    if kept is not None and known is None:
        kept.counts.put(org, key, KnownSearch(found.total, found.matches_first))
    return found


async def get_document(session: AsyncSession, organization_id: int, lead_id: int) -> dict[str, Any]:
    """The lead as the API shows it (404 across the tenant wall)."""
    found = await load_lead_documents(session, organization_id, [lead_id]) if 1 <= lead_id <= MAX_ID else []
    if not found:
        raise NotFound(f"No lead with id {lead_id}.")
    return found[0]


async def get(session: AsyncSession, organization_id: int, lead_id: int, *, loaded: bool = True) -> Lead:
    """The lead (404 across the tenant wall), with everything the API shows unless ``loaded=False``."""
    options = repository.LEAD_LOAD_OPTIONS if loaded else ()
    return await get_owned(session, Lead, lead_id, organization_id, *options, what="lead")


async def delete_lead(session: AsyncSession, organization_id: int, lead_id: int) -> None:
    lead = await get(session, organization_id, lead_id, loaded=False)
    await session.execute(delete(Lead).where(Lead.id == lead.id))


async def create_lead(session: AsyncSession, principal: Principal, payload: LeadIn, limits: LeadLimits) -> Lead:
    check_lead(limits, payload.contacts, payload.custom)
    lead = Lead(
        organization_id=principal.organization_id,
        name=payload.name,
        description=payload.description,
        url=payload.url,
        created_by_id=principal.user_id,
        updated_by_id=principal.user_id,
    )
    lead.status_id = await _status_id(session, principal.organization_id, payload.status, payload.status_id)
    session.add(lead)
    await session.flush()
    _add_contacts(session, lead, payload.contacts)
    _add_addresses(session, lead, payload.addresses)
    await _set_custom(session, lead, payload.custom, limits)
    await session.flush()
    await refresh_lead_counters(session, [lead.id])
    return await reload(session, principal.organization_id, lead.id)


async def update_lead(
    session: AsyncSession, principal: Principal, lead: Lead, payload: LeadUpdate, limits: LeadLimits
) -> Lead:
    """Fields present are changed, the others kept; ``contacts``/``addresses`` given replace the lists."""
    check_lead(limits, payload.contacts or [], payload.custom or {})
    fields = payload.model_fields_set
    for name in ("name", "description", "url"):
        if name in fields and getattr(payload, name) is not None:
            setattr(lead, name, getattr(payload, name))
    if "status" in fields or "status_id" in fields:
        lead.status_id = await _status_id(session, principal.organization_id, payload.status, payload.status_id)
    if payload.contacts is not None:
        await session.execute(delete(Contact).where(Contact.lead_id == lead.id))
        _add_contacts(session, lead, payload.contacts)
    if payload.addresses is not None:
        await session.execute(delete(Address).where(Address.lead_id == lead.id))
        _add_addresses(session, lead, payload.addresses)
    if payload.custom is not None:
        await _set_custom(session, lead, payload.custom, limits)
    lead.updated_by_id = principal.user_id
    lead.updated_at = datetime.now(UTC)
    await session.flush()
    await refresh_lead_counters(session, [lead.id])
    return await reload(session, principal.organization_id, lead.id)


async def reload(session: AsyncSession, organization_id: int, lead_id: int) -> Lead:
    session.expunge_all()  # counters were updated in SQL; read them fresh
    (lead,) = await repository.load_leads(session, organization_id, [lead_id])
    return lead


async def _status_id(
    session: AsyncSession, organization_id: int, label: str | None, status_id: int | None = None
) -> int | None:
    """The status named by label (``status``) or by id (``status_id``, Close's recommended way)."""
    if status_id is not None:
        if label is not None and label.strip():
            raise BadRequest("Give either 'status' or 'status_id', not both.", field="status_id")
        if await repository.status_by_id(session, organization_id, status_id) is None:
            raise BadRequest(f"Unknown lead status id {status_id}. List them with GET /api/v1/status/lead/.")
        return status_id
    if label is None or not label.strip():
        return None
    status = await repository.status_by_label(session, organization_id, label)
    if status is None:
        known = ", ".join(await repository.status_labels(session, organization_id)) or "none yet"
        raise BadRequest(
            f"Unknown lead status {label!r}. Known statuses: {known}. Create it with POST /api/v1/status/lead/."
        )
    return status.id


def _add_contacts(session: AsyncSession, lead: Lead, contacts: list[ContactIn]) -> None:
    for position, c in enumerate(contacts):
        contact = Contact(organization_id=lead.organization_id, lead_id=lead.id, position=position)
        fill_contact(contact, c)
        session.add(contact)


def fill_contact(contact: Contact, payload: ContactIn | ContactUpdate) -> None:
    """Set the contact's fields the payload carries; emails or phones given replace the lists
    (the old rows go as orphans). A new contact's payload carries every field."""
    fields = payload.model_fields_set if isinstance(payload, ContactUpdate) else set(ContactIn.model_fields)
    if "name" in fields and payload.name is not None:
        contact.name = payload.name
    if "title" in fields and payload.title is not None:
        contact.title = payload.title
    if "emails" in fields and payload.emails is not None:
        _set_emails(contact, payload.emails)
    if "phones" in fields and payload.phones is not None:
        contact.phones = [
            ContactPhone(
                organization_id=contact.organization_id, lead_id=contact.lead_id, position=i, phone=p.phone, type=p.type
            )
            for i, p in enumerate(payload.phones)
        ]


def _set_emails(contact: Contact, emails: list[EmailIn]) -> None:
    contact.emails = [
        ContactEmail(
            organization_id=contact.organization_id,
            lead_id=contact.lead_id,
            position=i,
            email=e.email,
            email_normalized=normalize_email(e.email),
            type=e.type,
            is_unsubscribed=e.is_unsubscribed,
        )
        for i, e in enumerate(emails)
    ]


def _add_addresses(session: AsyncSession, lead: Lead, addresses: list[AddressIn]) -> None:
    for position, a in enumerate(addresses):
        session.add(Address(organization_id=lead.organization_id, lead_id=lead.id, position=position, **a.model_dump()))


async def _set_custom(session: AsyncSession, lead: Lead, custom: dict[str, CustomValue], limits: LeadLimits) -> None:
    """Typed custom values; a field used for the first time is created with the value's type."""
    if not custom:
        return
    fields = await repository.custom_fields_by_name(session, lead.organization_id)
    problem = new_fields_problem(limits, len(fields), sum(1 for name in custom if name not in fields))
    if problem is not None:
        raise LimitExceeded(f"custom: {problem}", field="custom")
    replaced = [f.id for name, f in fields.items() if name in custom]
    if replaced:
        await session.execute(
            delete(LeadCustomValue).where(LeadCustomValue.lead_id == lead.id, LeadCustomValue.field_id.in_(replaced))
        )
    for name, value in custom.items():
        field = fields.get(name)
        if field is None:
            field = CustomField(organization_id=lead.organization_id, name=name, type=_infer_type(value))
            session.add(field)
            await session.flush()
            fields[name] = field
        if value is None or value == "":
            continue
        session.add(_typed_value(lead, field, value))


def _infer_type(value: CustomValue) -> CustomFieldType:
    if isinstance(value, bool):
        return CustomFieldType.text
    if isinstance(value, int | float | Decimal):
        return CustomFieldType.number
    if isinstance(value, date | datetime) or (isinstance(value, str) and _parse_date(value) is not None):
        return CustomFieldType.date
    return CustomFieldType.text


def _parse_date(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if len(value) < 10:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _typed_value(lead: Lead, field: CustomField, value: CustomValue) -> LeadCustomValue:
    row = LeadCustomValue(organization_id=lead.organization_id, lead_id=lead.id, field_id=field.id)
    if field.type == CustomFieldType.number:
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise BadRequest(f"Custom field {field.name!r} holds numbers; {value!r} is not a number.") from None
        if (problem := number_problem(number)) is not None:
            raise BadRequest(f"Custom field {field.name!r}: {problem}.", field=f"custom.{field.name}")
        row.value_number = number
        row.value_text = str(value)
    elif field.type == CustomFieldType.date:
        parsed = value if isinstance(value, datetime) else None
        if isinstance(value, date) and not isinstance(value, datetime):
            parsed = datetime(value.year, value.month, value.day, tzinfo=UTC)
        elif isinstance(value, str):
            parsed = _parse_date(value)
        if parsed is None:
            raise BadRequest(f"Custom field {field.name!r} holds dates; {value!r} is not a date (use YYYY-MM-DD).")
        row.value_date = parsed
        row.value_text = parsed.date().isoformat() if parsed.time() == datetime.min.time() else parsed.isoformat()
    else:
        row.value_text = str(value)
    return row
