"""``/api/v1/contact/``: contacts of leads, each with ordered emails and phones."""

from __future__ import annotations

from fastapi import APIRouter, status

from bulkmail.query_api.contacts import service
from bulkmail.query_api.contacts.schemas import ContactCreate, ContactOut, ContactUpdate
from bulkmail.query_api.deps import AuthDep, SessionDep, SettingsDep
from bulkmail.query_api.leads.limits import LeadLimits
from bulkmail.query_api.leads.schemas import contact_out
from bulkmail.query_api.pagination import IdFilter, ListResponse, PageDep

router = APIRouter(prefix="/contact", tags=["contact"])


@router.get("/", response_model=ListResponse[ContactOut])
async def list_contacts(
    session: SessionDep, principal: AuthDep, page: PageDep, lead_id: IdFilter = None
) -> ListResponse[ContactOut]:
    rows, has_more = await service.list_page(session, principal.organization_id, lead_id, page)
    return ListResponse(data=[contact_out(c) for c in rows], has_more=has_more)


@router.get("/{contact_id}/", response_model=ContactOut)
async def get_contact(contact_id: int, session: SessionDep, principal: AuthDep) -> ContactOut:
    return contact_out(await service.get(session, principal.organization_id, contact_id))


@router.post("/", response_model=ContactOut, status_code=status.HTTP_201_CREATED)
async def create_contact(
    payload: ContactCreate, session: SessionDep, principal: AuthDep, settings: SettingsDep
) -> ContactOut:
    limits = LeadLimits.from_settings(settings)
    return contact_out(await service.create(session, principal.organization_id, payload, limits))


@router.put("/{contact_id}/", response_model=ContactOut)
async def update_contact(
    contact_id: int, payload: ContactUpdate, session: SessionDep, principal: AuthDep, settings: SettingsDep
) -> ContactOut:
    """A partial update: fields left out keep their values; ``emails``/``phones`` given replace the lists."""
    limits = LeadLimits.from_settings(settings)
    return contact_out(await service.update(session, principal.organization_id, contact_id, payload, limits))


@router.delete("/{contact_id}/")
async def delete_contact(contact_id: int, session: SessionDep, principal: AuthDep) -> dict[str, object]:
    await service.delete(session, principal.organization_id, contact_id)
    return {}
