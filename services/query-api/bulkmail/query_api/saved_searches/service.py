"""Smart Views: a query is saved only if it compiles (QueryError → 400 with its position); Close's
structured ``s_query`` is saved translated to the classic language; one in use cannot be deleted."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete as sql_delete
from sqlalchemy.ext.asyncio import AsyncSession

from bulkmail.query_api.auth import Principal
from bulkmail.query_api.errors import BadRequest, Conflict
from bulkmail.query_api.ownership import ensure_name_free
from bulkmail.query_api.pagination import Page, fetch_page
from bulkmail.query_api.saved_searches import repository
from bulkmail.query_api.saved_searches.usage import views_using
from bulkmail.query_api.search.structured import structured_query_text
from bulkmail.query_api.search.validation import validate_saved_search
from bulkmail.shared.models import SavedSearch


async def list_page(session: AsyncSession, organization_id: int, page: Page) -> tuple[list[SavedSearch], bool]:
    return await fetch_page(session, repository.saved_searches_of(organization_id), page)


async def _validate(session: AsyncSession, principal: Principal, name: str, query: str) -> None:
    await validate_saved_search(
        session, organization_id=principal.organization_id, user_id=principal.user_id, name=name, query=query
    )


async def _query_text(
    session: AsyncSession, principal: Principal, query: str | None, s_query: dict[str, Any] | None
) -> str:
    if s_query is not None:
        return await structured_query_text(session, principal.organization_id, s_query)
    return query or ""


async def create(
    session: AsyncSession,
    principal: Principal,
    name: str,
    query: str | None,
    s_query: dict[str, Any] | None = None,
) -> SavedSearch:
    await ensure_name_free(session, SavedSearch, principal.organization_id, name, None, "A Smart View")
    text = await _query_text(session, principal, query, s_query)
    await _validate(session, principal, name, text)
    row = SavedSearch(organization_id=principal.organization_id, name=name, query=text, s_query=s_query)
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return row


async def update(
    session: AsyncSession,
    principal: Principal,
    row: SavedSearch,
    name: str | None,
    query: str | None,
    s_query: dict[str, Any] | None = None,
) -> SavedSearch:
    if name is not None:
        await ensure_name_free(session, SavedSearch, principal.organization_id, name, row.id, "A Smart View")
        row.name = name
    if query is not None and s_query is not None:
        raise BadRequest("Give either 'query' or 's_query', not both.", **{"field-errors": {"s_query": "not both"}})
    new_query = query
    if s_query is not None:
        new_query = await _query_text(session, principal, None, s_query)
    if new_query is not None or name is not None:
        await _validate(session, principal, name or row.name, new_query or row.query)
    if new_query is not None:
        row.query = new_query
        row.s_query = s_query  # a classic query replaces the structured form
    row.updated_at = datetime.now(UTC)
    await session.flush()
    return row


async def delete(session: AsyncSession, principal: Principal, row: SavedSearch) -> None:
    """Refused (409) while another Smart View refers to it or an unfinished bulk email sends to it."""
    org = principal.organization_id
    views = await repository.smart_view_queries(session, org)
    users = await views_using(session, org, principal.user_id, views, view=row.name)
    sending = await repository.bulk_emails_sending_to(session, row.id, limit=10)
    if users or sending:
        uses = [f"Smart View {name!r}" for name in users] + [f"bulk email {i} (still sending)" for i in sending]
        raise Conflict(
            f"Smart View {row.name!r} is used by {', '.join(uses)}; change or finish those first.",
            used_by={"smart_views": users, "bulk_emails": sending},
        )
    await session.execute(sql_delete(SavedSearch).where(SavedSearch.id == row.id))
