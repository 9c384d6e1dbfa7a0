"""``/api/v1/contact/``: contacts of leads, each with ordered emails and phones."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from pydantic import ConfigDict
from sqlalchemy import delete, func, select
from sqlalchemy.orm import selectinload

from bulkmail.query_api.deps import AuthDep, SessionDep
from bulkmail.query_api.leads.schemas import ContactIn, ContactOut
from bulkmail.query_api.leads.service import contact_out, fill_contact
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.pagination import ListResponse, PageDep, fetch_page
from bulkmail.shared.counters import refresh_lead_counters
from bulkmail.shared.models import Contact, Lead

router = APIRouter(prefix="/contact", tags=["contact"])

_LOAD = (selectinload(Contact.emails), selectinload(Contact.phones))


class ContactCreate(ContactIn):
    model_config = ConfigDict(extra="forbid")
    lead_id: int


@router.get("/", response_model=ListResponse[ContactOut])
async def list_contacts(
    session: SessionDep, principal: AuthDep, page: PageDep, lead_id: Annotated[int | None, Query()] = None
) -> ListResponse[ContactOut]:
    stmt = select(Contact).where(Contact.organization_id == principal.organization_id).options(*_LOAD)
    if lead_id is not None:
        stmt = stmt.where(Contact.lead_id == lead_id)
    rows, has_more = await fetch_page(session, stmt.order_by(Contact.lead_id, Contact.position, Contact.id), page)
    return ListResponse(data=[contact_out(c) for c in rows], has_more=has_more)


@router.get("/{contact_id}/", response_model=ContactOut)
async def get_contact(contact_id: int, session: SessionDep, principal: AuthDep) -> ContactOut:
    return contact_out(await get_owned(session, Contact, contact_id, principal.organization_id, *_LOAD, what="contact"))


@router.post("/", response_model=ContactOut, status_code=status.HTTP_201_CREATED)
async def create_contact(payload: ContactCreate, session: SessionDep, principal: AuthDep) -> ContactOut:
    lead = await get_owned(session, Lead, payload.lead_id, principal.organization_id, what="lead")
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
async def replace_contact(contact_id: int, payload: ContactIn, session: SessionDep, principal: AuthDep) -> ContactOut:
    contact = await get_owned(session, Contact, contact_id, principal.organization_id, *_LOAD, what="contact")
    fill_contact(contact, payload)  # the old emails and phones go as orphans
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
