"""``/api/v1/saved_search/``: Smart Views, named search queries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, StringConstraints, model_validator
from sqlalchemy import delete, select

from bulkmail.query_api.deps import AuthDep, SessionDep
from bulkmail.query_api.errors import BadRequest, Conflict
from bulkmail.query_api.ownership import ensure_name_free, get_owned
from bulkmail.query_api.pagination import ListResponse, PageDep, fetch_page
from bulkmail.query_api.saved_searches.usage import views_using
from bulkmail.query_api.search.structured import structured_query_text
from bulkmail.query_api.search.validation import validate_saved_search
from bulkmail.shared import bulk_emails
from bulkmail.shared.models import BulkEmail, SavedSearch

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


async def _query_text(
    session: SessionDep, principal: AuthDep, query: str | None, s_query: dict[str, Any] | None
) -> str:
    if s_query is not None:
        return await structured_query_text(session, principal.organization_id, s_query)
    return query or ""


async def _validate(session: SessionDep, principal: AuthDep, name: str, query: str) -> None:
    """A Smart View is saved only if its query compiles (QueryError → 400 with the position)."""
    await validate_saved_search(
        session, organization_id=principal.organization_id, user_id=principal.user_id, name=name, query=query
    )


@router.get("/", response_model=ListResponse[SavedSearchOut])
async def list_saved_searches(session: SessionDep, principal: AuthDep, page: PageDep) -> ListResponse[SavedSearchOut]:
    stmt = select(SavedSearch).where(SavedSearch.organization_id == principal.organization_id)
    rows, has_more = await fetch_page(session, stmt.order_by(SavedSearch.id), page)
    return ListResponse(data=[to_out(s) for s in rows], has_more=has_more)


@router.post("/", response_model=SavedSearchOut, status_code=status.HTTP_201_CREATED)
async def create_saved_search(payload: SavedSearchIn, session: SessionDep, principal: AuthDep) -> SavedSearchOut:
    await ensure_name_free(session, SavedSearch, principal.organization_id, payload.name, None, "A Smart View")
    query = await _query_text(session, principal, payload.query, payload.s_query)
    await _validate(session, principal, payload.name, query)
    row = SavedSearch(
        organization_id=principal.organization_id, name=payload.name, query=query, s_query=payload.s_query
    )
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return to_out(row)


@router.get("/{saved_search_id}/", response_model=SavedSearchOut)
async def get_saved_search(saved_search_id: int, session: SessionDep, principal: AuthDep) -> SavedSearchOut:
    return to_out(await get_owned(session, SavedSearch, saved_search_id, principal.organization_id, what="Smart View"))


@router.put("/{saved_search_id}/", response_model=SavedSearchOut)
async def update_saved_search(
    saved_search_id: int, payload: SavedSearchUpdate, session: SessionDep, principal: AuthDep
) -> SavedSearchOut:
    row = await get_owned(session, SavedSearch, saved_search_id, principal.organization_id, what="Smart View")
    if payload.name is not None:
        await ensure_name_free(session, SavedSearch, principal.organization_id, payload.name, row.id, "A Smart View")
        row.name = payload.name
    if payload.query is not None and payload.s_query is not None:
        raise BadRequest("Give either 'query' or 's_query', not both.", **{"field-errors": {"s_query": "not both"}})
    new_query = payload.query
    if payload.s_query is not None:
        new_query = await _query_text(session, principal, None, payload.s_query)
    if new_query is not None or payload.name is not None:
        await _validate(session, principal, payload.name or row.name, new_query or row.query)
    if new_query is not None:
        row.query = new_query
        row.s_query = payload.s_query  # a classic query replaces the structured form
    row.updated_at = datetime.now(UTC)
    await session.flush()
    return to_out(row)


@router.delete("/{saved_search_id}/")
async def delete_saved_search(saved_search_id: int, session: SessionDep, principal: AuthDep) -> dict[str, object]:
    """Refused (409) while another Smart View refers to it or an unfinished bulk email sends to it."""
    org = principal.organization_id
    row = await get_owned(session, SavedSearch, saved_search_id, org, what="Smart View")
    views = {
        name: query
        for name, query in await session.execute(
            select(SavedSearch.name, SavedSearch.query).where(SavedSearch.organization_id == org)
        )
    }
    users = await views_using(session, org, principal.user_id, views, view=row.name)
    sending = list(
        await session.scalars(
            select(BulkEmail.id)
            .where(BulkEmail.saved_search_id == row.id, BulkEmail.status.in_(bulk_emails.ACTIVE_STATUSES))
            .order_by(BulkEmail.id)
            .limit(10)
        )
    )
    if users or sending:
        uses = [f"Smart View {name!r}" for name in users] + [f"bulk email {i} (still sending)" for i in sending]
        raise Conflict(
            f"Smart View {row.name!r} is used by {', '.join(uses)}; change or finish those first.",
            used_by={"smart_views": users, "bulk_emails": sending},
        )
    await session.execute(delete(SavedSearch).where(SavedSearch.id == row.id))
    return {}
