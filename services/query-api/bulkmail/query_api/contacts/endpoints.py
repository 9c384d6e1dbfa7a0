"""``/api/v1/contact/``: contacts of leads, each with ordered emails and phones."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import ConfigDict
from sqlalchemy import delete, func, select
from sqlalchemy.orm import selectinload

from bulkmail.query_api.deps import AuthDep, SessionDep, SettingsDep
from bulkmail.query_api.leads.limits import LeadLimits, check_lead
from bulkmail.query_api.leads.schemas import ContactIn, ContactOut, ContactUpdate
from bulkmail.query_api.leads.service import contact_out, fill_contact
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.pagination import IdFilter, ListResponse, PageDep, fetch_page
from bulkmail.shared.counters import refresh_lead_counters
from bulkmail.shared.models import Contact, ContactEmail, ContactPhone, Lead

router = APIRouter(prefix="/contact", tags=["contact"])

_LOAD = (selectinload(Contact.emails), selectinload(Contact.phones))


class ContactCreate(ContactIn):
    model_config = ConfigDict(extra="forbid")
    lead_id: int


@router.get("/", response_model=ListResponse[ContactOut])
async def list_contacts(
    session: SessionDep, principal: AuthDep, page: PageDep, lead_id: IdFilter = None
) -> ListResponse[ContactOut]:
    stmt = select(Contact).where(Contact.organization_id == principal.organization_id).options(*_LOAD)
    if lead_id is not None:
        stmt = stmt.where(Contact.lead_id == lead_id)
    rows, has_more = await fetch_page(session, stmt.order_by(Contact.lead_id, Contact.position, Contact.id), page)
    return ListResponse(data=[contact_out(c) for c in rows], has_more=has_more)


@router.get("/{contact_id}/", response_model=ContactOut)
async def get_contact(contact_id: int, session: SessionDep, principal: AuthDep) -> ContactOut:
    return contact_out(await get_owned(session, Contact, contact_id, principal.organization_id, *_LOAD, what="contact"))


async def _check_caps(
    session: SessionDep,
    settings: SettingsDep,
    lead_id: int,
    contact: ContactIn,
    other_than: int | None = None,
    keep: tuple[int, int] = (0, 0),
) -> None:
    """The lead's caps with this contact as given (plus ``keep``: its emails and phones left as
    they are) and the lead's other contacts as they are."""

    def count(model: type[Contact] | type[ContactEmail] | type[ContactPhone]) -> Any:
        owner = model.id if model is Contact else model.contact_id  # type: ignore[union-attr]
        stmt = select(func.count()).select_from(model).where(model.lead_id == lead_id)
        return stmt if other_than is None else stmt.where(owner != other_than)

    check_lead(
        LeadLimits.from_settings(settings),
        [contact],
        other_contacts=int(await session.scalar(count(Contact)) or 0),
        other_emails=int(await session.scalar(count(ContactEmail)) or 0) + keep[0],
        other_phones=int(await session.scalar(count(ContactPhone)) or 0) + keep[1],
    )


@router.post("/", response_model=ContactOut, status_code=status.HTTP_201_CREATED)
async def create_contact(
    payload: ContactCreate, session: SessionDep, principal: AuthDep, settings: SettingsDep
) -> ContactOut:
    lead = await get_owned(session, Lead, payload.lead_id, principal.organization_id, what="lead")
    await _check_caps(session, settings, lead.id, payload)
    position = await session.scalar(
        select(func.coalesce(func.max(Contact.position), -1) + 1).where(Contact.lead_id == lead.id)
    )
    contact = Contact(organization_id=lead.organization_id, lead_id=lead.id, position=position or 0)
    fill_contact(contact, payload)
    session.add(contact)
    await session.flush()
    await refresh_lead_counters(session, [lead.id])
    return await _reload(session, principal.organization_id, contact.id)


@router.put("/{contact_id}/", response_model=ContactOut)
async def update_contact(
    contact_id: int, payload: ContactUpdate, session: SessionDep, principal: AuthDep, settings: SettingsDep
) -> ContactOut:
    """A partial update: fields left out keep their values; ``emails``/``phones`` given replace the lists."""
    contact = await get_owned(session, Contact, contact_id, principal.organization_id, *_LOAD, what="contact")
    if payload.emails is not None or payload.phones is not None:
        as_given = ContactIn(emails=payload.emails or [], phones=payload.phones or [])
        keep = (
            len(contact.emails) if payload.emails is None else 0,
            len(contact.phones) if payload.phones is None else 0,
        )
        await _check_caps(session, settings, contact.lead_id, as_given, other_than=contact.id, keep=keep)
    fill_contact(contact, payload)  # the old emails and phones replaced go as orphans
    await session.flush()
    await refresh_lead_counters(session, [contact.lead_id])
    return await _reload(session, principal.organization_id, contact.id)


@router.delete("/{contact_id}/")
async def delete_contact(contact_id: int, session: SessionDep, principal: AuthDep) -> dict[str, object]:
    contact = await get_owned(session, Contact, contact_id, principal.organization_id, what="contact")
    await session.execute(delete(Contact).where(Contact.id == contact.id))
    await refresh_lead_counters(session, [contact.lead_id])
    return {}


async def _reload(session: SessionDep, organization_id: int, contact_id: int) -> ContactOut:
    session.expunge_all()
    return contact_out(await get_owned(session, Contact, contact_id, organization_id, *_LOAD, what="contact"))
