"""``/api/v1/saved_search/``: Smart Views, named search queries."""

from __future__ import annotations

from fastapi import APIRouter, status

from bulkmail.query_api.deps import AuthDep, SessionDep
from bulkmail.query_api.ownership import get_owned
from bulkmail.query_api.pagination import ListResponse, PageDep
from bulkmail.query_api.saved_searches import service
from bulkmail.query_api.saved_searches.schemas import SavedSearchIn, SavedSearchOut, SavedSearchUpdate, to_out
from bulkmail.shared.models import SavedSearch

router = APIRouter(prefix="/saved_search", tags=["saved_search"])


@router.get("/", response_model=ListResponse[SavedSearchOut])
async def list_saved_searches(session: SessionDep, principal: AuthDep, page: PageDep) -> ListResponse[SavedSearchOut]:
    rows, has_more = await service.list_page(session, principal.organization_id, page)
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
