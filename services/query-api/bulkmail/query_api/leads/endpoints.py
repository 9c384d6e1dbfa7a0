"""``/api/v1/lead/``: Close's lead resource."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from bulkmail.query_api.deps import AuthDep, KeptDep, SessionDep, SettingsDep
from bulkmail.query_api.leads import service
from bulkmail.query_api.leads.documents import JSONBytes
from bulkmail.query_api.leads.limits import LeadLimits
from bulkmail.query_api.leads.schemas import LeadIn, LeadList, LeadOut, LeadUpdate, to_out
from bulkmail.query_api.pagination import PageDep

router = APIRouter(prefix="/lead", tags=["lead"])


# The read endpoints answer with the JSON of ``documents`` directly (the response models stay the
# documented contract): building LeadOut models for FastAPI to validate and convert again cost
# more than the queries (benchmarks/bench_api_requests.txt).
@router.get("/", response_model=LeadList)
async def list_leads(
    session: SessionDep,
    principal: AuthDep,
    page: PageDep,
    kept: KeptDep,
    query: Annotated[str | None, Query()] = None,
) -> JSONBytes:
    """Every lead, or those the search language finds (a bad query is a 400 with its position)."""
    found = await service.list_page(session, principal, page, query, kept)
    return JSONBytes(
        {
            "data": found.documents,
            "has_more": found.has_more,
            "total_results": found.total,
            "total_results_approximate": found.total_approximate,
        }
    )


@router.post("/", response_model=LeadOut, status_code=status.HTTP_201_CREATED)
async def create_lead(payload: LeadIn, session: SessionDep, principal: AuthDep, settings: SettingsDep) -> LeadOut:
    return to_out(await service.create_lead(session, principal, payload, LeadLimits.from_settings(settings)))


@router.get("/{lead_id}/", response_model=LeadOut)
async def get_lead(lead_id: int, session: SessionDep, principal: AuthDep) -> JSONBytes:
    return JSONBytes(await service.get_document(session, principal.organization_id, lead_id))


@router.put("/{lead_id}/", response_model=LeadOut)
async def update_lead(
    lead_id: int, payload: LeadUpdate, session: SessionDep, principal: AuthDep, settings: SettingsDep
) -> LeadOut:
    lead = await service.get(session, principal.organization_id, lead_id, loaded=False)
    limits = LeadLimits.from_settings(settings)
    return to_out(await service.update_lead(session, principal, lead, payload, limits))


@router.delete("/{lead_id}/", status_code=status.HTTP_200_OK)
async def delete_lead(lead_id: int, session: SessionDep, principal: AuthDep) -> dict[str, object]:
    await service.delete_lead(session, principal.organization_id, lead_id)
    return {}
