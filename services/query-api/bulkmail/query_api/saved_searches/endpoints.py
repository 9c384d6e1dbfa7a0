"""``/api/v1/saved_search/``: Smart Views, named search queries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, StringConstraints
from sqlalchemy import delete, select

from bulkmail.query_api.deps import AuthDep, SessionDep
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.pagination import ListResponse, PageDep, fetch_page
from bulkmail.query_api.saved_searches import service
from bulkmail.shared.models import SavedSearch

router = APIRouter(prefix="/saved_search", tags=["saved_search"])

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
QueryText = Annotated[str, StringConstraints(min_length=1, max_length=10_000)]


class SavedSearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name
    query: QueryText


class SavedSearchUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    query: QueryText | None = None


class SavedSearchOut(BaseModel):
    id: int
    name: str
    query: str
    date_created: datetime
    date_updated: datetime


def to_out(s: SavedSearch) -> SavedSearchOut:
    return SavedSearchOut(id=s.id, name=s.name, query=s.query, date_created=s.created_at, date_updated=s.updated_at)


@router.get("/", response_model=ListResponse[SavedSearchOut])
async def list_saved_searches(session: SessionDep, principal: AuthDep, page: PageDep) -> ListResponse[SavedSearchOut]:
    stmt = select(SavedSearch).where(SavedSearch.organization_id == principal.organization_id)
    rows, has_more = await fetch_page(session, stmt.order_by(SavedSearch.id), page)
    return ListResponse(data=[to_out(s) for s in rows], has_more=has_more)


@router.post("/", response_model=SavedSearchOut, status_code=status.HTTP_201_CREATED)
async def create_saved_search(payload: SavedSearchIn, session: SessionDep, principal: AuthDep) -> SavedSearchOut:
    return to_out(await service.create(session, principal, payload.name, payload.query))


@router.get("/{saved_search_id}/", response_model=SavedSearchOut)
async def get_saved_search(saved_search_id: int, session: SessionDep, principal: AuthDep) -> SavedSearchOut:
    return to_out(await get_owned(session, SavedSearch, saved_search_id, principal.organization_id, what="Smart View"))


@router.put("/{saved_search_id}/", response_model=SavedSearchOut)
async def update_saved_search(
    saved_search_id: int, payload: SavedSearchUpdate, session: SessionDep, principal: AuthDep
) -> SavedSearchOut:
    row = await get_owned(session, SavedSearch, saved_search_id, principal.organization_id, what="Smart View")
    return to_out(await service.update(session, principal, row, payload.name, payload.query))


@router.delete("/{saved_search_id}/")
async def delete_saved_search(saved_search_id: int, session: SessionDep, principal: AuthDep) -> dict[str, object]:
    row = await get_owned(session, SavedSearch, saved_search_id, principal.organization_id, what="Smart View")
    await session.execute(delete(SavedSearch).where(SavedSearch.id == row.id))
    return {}
