"""``/api/v1/saved_search/``: Smart Views, named search queries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, StringConstraints, model_validator
from sqlalchemy import select

from bulkmail.query_api.deps import AuthDep, SessionDep
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.pagination import ListResponse, PageDep, fetch_page
from bulkmail.query_api.saved_searches import service
from bulkmail.shared.models import SavedSearch

router = APIRouter(prefix="/saved_search", tags=["saved_search"])

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
QueryText = Annotated[str, StringConstraints(min_length=1, max_length=10_000)]


class SavedSearchIn(BaseModel):
    """The query in the classic language, or Close's structured ``s_query`` (saved translated)."""

    model_config = ConfigDict(extra="forbid")
    name: Name
    query: QueryText | None = None
    s_query: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_query(self) -> SavedSearchIn:
        if (self.query is None) == (self.s_query is None):
            raise ValueError("give exactly one of 'query' or 's_query'")
        return self


class SavedSearchUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name | None = None
    query: QueryText | None = None
    s_query: dict[str, Any] | None = None


class SavedSearchOut(BaseModel):
    id: int
    name: str
    query: str
    s_query: dict[str, Any] | None
    date_created: datetime
    date_updated: datetime


def to_out(s: SavedSearch) -> SavedSearchOut:
    return SavedSearchOut(
        id=s.id, name=s.name, query=s.query, s_query=s.s_query, date_created=s.created_at, date_updated=s.updated_at
    )


@router.get("/", response_model=ListResponse[SavedSearchOut])
async def list_saved_searches(session: SessionDep, principal: AuthDep, page: PageDep) -> ListResponse[SavedSearchOut]:
    stmt = select(SavedSearch).where(SavedSearch.organization_id == principal.organization_id)
    rows, has_more = await fetch_page(session, stmt.order_by(SavedSearch.id), page)
    return ListResponse(data=[to_out(s) for s in rows], has_more=has_more)


@router.post("/", response_model=SavedSearchOut, status_code=status.HTTP_201_CREATED)
async def create_saved_search(payload: SavedSearchIn, session: SessionDep, principal: AuthDep) -> SavedSearchOut:
    return to_out(await service.create(session, principal, payload.name, payload.query, payload.s_query))


@router.get("/{saved_search_id}/", response_model=SavedSearchOut)
async def get_saved_search(saved_search_id: int, session: SessionDep, principal: AuthDep) -> SavedSearchOut:
    return to_out(await get_owned(session, SavedSearch, saved_search_id, principal.organization_id, what="Smart View"))


@router.put("/{saved_search_id}/", response_model=SavedSearchOut)
async def update_saved_search(
    saved_search_id: int, payload: SavedSearchUpdate, session: SessionDep, principal: AuthDep
) -> SavedSearchOut:
    row = await get_owned(session, SavedSearch, saved_search_id, principal.organization_id, what="Smart View")
    return to_out(await service.update(session, principal, row, payload.name, payload.query, payload.s_query))


@router.delete("/{saved_search_id}/")
async def delete_saved_search(saved_search_id: int, session: SessionDep, principal: AuthDep) -> dict[str, object]:
    row = await get_owned(session, SavedSearch, saved_search_id, principal.organization_id, what="Smart View")
    await service.delete(session, principal, row)
    return {}
