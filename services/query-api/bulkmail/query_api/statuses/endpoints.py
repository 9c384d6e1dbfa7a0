"""``/api/v1/status/lead/``: the organisation's lead statuses."""

from __future__ import annotations

from fastapi import APIRouter, status

from bulkmail.query_api.deps import AuthDep, SessionDep
from bulkmail.query_api.pagination import ListResponse
from bulkmail.query_api.statuses import service
from bulkmail.query_api.statuses.schemas import LeadStatusIn, LeadStatusOut, to_out

router = APIRouter(prefix="/status/lead", tags=["status"])


@router.get("/", response_model=ListResponse[LeadStatusOut])
async def list_statuses(session: SessionDep, principal: AuthDep) -> ListResponse[LeadStatusOut]:
    rows = await service.list_all(session, principal.organization_id)
    return ListResponse(data=[to_out(s) for s in rows], has_more=False)


@router.post("/", response_model=LeadStatusOut, status_code=status.HTTP_201_CREATED)
async def create_status(payload: LeadStatusIn, session: SessionDep, principal: AuthDep) -> LeadStatusOut:
    return to_out(await service.create(session, principal.organization_id, payload.label))


@router.get("/{status_id}/", response_model=LeadStatusOut)
async def get_status(status_id: int, session: SessionDep, principal: AuthDep) -> LeadStatusOut:
    return to_out(await service.get(session, principal.organization_id, status_id))


@router.put("/{status_id}/", response_model=LeadStatusOut)
async def rename_status(
    status_id: int, payload: LeadStatusIn, session: SessionDep, principal: AuthDep
) -> LeadStatusOut:
    return to_out(await service.rename(session, principal.organization_id, status_id, payload.label))


@router.delete("/{status_id}/")
async def delete_status(status_id: int, session: SessionDep, principal: AuthDep) -> dict[str, object]:
    await service.delete(session, principal.organization_id, status_id)
    return {}
