"""``/api/v1/lead/``: Close's lead resource."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from sqlalchemy import delete, select

from bulkmail.query_api.deps import AuthDep, SessionDep, SettingsDep
from bulkmail.query_api.errors import NotFound
from bulkmail.query_api.leads import repository, service
from bulkmail.query_api.leads.documents import JSONBytes, load_lead_documents
from bulkmail.query_api.leads.limits import LeadLimits
from bulkmail.query_api.leads.schemas import LeadIn, LeadList, LeadOut, LeadUpdate
from bulkmail.query_api.ownership import MAX_ID, get_owned
from bulkmail.query_api.pagination import PageDep, fetch_page
from bulkmail.query_api.search import compile_search, load_search_context
from bulkmail.query_api.search.paging import search_page
from bulkmail.shared.models import Lead

router = APIRouter(prefix="/lead", tags=["lead"])


# The read endpoints answer with the JSON of ``documents`` directly (the response models stay the
# documented contract): building LeadOut models for FastAPI to validate and convert again cost
# more than the queries (benchmarks/bench_api_requests.txt).
@router.get("/", response_model=LeadList)
async def list_leads(
    session: SessionDep, principal: AuthDep, page: PageDep, query: Annotated[str | None, Query()] = None
) -> JSONBytes:
    if query is None or not query.strip():
        stmt = select(Lead.id).where(Lead.organization_id == principal.organization_id).order_by(Lead.id)
        ids, has_more = await fetch_page(session, stmt, page)
        n_leads = await repository.count_leads(session, principal.organization_id)
        leads = await load_lead_documents(session, principal.organization_id, ids)
        return JSONBytes(
            {"data": leads, "has_more": has_more, "total_results": n_leads, "total_results_approximate": False}
        )
    # The search language: a bad query raises QueryError, answered 400 with its position.
    ctx = await load_search_context(
        session, organization_id=principal.organization_id, user_id=principal.user_id, timezone=principal.timezone
    )
    compiled = compile_search(query, ctx)
    # The total is exact when quick; past a budget, the planner's estimate, flagged (the search
    # box shows "~").
    found = await search_page(session, compiled, page.skip, page.limit)
    leads = await load_lead_documents(session, principal.organization_id, found.ids)
    return JSONBytes(
        {
            "data": leads,
            "has_more": found.has_more,
            "total_results": found.total.value,
            "total_results_approximate": found.total.approximate,
        }
    )


@router.post("/", response_model=LeadOut, status_code=status.HTTP_201_CREATED)
async def create_lead(payload: LeadIn, session: SessionDep, principal: AuthDep, settings: SettingsDep) -> LeadOut:
    return service.to_out(await service.create_lead(session, principal, payload, LeadLimits.from_settings(settings)))


@router.get("/{lead_id}/", response_model=LeadOut)
async def get_lead(lead_id: int, session: SessionDep, principal: AuthDep) -> JSONBytes:
    found = await load_lead_documents(session, principal.organization_id, [lead_id]) if 1 <= lead_id <= MAX_ID else []
    if not found:
        raise NotFound(f"No lead with id {lead_id}.")
    return JSONBytes(found[0])


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
