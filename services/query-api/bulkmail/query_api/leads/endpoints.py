"""``/api/v1/lead/``: Close's lead resource."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from sqlalchemy import delete

from bulkmail.query_api.deps import AuthDep, SessionDep, SettingsDep
from bulkmail.query_api.leads import repository, service
from bulkmail.query_api.leads.limits import LeadLimits
from bulkmail.query_api.leads.schemas import LeadIn, LeadList, LeadOut, LeadUpdate
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.pagination import PageDep, fetch_page
from bulkmail.query_api.search import compile_search, load_search_context
from bulkmail.query_api.search.counting import count_matches
from bulkmail.query_api.search.paging import page_ids
from bulkmail.shared.models import Lead

router = APIRouter(prefix="/lead", tags=["lead"])


@router.get("/", response_model=LeadList)
async def list_leads(
    session: SessionDep, principal: AuthDep, page: PageDep, query: Annotated[str | None, Query()] = None
) -> LeadList:
    if query is None or not query.strip():
        stmt = repository.leads_of(principal.organization_id).order_by(Lead.id)
        leads, has_more = await fetch_page(session, stmt, page)
        n_leads = await repository.count_leads(session, principal.organization_id)
        return LeadList(data=[service.to_out(lead) for lead in leads], has_more=has_more, total_results=n_leads)
    # The search language: a bad query raises QueryError, answered 400 with its position.
    ctx = await load_search_context(session, organization_id=principal.organization_id, user_id=principal.user_id)
    compiled = compile_search(query, ctx)
    ids = await page_ids(session, compiled, page.skip, page.limit + 1)
    # Exact when quick; past a budget, the planner's estimate, flagged (the search box shows "~").
    total = await count_matches(session, compiled)
    leads = await repository.load_leads(session, principal.organization_id, ids[: page.limit])
    return LeadList(
        data=[service.to_out(lead) for lead in leads],
        has_more=len(ids) > page.limit,
        total_results=total.value,
        total_results_approximate=total.approximate,
    )


@router.post("/", response_model=LeadOut, status_code=status.HTTP_201_CREATED)
async def create_lead(payload: LeadIn, session: SessionDep, principal: AuthDep, settings: SettingsDep) -> LeadOut:
    return service.to_out(await service.create_lead(session, principal, payload, LeadLimits.from_settings(settings)))


@router.get("/{lead_id}/", response_model=LeadOut)
async def get_lead(lead_id: int, session: SessionDep, principal: AuthDep) -> LeadOut:
    lead = await get_owned(
        session, Lead, lead_id, principal.organization_id, *repository.LEAD_LOAD_OPTIONS, what="lead"
    )
    return service.to_out(lead)


@router.put("/{lead_id}/", response_model=LeadOut)
async def update_lead(
    lead_id: int, payload: LeadUpdate, session: SessionDep, principal: AuthDep, settings: SettingsDep
) -> LeadOut:
    lead = await get_owned(session, Lead, lead_id, principal.organization_id, what="lead")
    limits = LeadLimits.from_settings(settings)
    return service.to_out(await service.update_lead(session, principal, lead, payload, limits))


@router.delete("/{lead_id}/", status_code=status.HTTP_200_OK)
async def delete_lead(lead_id: int, session: SessionDep, principal: AuthDep) -> dict[str, object]:
    lead = await get_owned(session, Lead, lead_id, principal.organization_id, what="lead")
    await session.execute(delete(Lead).where(Lead.id == lead.id))
    return {}
