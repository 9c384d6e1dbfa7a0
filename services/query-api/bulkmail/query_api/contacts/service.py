"""Contacts of leads: created, changed and deleted within the lead's caps, the lead's counters kept."""

from __future__ import annotations

from sqlalchemy import delete as sql_delete
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.contacts import repository
from bulkmail.query_api.contacts.schemas import ContactCreate, ContactIn, ContactUpdate
from bulkmail.query_api.leads.limits import LeadLimits, check_lead
from bulkmail.query_api.leads.service import fill_contact
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.pagination import Page, fetch_page
from bulkmail.shared.counters import refresh_lead_counters
from bulkmail.shared.models import Contact, ContactEmail, ContactPhone, Lead


async def list_page(
    session: AsyncSession, organization_id: int, lead_id: int | None, page: Page
) -> tuple[list[Contact], bool]:
    return await fetch_page(session, repository.contacts_of(organization_id, lead_id), page)


async def get(session: AsyncSession, organization_id: int, contact_id: int) -> Contact:
    """The contact with its emails and phones (404 across the tenant wall)."""
    return await get_owned(
        session, Contact, contact_id, organization_id, *repository.CONTACT_LOAD_OPTIONS, what="contact"
    )


async def _check_caps(
    session: AsyncSession,
    limits: LeadLimits,
    lead_id: int,
    contact: ContactIn,
    other_than: int | None = None,
    keep: tuple[int, int] = (0, 0),
) -> None:
    """The lead's caps with this contact as given (plus ``keep``: its emails and phones left as
    they are) and the lead's other contacts as they are."""
    check_lead(
        limits,
        [contact],
        other_contacts=await repository.count_contacts(session, lead_id, other_than),
        other_emails=await repository.count_contact_items(session, ContactEmail, lead_id, other_than) + keep[0],
        other_phones=await repository.count_contact_items(session, ContactPhone, lead_id, other_than) + keep[1],
    )


async def create(session: AsyncSession, organization_id: int, payload: ContactCreate, limits: LeadLimits) -> Contact:
    lead = await get_owned(session, Lead, payload.lead_id, organization_id, what="lead")
    await _check_caps(session, limits, lead.id, payload)
    contact = Contact(
        organization_id=lead.organization_id, lead_id=lead.id, position=await repository.next_position(session, lead.id)
    )
    fill_contact(contact, payload)
    session.add(contact)
    await session.flush()
    await refresh_lead_counters(session, [lead.id])
    return await _reload(session, organization_id, contact.id)


async def update(
    session: AsyncSession, organization_id: int, contact_id: int, payload: ContactUpdate, limits: LeadLimits
) -> Contact:
    """A partial update: fields left out keep their values; ``emails``/``phones`` given replace the lists."""
    contact = await get(session, organization_id, contact_id)
    if payload.emails is not None or payload.phones is not None:
        as_given = ContactIn(emails=payload.emails or [], phones=payload.phones or [])
        keep = (
            len(contact.emails) if payload.emails is None else 0,
            len(contact.phones) if payload.phones is None else 0,
        )
        await _check_caps(session, limits, contact.lead_id, as_given, other_than=contact.id, keep=keep)
    fill_contact(contact, payload)  # the old emails and phones replaced go as orphans
    await session.flush()
    await refresh_lead_counters(session, [contact.lead_id])
    return await _reload(session, organization_id, contact.id)


async def delete(session: AsyncSession, organization_id: int, contact_id: int) -> None:
    contact = await get_owned(session, Contact, contact_id, organization_id, what="contact")
    await session.execute(sql_delete(Contact).where(Contact.id == contact.id))
    await refresh_lead_counters(session, [contact.lead_id])


async def _reload(session: AsyncSession, organization_id: int, contact_id: int) -> Contact:
    session.expunge_all()
    return await get(session, organization_id, contact_id)
