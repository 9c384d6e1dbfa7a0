"""``/api/v1/status/lead/``: the organisation's lead statuses."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, StringConstraints
from sqlalchemy import delete, func, select, update

from bulkmail.query_api.deps import AuthDep, SessionDep
from bulkmail.query_api.errors import Conflict
from bulkmail.query_api.leads.repository import status_by_label
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.pagination import ListResponse
from bulkmail.shared.models import Lead, LeadStatus

router = APIRouter(prefix="/status/lead", tags=["status"])

Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class LeadStatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: Label


class LeadStatusOut(BaseModel):
    id: int
    label: str


@router.get("/", response_model=ListResponse[LeadStatusOut])
async def list_statuses(session: SessionDep, principal: AuthDep) -> ListResponse[LeadStatusOut]:
    rows = await session.scalars(
        select(LeadStatus).where(LeadStatus.organization_id == principal.organization_id).order_by(LeadStatus.position)
    )
    return ListResponse(data=[LeadStatusOut(id=s.id, label=s.label) for s in rows], has_more=False)


@router.post("/", response_model=LeadStatusOut, status_code=status.HTTP_201_CREATED)
async def create_status(payload: LeadStatusIn, session: SessionDep, principal: AuthDep) -> LeadStatusOut:
    if await status_by_label(session, principal.organization_id, payload.label):
        raise Conflict(f"A lead status labelled {payload.label!r} already exists.")
    position = await session.scalar(
        select(func.coalesce(func.max(LeadStatus.position), -1) + 1).where(
            LeadStatus.organization_id == principal.organization_id
        )
    )
    row = LeadStatus(organization_id=principal.organization_id, label=payload.label, position=position or 0)
    session.add(row)
    await session.flush()
    return LeadStatusOut(id=row.id, label=row.label)


@router.get("/{status_id}/", response_model=LeadStatusOut)
async def get_status(status_id: int, session: SessionDep, principal: AuthDep) -> LeadStatusOut:
    row = await get_owned(session, LeadStatus, status_id, principal.organization_id, what="lead status")
    return LeadStatusOut(id=row.id, label=row.label)


@router.put("/{status_id}/", response_model=LeadStatusOut)
async def rename_status(
    status_id: int, payload: LeadStatusIn, session: SessionDep, principal: AuthDep
) -> LeadStatusOut:
    row = await get_owned(session, LeadStatus, status_id, principal.organization_id, what="lead status")
    other = await status_by_label(session, principal.organization_id, payload.label)
    if other is not None and other.id != row.id:
        raise Conflict(f"A lead status labelled {payload.label!r} already exists.")
    row.label = payload.label
    return LeadStatusOut(id=row.id, label=row.label)


@router.delete("/{status_id}/")
async def delete_status(status_id: int, session: SessionDep, principal: AuthDep) -> dict[str, object]:
    row = await get_owned(session, LeadStatus, status_id, principal.organization_id, what="lead status")
    in_use = await session.scalar(select(func.count()).where(Lead.status_id == row.id))
    if in_use:
        raise Conflict(f"{in_use} leads have the status {row.label!r}; move them to another status first.")
    await session.execute(update(Lead).where(Lead.status_id == row.id).values(status_id=None))
    await session.execute(delete(LeadStatus).where(LeadStatus.id == row.id))
    return {}
